"""The attention backend (`Settings.attention`) on every diffusers model of a pipeline, through
diffusers' attention dispatcher.

`sdpa` (the default; `native` is the same, by diffusers' name) leaves every model as it loads:
PyTorch's scaled_dot_product_attention, nothing set. `flash` (flash-attn 2) and `sage`
(SageAttention) are set with `ModelMixin.set_attention_backend` on each diffusers model component
of the pipeline (transformer, transformer_2, unet, vae, …) whose attention goes through the
dispatcher. In diffusers 0.42.1 that is the newer attention processors (Wan, Flux, Qwen-Image,
LTX, HunyuanVideo, …, any with an `_attention_backend`); the older ones (CogVideoX, Lumina-Image 2.0,
Lumina-Next, Stable Audio, the UNets' AttnProcessor2_0) call PyTorch's SDPA themselves, so they
keep it: the loader logs which components took the backend and which did not.

A backend that cannot run here (flash or sage on the CPU, or its package not installed) is refused
with what to install, before any model is touched.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from ..errors import InvalidInput

log = logging.getLogger(__name__)

SDPA = ("sdpa", "native")
# The studio's name -> (diffusers' backend name, the package it needs, how to install it).
KERNELS: dict[str, tuple[str, str, str]] = {
    "flash": ("flash", "flash_attn", "pip install -e '.[flash]' (flash-attn 2)"),
    "sage": ("sage", "sageattention", "pip install sageattention"),
}
BACKENDS = (*SDPA, *KERNELS)


def check_backend(name: str, device: str) -> None:
    """InvalidInput when backend `name` cannot run on `device` here, naming what to install."""
    if name in SDPA:
        return
    if name not in KERNELS:
        raise InvalidInput(f"attention must be one of {', '.join(BACKENDS)}, got {name!r}")
    _, package, install = KERNELS[name]
    if not device.startswith("cuda"):
        raise InvalidInput(f"attention {name!r} needs a CUDA GPU (the device here is {device}) and the {package} "
                           f"package ({install}); use 'sdpa'")
    if importlib.util.find_spec(package) is None:
        raise InvalidInput(f"attention {name!r} needs the {package} package, which is not installed: "
                           f"{install}; or use 'sdpa'")


def takes_backend(model: Any) -> bool:
    """Whether a diffusers model's attention goes through the dispatcher (a processor with a backend slot)."""
    return any(hasattr(getattr(m, "processor", None), "_attention_backend") for m in model.modules())


def diffusers_models(pipeline: Any) -> dict[str, Any]:
    """The pipeline's diffusers model components by name (not its text encoders, tokenizers, schedulers)."""
    from diffusers import ModelMixin

    components = getattr(pipeline, "components", None) or {}
    return {name: c for name, c in components.items() if isinstance(c, ModelMixin)}


def apply_attention_backend(pipeline: Any, name: str, device: str) -> list[str]:
    """Set backend `name` on every diffusers model of the pipeline that takes one; the names of those
    that did. `sdpa` sets nothing (bit-identical to not calling this)."""
    check_backend(name, device)
    if name in SDPA:
        return []
    backend = KERNELS[name][0]
    models = diffusers_models(pipeline)
    taken = [part for part, model in models.items() if takes_backend(model)]
    for part in taken:
        models[part].set_attention_backend(backend)
    kept = sorted(set(models) - set(taken))
    if kept:
        log.info("attention %s: %s keep PyTorch SDPA (their diffusers attention processors do not go through "
                 "the dispatcher)", name, ", ".join(f"{p} ({type(models[p]).__name__})" for p in kept))
    return taken
