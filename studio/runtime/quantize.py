"""Weight-only quantization of a pipeline's transformer (torchao), and what a job records about it.

Modes (Settings.quantization, else the card's `quantization`, else none):
- `int8`: torchao `Int8WeightOnlyConfig`, per-row int8 weights of every nn.Linear in the transformer,
  dequantized in the layer's matmul. Runs on any device, the CPU included. ~1/2 of bf16 (1 byte a
  weight plus one scale per output row; ~1/4 of float32).
- `fp8`: torchao `Float8WeightOnlyConfig` (float8_e4m3fn weights, per row). Its matmuls need a CUDA GPU
  with fp8 support (compute capability 8.9+: Ada, Hopper, Blackwell), so it is refused elsewhere. ~1/2 of bf16.
- `none`.

Diffusers cards are quantized *as they load*: diffusers' own `PipelineQuantizationConfig` with a
`TorchAoConfig` for the transformer, passed to `from_pretrained` (works offline with diffusers 0.42 and
torchao 0.18; each weight is quantized as it is read, so the full bf16 transformer never sits in RAM,
which is what lets a 14B load on a 24 GB box). A native model (Lumina-T2I's Flag-DiT) is quantized after
its family's loader with torchao's `quantize_` and the same config. Either way the result is a torchao
tensor subclass, whose real bytes `footprint.tensor_bytes` counts.

This is not the older `Settings.fp8` (layerwise casting: fp8 storage, bf16 compute, cards with `fp8_ok`);
when a quantization is on, layerwise casting is left off the transformer (the two cannot stack).

Which quantization a loaded pipeline carries is remembered per pipeline (`describe`) so the job records
it (`used["quantization"]`, the infotext's `Quantization:`).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from ..errors import InvalidInput
from ..settings import Settings, parse_quantization
from ..zoo.cards import ModelCard

log = logging.getLogger(__name__)

MODES = ("none", "int8", "fp8")

# Bytes per weight of each storage, and the ratio to bf16 a card's transformer estimate is scaled by.
# int8/fp8: 1 byte + a per-row scale (negligible for rows of thousands); GGUF Q8_0: blocks of 32 int8 and
# one f16 scale = 34 bytes / 32 weights = 8.5 bits; Q4_0: 16 bytes of nibbles + f16 scale = 18/32 = 4.5 bits.
BITS_PER_WEIGHT = {"bf16": 16.0, "none": 16.0, "int8": 8.0, "fp8": 8.0, "Q8_0": 8.5, "Q5_0": 5.5, "Q4_0": 4.5,
                   "Q6_K": 6.5625, "Q5_K": 5.5, "Q4_K": 4.5, "Q3_K": 3.4375, "Q2_K": 2.625, "F16": 16.0,
                   "BF16": 16.0, "F32": 32.0}

_described: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
_ATTRIBUTE = "_studio_quantization"  # on a pipeline that cannot be weakly referenced


def mode_for(card: ModelCard, settings: Settings) -> str:
    """The torchao quantization this card loads with: the setting's for this model, else its setting for
    every model, else (when that is "auto") the card's own."""
    every, per_model = parse_quantization(settings.quantization)
    mode = per_model.get(card.id, "auto")
    if mode == "auto":
        mode = every
    return mode if mode != "auto" else (card.quantization or "none")


def ratio_to_bf16(kind: str) -> float:
    """How much smaller than bf16 a transformer is under `kind` (a mode or a GGUF type name)."""
    return BITS_PER_WEIGHT.get(kind, 16.0) / 16.0


def estimated_memory_gb(card: ModelCard, kind: str) -> float:
    """The card's memory estimate with its transformer's share (`transformer_gb`, in bf16) scaled to `kind`.
    A card without `transformer_gb` keeps its estimate (a GGUF variant card writes its own)."""
    if not card.transformer_gb or kind in ("none", "bf16"):
        return card.memory_gb
    return max(card.memory_gb - card.transformer_gb * (1 - ratio_to_bf16(kind)), 0.01)


