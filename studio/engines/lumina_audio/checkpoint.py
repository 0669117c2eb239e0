"""Reading Lumina-T2Audio / T2Music's PyTorch Lightning `.ckpt` files without running their pickle.

The released files (`audio_generation/324.ckpt`, `music_generation/119.ckpt`) are whole Lightning
checkpoints: `{"state_dict": ..., "epoch", "global_step", "optimizer_states", "hyper_parameters", ...}`.
Besides tensors they pickle numpy scalars (the step counters, the learning rates), which name three
globals: numpy's `multiarray.scalar` (`numpy.core` when written by numpy 1, `numpy._core` by numpy 2),
`numpy.dtype` (with numpy 2's `numpy.dtypes.*DType` classes) and `_codecs.encode` (protocol 2's way
of writing the scalar's bytes). The file is read with `torch.load(weights_only=True)` and exactly
those allow-listed, so a file naming any other global is refused before anything in it runs.

The state dict is then split by prefix, as `LatentDiffusion_audio` names its modules:
`model.diffusion_model.*` (FlagDiTv2), `first_stage_model.*` (the 1-D VAE; only `decoder.*` and
`post_quant_conv.*` are kept), `cond_stage_model.*` (the text encoders, see text.py) and the
`scale_factor` buffer (`scale_by_std: true`: the latent's 1/std, set on the first training batch).
"""

from __future__ import annotations

import _codecs
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ModelNotAvailable
from . import backbone, vae

LFS_POINTER = b"version https://git-lfs"
COND_PREFIX = "cond_stage_model."
SCALE_FACTOR = "scale_factor"


def _numpy_globals() -> list:
    """numpy's scalar/dtype reconstructors under every name a Lightning checkpoint may use."""
    from numpy._core import multiarray

    allowed: list = [np.dtype, _codecs.encode,
                     (multiarray.scalar, "numpy._core.multiarray.scalar"),
                     (multiarray.scalar, "numpy.core.multiarray.scalar")]  # written by numpy 1.x
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 reduces a dtype to its class, e.g. numpy.dtypes.Float64DType
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and n != "ObjectDType"]
    return allowed


def _redownload(title: str) -> str:
    return f"Remove {title} in the Models tab and download it again."


def safe_load(path: Path, title: str) -> Any:
    """torch.load(weights_only=True) with the numpy globals allowed; a missing file, a Git LFS
    pointer, a refused global or a damaged file each raise ModelNotAvailable saying which."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotAvailable(f"{path.name} is not in the model cache; download {title} first.")
    with open(path, "rb") as f:
        if f.read(len(LFS_POINTER)) == LFS_POINTER:
            raise ModelNotAvailable(f"{path.name} is a Git LFS pointer, not the file itself. {_redownload(title)}")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            try:  # a zip-format file is mapped, not read: 324.ckpt is 7.8 GB with its optimizer state
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # the legacy format
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = found.group(1) if found else "a Python object"
        raise ModelNotAvailable(
            f"{path.name} holds {what}, which is not allowed (only tensors, plain values and numpy scalars "
            f"are read), so it is not loaded for safety.") from None
    except Exception as err:  # truncated, empty, not a torch file
        raise ModelNotAvailable(f"cannot read {path.name} (damaged or incomplete download?): "
                                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}. "
                                f"{_redownload(title)}") from None


def load_lightning(path: Path, title: str) -> dict:
    """The checkpoint's top-level dict, read with weights_only=True and the numpy globals allowed."""
    raw = safe_load(path, title)
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), dict):
        keys = f" with {', '.join(map(str, list(raw)[:6]))}" if isinstance(raw, dict) else ""
        raise ModelNotAvailable(f"{path.name} is not a Lightning checkpoint: it has no state_dict "
                                f"(it holds a {type(raw).__name__}{keys}).")
    return raw


@dataclass
class LuminaCheckpoint:
    """A Lightning state dict split into the parts inference builds, prefixes removed."""

    backbone: dict[str, torch.Tensor]
    vae_decoder: dict[str, torch.Tensor]
    text: dict[str, torch.Tensor]
    scale_factor: float
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, global_step: for the model note
    unused: list[str] = field(default_factory=list)  # keys under no known prefix (e.g. model_ema.*)


def split_state_dict(state_dict: dict, name: str = "the checkpoint") -> LuminaCheckpoint:
    if SCALE_FACTOR not in state_dict:
        raise ModelNotAvailable(f"{name} has no scale_factor: not a Lumina-T2Audio/T2Music checkpoint")
    scale = state_dict[SCALE_FACTOR]
    scale = float(scale.reshape(-1)[0]) if isinstance(scale, torch.Tensor) and scale.numel() == 1 else scale
    if not isinstance(scale, float) or not scale > 0:
        raise ModelNotAvailable(f"{name}'s scale_factor is not a positive number ({scale!r})")
    dit = backbone.split_checkpoint(state_dict)
    decoder = vae.split_checkpoint(state_dict)
    text = {k[len(COND_PREFIX):]: v for k, v in state_dict.items() if k.startswith(COND_PREFIX)}
    for part, tensors in (("model.diffusion_model.* (the DiT)", dit),
                          ("first_stage_model.decoder.* (the VAE)", decoder)):
        if not tensors:
            raise ModelNotAvailable(f"{name} has no {part} weights")
    known = (backbone.CHECKPOINT_PREFIX, vae.CHECKPOINT_PREFIX, COND_PREFIX, SCALE_FACTOR)
    unused = sorted(k for k in state_dict if not k.startswith(known))
    return LuminaCheckpoint(backbone=dit, vae_decoder=decoder, text=text, scale_factor=scale, unused=unused)


def read_checkpoint(path: Path, title: str) -> LuminaCheckpoint:
    raw = load_lightning(path, title)
    ckpt = split_state_dict(raw["state_dict"], Path(path).name)
    ckpt.meta = {k: _plain(raw[k]) for k in ("epoch", "global_step") if k in raw}
    return ckpt


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _strict(model: torch.nn.Module, state: dict, what: str, dtype: torch.dtype) -> torch.nn.Module:
    try:
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise ModelNotAvailable(f"the checkpoint's {what} does not fit the model: "
                                f"{' '.join(line.strip() for line in lines[:3])[:400]}") from None
    return model.eval().requires_grad_(False)


def build_backbone(ckpt: LuminaCheckpoint, config: backbone.FlagDiTv2Config | None = None,
                   dtype: torch.dtype = torch.float32) -> backbone.FlagDiTv2:
    """The FlagDiTv2 (the released config unless told: the file does not record it), built on the
    meta device and given the checkpoint's tensors."""
    with torch.device("meta"):
        model = backbone.FlagDiTv2(config or backbone.FlagDiTv2Config())
    return _strict(model, ckpt.backbone, "DiT (model.diffusion_model.*)", dtype)


def build_vae_decoder(ckpt: LuminaCheckpoint, config: vae.VAEConfig | None = None,
                      dtype: torch.dtype = torch.float32) -> vae.MelVAEDecoder:
    with torch.device("meta"):
        model = vae.MelVAEDecoder(config or vae.VAEConfig())
    return _strict(model, ckpt.vae_decoder, "VAE decoder (first_stage_model.*)", dtype)
