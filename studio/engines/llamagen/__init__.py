"""LlamaGen (autoregressive image generation over VQ tokens), ported for inference.

`gpt` holds the class- and text-conditional GPT with its 2D RoPE and KV cache, and a loader for
the official checkpoint files; `sampling` draws image tokens from it (CFG, temperature, top-k,
top-p); `vq` decodes image tokens with the VQ-16 tokenizer, whose
architecture is transformers' JanusVQVAE (the official checkpoint's keys are mapped onto it);
`classes` names the 1000 ImageNet classes a class-conditional model takes; `options` reads a
card's description of its files; `pipeline` puts it together (flan-t5 captions, sampling, decoding)
and loads it from a card, which is how the Image task runs it.
"""

import importlib
from typing import Any

# Imported on first use: reading a model card needs only `options`, not torch or transformers.
_EXPORTS = {
    "gpt": ("GPT", "GPT_CONFIGS", "GPTConfig", "apply_rotary_emb", "causal_mask", "load_state_dict_from_file",
            "precompute_freqs_cis_2d"),
    "sampling": ("generate", "null_condition", "sample_logits", "top_k_top_p_filtering"),
    "vq": ("VQCheckpointError", "decode_tokens", "load_vq_decoder", "official_key_map", "tiny_vq_config",
           "vq16_config"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
