"""LoRA adapters for one job: loaded into a loaded pipeline's transformer with peft, removed afterwards.

The pipeline outlives the job in the memory scheduler, so `adapters(pipeline, loras)` works like
runtime/step_cache.py: the body runs with the job's adapters at their weights, and on the way out
(success, failure or cancel) every peft layer is replaced by the layer it wrapped, so the next job
runs the model exactly as loaded (the same modules, the same pixels). A LoRA that does not fit is
refused before anything is injected, so a failed load leaves the model as it was.

Key layouts read (after the file, safetensors only, is read on the CPU):
- diffusers / peft: `[transformer.]<module>.lora_A.weight` / `.lora_B.weight` (`base_model.model.` and
  `diffusion_model.` prefixes too);
- kohya: `lora_unet_<module with _>.lora_down.weight` / `.lora_up.weight` / `.alpha`;
- what diffusers' own loaders convert for the model's pipeline (`lora_state_dict`: Lumina-Image 2.0's,
  Wan's and CogVideoX's original / ComfyUI layouts), applied first where the transformer is theirs.
An `alpha` scales the pair by alpha / rank (folded into lora_B). Every LoRA layer must name a linear
layer of the transformer with matching shapes; otherwise the LoRA is refused, naming which keys did
not fit and how many did.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import InvalidInput
from ..zoo.loras import LoraFile, short_hash

# The transformer class -> the diffusers pipeline whose `lora_state_dict` converts its LoRA layouts.
CONVERTERS = {"Lumina2Transformer2DModel": "Lumina2Pipeline", "WanTransformer3DModel": "WanPipeline",
              "CogVideoXTransformer3DModel": "CogVideoXPipeline"}
PREFIXES = ("transformer.", "base_model.model.", "diffusion_model.", "model.diffusion_model.")
KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_", "lora_te_")
# Placements whose hooks hold the weights elsewhere (meta tensors, offload groups): adapters cannot be injected.
NO_ADAPTERS = ("group_offload", "sequential_offload")


@dataclass(frozen=True)
class Applied:
    """One loaded LoRA: the job's pick, its file, its A1111 hash and how many layers it changes."""

    name: str
    weight: float
    hash: str
    layers: int


def _read(lora: LoraFile) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(lora.path), device="cpu")
    except Exception as err:  # a header that passed, tensors that do not read: cut short or corrupt
        raise InvalidInput(f"LoRA {lora.name!r}: {lora.path.name} is corrupt ({str(err)[:160]})") from None


def _config_alphas(lora: LoraFile, pairs: dict[str, tuple[Any, Any, float | None]]
                   ) -> dict[str, tuple[Any, Any, float | None]]:
    """`pairs` with the alpha of the peft config diffusers saves in the file's metadata
    (`lora_adapter_metadata`: lora_alpha, alpha_pattern) where a layer has no `.alpha` tensor of its own,
    so a LoRA trained with alpha != rank loads at alpha / rank, as diffusers loads it."""
    import json

    from safetensors import safe_open

    with safe_open(str(lora.path), framework="pt") as f:
        raw = (f.metadata() or {}).get("lora_adapter_metadata")
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        meta = {}
    if not isinstance(meta, dict):
        return pairs
    meta = {k.removeprefix("transformer."): v for k, v in meta.items()}  # a pipeline's save prefixes its model
    if meta.get("use_dora") or meta.get("use_rslora"):
        raise InvalidInput(f"LoRA {lora.name!r} is a DoRA / rsLoRA adapter; only plain LoRA layers are loaded")
    alpha, patterns = meta.get("lora_alpha"), meta.get("alpha_pattern") or {}
    if not isinstance(alpha, (int, float)) or not isinstance(patterns, dict):
        return pairs

    def alpha_of(base: str) -> float:  # peft's rule: a pattern matches the end of the module's name
        hit = next((v for k, v in patterns.items() if re.match(rf"(.*\.)?({k})$", base)), None)
        return float(hit if isinstance(hit, (int, float)) else alpha)

    return {base: (a, b, own if own is not None else alpha_of(base)) for base, (a, b, own) in pairs.items()}


