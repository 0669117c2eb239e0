"""Infinity (bitwise visual autoregressive, next-scale prediction), ported for inference.

`schedules` holds the scale schedules and aspect-ratio sizes (torch-free); `options` reads a card's
`engine:` section (torch-free); `model` is the transformer with its KV cache and star-style 2D
RoPE; `sampling` is the per-scale loop (CFG on bit logits, tau, top-k/top-p); `vae` the BSQ
decoder and its checkpoint reader; `pipeline` puts them together with flan-t5 and loads a card.
Imported piecemeal: reading cards needs only `schedules` and `options`.
"""
