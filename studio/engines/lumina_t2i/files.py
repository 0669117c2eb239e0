"""Reading Lumina-T2I's files: `model_args.pth`, the Flag-DiT safetensors, LLaMA and the SDXL VAE.

`model_args.pth` is the training run's arguments pickled as a `types.SimpleNamespace`. It is read
with torch.load(weights_only=True) and that one class allow-listed, so a file holding anything else
is refused, never unpickled. (A Git LFS pointer in its place, Lumina-T2X#64/#93, is named as such.)
The Flag-DiT is built on the meta device and its tensors assigned one by one from the safetensors
file, each cast to the run's dtype as it is read: the 20 GB float32 file never sits in RAM whole.
"""

from __future__ import annotations

import pickle
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ModelNotAvailable
from .model import CONFIGS, FlagDiT, FlagDiTConfig

# The VAEs the reference knows (demo.py): only SDXL's was used for the released model.
VAE_FACTORS = {"sdxl": 0.13025}
_LFS_POINTER = b"version https://git-lfs"


@dataclass(frozen=True)
class TrainArgs:
    """What inference needs of `model_args.pth`."""

    model: str  # a CONFIGS name
    qk_norm: bool
    image_size: int  # the native size: the reference of NTK scaling and proportional attention
    vae: str


def _redownload(title: str) -> str:
    return f"Remove {title} in the Models tab and download it again."


def read_model_args(path: Path, title: str) -> TrainArgs:
    if not path.is_file():
        raise ModelNotAvailable(f"{path.name} is not in the model cache; download {title} first.")
    with open(path, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise ModelNotAvailable(f"{path.name} is a Git LFS pointer, not the file itself. {_redownload(title)}")
    try:
        with torch.serialization.safe_globals([types.SimpleNamespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelNotAvailable(f"{path.name} holds Python objects besides the training arguments and is not loaded "
                                f"for safety (only a SimpleNamespace is allowed): {err}") from None
    except Exception as err:  # truncated, empty, not a torch file
        raise ModelNotAvailable(f"cannot read {path.name} (damaged or incomplete download?): {err}. "
                                f"{_redownload(title)}") from None
    if not isinstance(raw, types.SimpleNamespace):
        raise ModelNotAvailable(f"{path.name} should hold the training arguments (a SimpleNamespace), "
                                f"not a {type(raw).__name__}")
    fields = vars(raw)
    model, vae = fields.get("model"), fields.get("vae", "sdxl")
    image_size, qk_norm = fields.get("image_size"), fields.get("qk_norm", False)
    if model not in CONFIGS:
        raise ModelNotAvailable(f"{path.name} names the model {model!r}; the studio's Flag-DiT knows "
                                f"{', '.join(CONFIGS)}")
    if vae not in VAE_FACTORS:
        raise ModelNotAvailable(f"{path.name} says the model was trained with the {vae!r} VAE; Lumina-T2I's card "
                                "loads the SDXL VAE")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 64 <= image_size <= 4096:
        raise ModelNotAvailable(f"{path.name} has no usable image_size ({image_size!r})")
    return TrainArgs(model=model, qk_norm=bool(qk_norm), image_size=image_size, vae=vae)


def _open(path: Path, title: str) -> Any:
    from safetensors import safe_open

    if not path.is_file():
        raise ModelNotAvailable(f"{path.name} is not in the model cache; download {title} first.")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as err:  # a bad or cut header: safetensors says it in its own words
        raise ModelNotAvailable(f"cannot read {path.name} (damaged or incomplete download?): {err}. "
                                f"{_redownload(title)}") from None


def load_transformer(path: Path, config: FlagDiTConfig, dtype: torch.dtype, title: str) -> FlagDiT:
    """The Flag-DiT of `config` with the file's weights, in `dtype`; refused with what is wrong."""
    with torch.device("meta"):
        model = FlagDiT(config)
    wanted = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    with _open(path, title) as f:
        keys = set(f.keys())
        if "x_embedder.weight" not in keys:
            held = ", ".join(sorted(keys)[:4]) or "nothing"
            raise ModelNotAvailable(f"{path.name} is not a Lumina-T2I Flag-DiT checkpoint: it holds {held}…")
        missing, unexpected = sorted(set(wanted) - keys), sorted(keys - set(wanted))
        if missing or unexpected:
            listed = lambda names: ", ".join(names[:3]) or "nothing"  # noqa: E731
            raise ModelNotAvailable(
                f"{path.name} does not fit the {config.n_layers}-layer, {config.dim}-wide Flag-DiT that model_args.pth "
                f"names: missing {listed(missing)}; unexpected {listed(unexpected)}")
        state = {}
        for name in wanted:
            try:
                tensor = f.get_tensor(name)
            except Exception as err:  # a file cut short: its header promises bytes that are not there
                raise ModelNotAvailable(f"cannot read {name} from {path.name} (damaged or incomplete download?): "
                                        f"{err}. {_redownload(title)}") from None
            if tuple(tensor.shape) != wanted[name]:
                raise ModelNotAvailable(f"{path.name}: {name} is {tuple(tensor.shape)}, the Flag-DiT that "
                                        f"model_args.pth names needs {wanted[name]}")
            state[name] = tensor.to(dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def read_text_encoder(folder: Path, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """LLaMA (the base model: `last_hidden_state` is after its final norm) and its tokenizer set to
    add BOS and EOS, as the demo's `AutoTokenizer(..., add_bos_token=True, add_eos_token=True)`."""
    from transformers import AutoTokenizer, LlamaModel

    class CaptionEncoder(LlamaModel):
        # The checkpoint is a LlamaForCausalLM's: its LM head is not read, and not worth a warning.
        _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    try:
        encoder = CaptionEncoder.from_pretrained(folder, use_safetensors=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder, add_bos_token=True, add_eos_token=True)
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(f"the text encoder in {folder} cannot be loaded: {err}") from err
    return encoder.eval(), tokenizer


def read_vae(folder: Path) -> nn.Module:
    """The SDXL VAE, in float32 (it overflows in half precision)."""
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(folder, use_safetensors=True, torch_dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(f"the VAE in {folder} cannot be loaded: {err}") from err
    return vae.eval()