def _convert(model: Any, state: dict[str, Any], name: str) -> dict[str, Any]:
    """`state` in the diffusers layout when diffusers' loader for this transformer knows its layout."""
    pipeline = CONVERTERS.get(type(model).__name__)
    if pipeline is None or not any(k.startswith(("diffusion_model.", "model.diffusion_model.", "lora_unet_"))
                                   for k in state):
        return state
    import diffusers

    try:
        return dict(getattr(diffusers, pipeline).lora_state_dict(dict(state)))
    except Exception as err:
        raise InvalidInput(f"LoRA {name!r}: diffusers' {pipeline} could not read its layout "
                           f"({str(err)[:160]})") from None


def _pairs(model: Any, state: dict[str, Any], name: str) -> dict[str, tuple[Any, Any, float | None]]:
    """module name -> (A, B, alpha) of every LoRA layer, by the model's own module names."""
    kohya: dict[str, str | None] = {}
    for module, _ in model.named_modules():
        if module:  # kohya's names are the module's with "_" for "."; two modules may give the same one
            stem = module.replace(".", "_")
            kohya[stem] = None if stem in kohya else module
    found: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        base, _, part = key.rpartition(".lora_")
        if part in ("A.weight", "down.weight"):
            slot = "A"
        elif part in ("B.weight", "up.weight"):
            slot = "B"
        elif key.endswith(".alpha"):
            base, slot = key.removesuffix(".alpha"), "alpha"
        elif key.endswith((".bias", ".diff", ".diff_b")):
            raise InvalidInput(f"LoRA {name!r}: {key[:80]!r} changes a bias or a whole weight (diff / diff_b); only "
                               "LoRA pairs (lora_A/lora_B, lora_down/lora_up) and their alpha are loaded")
        elif key.endswith(".dora_scale") or key.startswith("__"):
            raise InvalidInput(f"LoRA {name!r}: {key[:80]!r} is a DoRA / other adapter layer; only plain LoRA "
                               "layers (lora_A/lora_B or lora_down/lora_up) are loaded")
        else:
            raise InvalidInput(f"LoRA {name!r}: {key[:80]!r} is not a LoRA layer (lora_A/lora_B, lora_down/lora_up)")
        if base.startswith("text_encoder") or base.startswith("lora_te"):
            raise InvalidInput(f"LoRA {name!r} changes the text encoder ({key[:60]!r}); the studio loads LoRAs into "
                               "the transformer only")
        for prefix in PREFIXES:
            base = base.removeprefix(prefix)
        for prefix in KOHYA_PREFIXES:
            if base.startswith(prefix):
                stem = base.removeprefix(prefix)
                if stem in kohya and kohya[stem] is None:
                    raise InvalidInput(f"LoRA {name!r}: the kohya name {key[:80]!r} fits more than one layer of "
                                       f"{type(model).__name__}; save it in the diffusers layout (lora_A/lora_B)")
                base = kohya.get(stem) or stem
        found.setdefault(base, {})[slot] = tensor
    pairs = {}
    for base, parts in found.items():
        if "A" not in parts or "B" not in parts:
            raise InvalidInput(f"LoRA {name!r}: the layer {base[:80]!r} has only half of its pair (A and B, or "
                               "down and up): the file is incomplete")
        alpha = parts.get("alpha")
        pairs[base] = (parts["A"], parts["B"], float(alpha) if alpha is not None else None)
    if not pairs:
        raise InvalidInput(f"LoRA {name!r} holds no LoRA layers")
    return pairs


def _check_fit(model: Any, pairs: dict[str, tuple[Any, Any, float | None]], name: str) -> None:
    """InvalidInput naming the layers this model does not have, or whose shapes differ."""
    import torch

    modules = dict(model.named_modules())
    misfits: list[str] = []
    for base, (a, b, _) in pairs.items():
        layer = modules.get(base)
        if not isinstance(layer, torch.nn.Linear):
            misfits.append(f"{base} (no such linear layer)")
        elif a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or a.shape[1] != layer.in_features \
                or b.shape[0] != layer.out_features:
            misfits.append(f"{base} (shape {tuple(b.shape)}x{tuple(a.shape)} vs the layer's "
                           f"{layer.out_features}x{layer.in_features})")
    if misfits:
        fit = len(pairs) - len(misfits)
        shown = "; ".join(misfits[:3]) + (f"; and {len(misfits) - 3} more" if len(misfits) > 3 else "")
        raise InvalidInput(f"LoRA {name!r} does not fit {type(model).__name__}: {fit} of its {len(pairs)} layers "
                           f"match — is it for another model? Not matched: {shown}")