def estimate_gb(card: ModelCard, settings: Settings) -> float:
    """The card's memory estimate under these settings: a GGUF card's own (written for its file), else
    scaled for the torchao mode it loads with."""
    if card.transformer_gguf is not None:
        return card.memory_gb
    return estimated_memory_gb(card, mode_for(card, settings))


def check_device(mode: str, device: str) -> None:
    """Refuse a mode this device cannot compute in, saying what would work."""
    if mode != "fp8":
        return
    if not device.startswith("cuda"):
        raise InvalidInput(
            f"quantization fp8 computes with float8 matmuls, which need a CUDA GPU with fp8 support (compute "
            f"capability 8.9 or newer: RTX 40xx, L4, H100); this studio runs on {device}. Use quantization "
            "int8 (it runs on the CPU too) or none.")
    import torch

    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if (major, minor) < (8, 9):
        raise InvalidInput(
            f"quantization fp8 needs a GPU with fp8 support (compute capability 8.9 or newer); "
            f"{torch.cuda.get_device_name(torch.device(device))} has {major}.{minor}. Use quantization int8.")


def torchao_config(mode: str) -> Any:
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return Int8WeightOnlyConfig() if mode == "int8" else Float8WeightOnlyConfig()


def from_pretrained_kwargs(card: ModelCard, settings: Settings) -> dict[str, Any]:
    """What `from_pretrained` takes to quantize a diffusers card's transformer as it loads ({} for none,
    or when the transformer comes from a GGUF file, which is quantized already)."""
    mode = mode_for(card, settings)
    if mode == "none" or card.transformer_gguf is not None:
        return {}
    check_device(mode, settings.torch_device())
    from diffusers import PipelineQuantizationConfig, TorchAoConfig

    return {"quantization_config": PipelineQuantizationConfig(
        quant_mapping={"transformer": TorchAoConfig(torchao_config(mode))})}


def quantize_native(pipeline: Any, card: ModelCard, settings: Settings) -> None:
    """torchao's `quantize_` on a native pipeline's transformer, after its family loaded it."""
    mode = mode_for(card, settings)
    transformer = getattr(pipeline, "transformer", None)
    if mode == "none":
        return
    if not isinstance(transformer, torch_module()):  # LlamaGen's GPT, Infinity's: left as they are
        log.info("%s: no transformer component to quantize (%s applies to transformers only)", card.id, mode)
        return
    check_device(mode, settings.torch_device())
    from torchao.quantization import quantize_

    quantize_(transformer, torchao_config(mode))
    remember(pipeline, f"{mode} (torchao weight-only)")


def settle(pipeline: Any, card: ModelCard, settings: Settings) -> None:
    """After a diffusers load: remember what the transformer carries (for the job's record)."""
    if card.transformer_gguf is not None:
        return  # gguf_transformer remembers its own
    mode = mode_for(card, settings)
    transformer = getattr(pipeline, "transformer", None)
    if mode != "none" and isinstance(transformer, torch_module()) and _has_torchao_weights(transformer):
        remember(pipeline, f"{mode} (torchao weight-only)")
    elif mode != "none":
        log.info("%s: no transformer to quantize (%s applies to transformers only)", card.id, mode)


def torch_module() -> type:
    import torch

    return torch.nn.Module


def _has_torchao_weights(module: Any) -> bool:
    return any(type(p).__module__.startswith("torchao") for p in module.parameters())


def is_quantized(pipeline: Any) -> bool:
    return describe(pipeline) is not None


def remember(pipeline: Any, description: str) -> None:
    try:
        _described[pipeline] = description
    except TypeError:
        object.__setattr__(pipeline, _ATTRIBUTE, description)


def describe(pipeline: Any) -> str | None:
    """How the pipeline's transformer is quantized ("int8 (torchao weight-only)", "GGUF Q4_0 (file …)"),
    None when it is not."""
    try:
        found = _described.get(pipeline)
    except TypeError:
        found = None
    return found if found is not None else getattr(pipeline, _ATTRIBUTE, None)
