"""Code that neither diffusers nor transformers has: samplers and native model ports."""
