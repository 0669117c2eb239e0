"""Built-in tiny Wan2.1-Fun models, saved as VideoX-Fun's repos and their components are laid out.

alibaba-pai/Wan2.1-Fun-1.3B-InP (and -Control) hold VideoX-Fun's `config.json` (WanModel: dim, ffn_dim,
in_dim, model_type "i2v", ...) and `diffusion_pytorch_model.safetensors` in the original Wan key names
(`patch_embedding.weight`, `blocks.0.self_attn.q.weight`, `head.modulation`, `img_emb.proj.*`). The tiny
ones are written the same way, their tensors named and shaped by `engines.wan_fun.convert.original_layout`
and filled with seeded random values, so they load through the conversion a download takes. Their
components are diffusers-format folders shaped as the Wan-AI repos the real cards take them from:
text_encoder/ + tokenizer/ + vae/ (Wan2.1-T2V-1.3B-Diffusers) and image_encoder/ + image_processor/
(Wan2.1-I2V-14B-480P-Diffusers). tiny-wan-fun-control-ref is V1.1 Control's layout (`add_ref_conv`,
`ref_conv.*`). Sizes: any multiple of 16, frames 4k+1; 48x32, 9 frames takes well
under a second of CPU per 2-step job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .builtin_llamagen import FileSet
from .tiny_parts import SEED, tiny_t5_tokenizer

# The tiny DiT: 32 wide (2 heads of 16: RoPE splits 8/4/4 over t, h, w), 2 blocks; text_dim is the
# tiny umT5's d_model and the image width the tiny CLIP's hidden size (the real ones: 4096, 1280).
TINY_WIDTH = 32
TINY_CLIP_WIDTH = 32


def tiny_fun_config(in_dim: int, reference: bool = False, camera: bool = False) -> dict[str, Any]:
    """A VideoX-Fun config.json as the Fun repos write it (WanModel keys), at toy size; `reference`:
    V1.1 Control's, with `add_ref_conv`; `camera`: V1.1 Control-Camera's, with `add_control_adapter`."""
    config = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": TINY_WIDTH, "eps": 1e-06,
              "ffn_dim": 64, "freq_dim": 256, "in_dim": in_dim, "model_type": "i2v", "num_heads": 2,
              "num_layers": 2, "out_dim": 16, "text_len": 512, "text_dim": 32}
    if reference:
        config.update(add_ref_conv=True, in_dim_ref_conv=16)
    if camera:
        config.update(add_control_adapter=True, in_dim_control_adapter=24, downscale_factor_control_adapter=8)
    return config


def tiny_fun_state(in_dim: int, seed: int, reference: bool = False, camera: bool = False) -> dict[str, Any]:
    """Seeded random weights under the original Wan names. Norm scales sit near 1 and everything else
    is small but not zero, so every input channel (mask, control, start image) changes the output."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in original_layout_for(in_dim, reference, camera).items():
        values = torch.randn(shape, generator=generator)
        if name.startswith("control_adapter.") and len(shape) > 1:  # 1536-wide fan-in: kept near unit scale
            values = values * 0.02
        elif ("norm" in name and name.endswith(".weight")) or name.endswith(("proj.0.weight", "proj.4.weight")):
            values = 1 + 0.1 * values
        else:
            values = values * (0.2 if len(shape) > 1 else 0.05)
        state[name] = values.contiguous()
    return state


def original_layout_for(in_dim: int, reference: bool = False, camera: bool = False) -> dict[str, tuple[int, ...]]:
    from ..engines.wan_fun.convert import original_layout

    return original_layout(tiny_fun_config(in_dim, reference, camera), image_dim=TINY_CLIP_WIDTH)


def _transformer_files(in_dim: int, seed: int, reference: bool = False, camera: bool = False) -> FileSet:
    from safetensors.torch import save_file

    def weights(path: Path) -> None:
        save_file(tiny_fun_state(in_dim, seed, reference, camera), str(path))
    config = tiny_fun_config(in_dim, reference, camera)
    return FileSet({
        "config.json": lambda path: path.write_text(json.dumps(config, indent=2)),
        "diffusion_pytorch_model.safetensors": weights,
    })


def build_tiny_wan_fun_inp() -> FileSet:
    """Fun InP: 36 input channels (noise, mask, masked-video latents) and CLIP image attention."""
    return _transformer_files(36, SEED + 40)


def build_tiny_wan_fun_control() -> FileSet:
    """Fun Control: 48 input channels (noise, control-video latents, start-image latents)."""
    return _transformer_files(48, SEED + 41)


def build_tiny_wan_fun_control_ref() -> FileSet:
    """Fun V1.1 Control: as Control, plus `ref_conv` (the reference image's tokens)."""
    return _transformer_files(48, SEED + 42, reference=True)


def build_tiny_wan_fun_camera() -> FileSet:
    """Fun V1.1 Control-Camera: 32 input channels (noise, start-image latents) and `control_adapter`
    (VideoX-Fun's SimpleAdapter over the trajectory's Plücker rays)."""
    return _transformer_files(32, SEED + 43, camera=True)


def build_tiny_wan_fun_text_vae() -> FileSet:
    """umT5 + its tokenizer + the Wan VAE, as the text_encoder/, tokenizer/ and vae/ folders."""
    import torch

    from .builtin_video import _tiny_umt5, _tiny_wan_vae

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(SEED)
    encoder = _tiny_umt5(len(tokenizer))
    torch.manual_seed(SEED + 2)
    vae = _tiny_wan_vae()

    def save(part: Any):
        return lambda path: part.save_pretrained(Path(path))
    return FileSet({"text_encoder": save(encoder), "tokenizer": save(tokenizer), "vae": save(vae)})


def build_tiny_wan_fun_clip() -> FileSet:
    """A CLIP vision encoder (its penultimate hidden states feed the DiT) and its processor."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(SEED + 3)
    encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=TINY_CLIP_WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=32, hidden_act="gelu"))
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return FileSet({"image_encoder": lambda path: encoder.save_pretrained(Path(path)),
                    "image_processor": lambda path: processor.save_pretrained(Path(path))})