def _inject(model: Any, adapter: str, pairs: dict[str, tuple[Any, Any, float | None]], name: str) -> None:
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    ranks = {base: a.shape[0] for base, (a, _, _) in pairs.items()}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {re.escape(base): r for base, r in ranks.items() if r != rank}
    # The exact module names (a list would also match any module whose name ends the same way).
    targets = "(" + "|".join(re.escape(base) for base in sorted(pairs)) + ")"
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, rank_pattern=pattern,
                        alpha_pattern=dict(pattern), lora_dropout=0.0, init_lora_weights=False)
    with warnings.catch_warnings():  # "already found a peft_config": the job's second adapter, on purpose
        warnings.simplefilter("ignore", UserWarning)
        inject_adapter_in_model(config, model, adapter_name=adapter)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for base, (a, b, alpha) in pairs.items():
            layer = modules[base]
            if layer.lora_A[adapter].weight.shape != a.shape:  # peft's rank_pattern matches name suffixes
                raise InvalidInput(f"LoRA {name!r}: the layer {base[:80]!r} got rank "
                                   f"{layer.lora_A[adapter].weight.shape[0]}, not its {a.shape[0]}: mixed ranks "
                                   "whose layer names end alike cannot load")
            scale = (alpha / a.shape[0]) if alpha is not None else 1.0
            layer.lora_A[adapter].weight.copy_(a.float())
            layer.lora_B[adapter].weight.copy_(b.float() * scale)


def remove_adapters(model: Any) -> None:
    """Every peft layer of `model` replaced by the layer it wraps, and peft's config dropped."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in vars(model):
            delattr(model, attr)


def _activate(model: Any, weights: dict[str, float]) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(list(weights))
            for adapter, weight in weights.items():
                module.set_scale(adapter, weight)
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.requires_grad_(False)


@contextmanager
def adapters(pipeline: Any, loras: list[tuple[LoraFile, float]], placement: str = "full",
             record: dict[str, Any] | None = None) -> Iterator[list[Applied]]:
    """Run the body with `loras` (each a file and its weight) in the pipeline's transformer, then take
    them out again. `record` gets the job's `used["loras"]` entry."""
    if not loras:
        yield []
        return
    model = getattr(pipeline, "transformer", None)
    if model is None or not hasattr(model, "named_modules"):
        raise InvalidInput(f"{type(pipeline).__name__} has no transformer to load a LoRA into")
    if placement in NO_ADAPTERS:
        raise InvalidInput(f"LoRAs cannot be loaded under {placement} (its hooks hold the weights elsewhere): "
                           "give the studio more memory or set --placement model_offload")
    prepared = []
    for index, (lora, weight) in enumerate(loras):  # every file read and checked before any is injected
        pairs = _config_alphas(lora, _pairs(model, _convert(model, _read(lora), lora.name), lora.name))
        _check_fit(model, pairs, lora.name)
        prepared.append((f"studio_lora_{index}", lora, weight, pairs))
    grads = {id(p): p.requires_grad for p in model.parameters()}
    params = {id(p): p for p in model.parameters()}
    applied: list[Applied] = []
    try:
        for adapter, lora, weight, pairs in prepared:
            _inject(model, adapter, pairs, lora.name)
            applied.append(Applied(lora.name, weight, short_hash(lora.path), len(pairs)))
        _activate(model, {adapter: weight for adapter, _, weight, _ in prepared})
        if record is not None:
            record["loras"] = [{"name": a.name, "weight": a.weight, "hash": a.hash, "layers": a.layers}
                               for a in applied]
        yield applied
    finally:
        remove_adapters(model)
        for key, param in params.items():  # peft marks the base weights frozen: as they were
            param.requires_grad_(grads[key])


def infotext_hashes(recorded: list[dict[str, Any]]) -> str:
    """A1111's `Lora hashes` value from a job's `used["loras"]`: `name: hash, …` (a name's ':' and ','
    dropped, as A1111 does)."""
    return ", ".join(f"{a['name'].replace(':', '').replace(',', '')}: {a['hash']}" for a in recorded)
