"""A VideoX-Fun Wan transformer (its `config.json` + `diffusion_pytorch_model.safetensors` in the
original Wan key names) as diffusers' `WanTransformer3DModel`.

The keys are renamed by diffusers' own `convert_wan_transformer_to_diffusers` (what `from_single_file`
uses), against an explicit diffusers config built from VideoX-Fun's `config.json`: `from_single_file`
alone would guess a 16-channel text-to-video 1.3B from the patch embedding's width and fail on the
Fun models' 36/48 input channels and image-attention keys. V1.1 Control's `ref_conv` (a Conv2d turning
the reference image's latents into tokens put before the video's) has no slot there: it is loaded into a
module of its own (`RefConv`), and so is V1.1 Control-Camera's `control_adapter` (VideoX-Fun's
`SimpleAdapter`: the camera's Plücker rays into features added to the patch embeddings; `ControlAdapter`).
The load is strict both ways: a key the checkpoint has and no model holds (`ref_conv` without
`add_ref_conv`, `control_adapter` without `add_control_adapter`) is refused by name, never dropped.
`original_layout` is the inverse description (names and shapes of the original checkpoint), used to
write the built-in tiny checkpoints and to check real-size configs on the meta device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ...errors import ModelNotAvailable

# VideoX-Fun's WanTransformer3DModel defaults (videox_fun/models/wan_transformer3d.py) for keys a
# config.json may leave out.
FUN_DEFAULTS = {"model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512, "freq_dim": 256, "text_dim": 4096,
                "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
# VideoX-Fun's MLPProj(1280, dim): the CLIP ViT-H/14 width. The tiny checkpoints are narrower, so
# the width is read from the checkpoint's own `img_emb.proj.0.weight`.
CLIP_WIDTH = 1280
# Additions diffusers' WanTransformer3DModel has no slot for: what each is, and whether the studio runs it.
EXTRAS = {"ref_conv": "V1.1 Control's reference-image tokens (ref_conv)",
          "control_adapter": "Control-Camera's camera adapter (control_adapter)"}


def read_fun_config(folder: Path, title: str) -> dict[str, Any]:
    """VideoX-Fun's config.json with its defaults filled in, or a clear error."""
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(f"{title}: config.json is missing or unreadable ({err})") from None
    if raw.get("_class_name") not in ("WanModel", "WanTransformer3DModel"):
        raise ModelNotAvailable(f"{title}: config.json is not a VideoX-Fun Wan transformer "
                                f"(_class_name {raw.get('_class_name')!r})")
    config = {**FUN_DEFAULTS, **raw}
    if tuple(config["window_size"]) != (-1, -1):
        raise ModelNotAvailable(f"{title}: local attention (window_size {config['window_size']}) is not supported")
    return config


def diffusers_config(fun: dict[str, Any], image_dim: int | None) -> dict[str, Any]:
    """The WanTransformer3DModel config for a VideoX-Fun config (as diffusers' wan-i2v-14B single-file
    config reads for Wan's own I2V: image_dim 1280, added_kv_proj_dim = the width)."""
    dim, heads = int(fun["dim"]), int(fun["num_heads"])
    i2v = fun["model_type"] == "i2v"
    return {"patch_size": tuple(fun["patch_size"]), "num_attention_heads": heads, "attention_head_dim": dim // heads,
            "in_channels": int(fun["in_dim"]), "out_channels": int(fun["out_dim"]), "text_dim": int(fun["text_dim"]),
            "freq_dim": int(fun["freq_dim"]), "ffn_dim": int(fun["ffn_dim"]), "num_layers": int(fun["num_layers"]),
            "cross_attn_norm": bool(fun["cross_attn_norm"]),
            "qk_norm": "rms_norm_across_heads" if fun["qk_norm"] else None, "eps": float(fun["eps"]),
            "image_dim": (image_dim or CLIP_WIDTH) if i2v else None, "added_kv_proj_dim": dim if i2v else None,
            "rope_max_seq_len": 1024}


def original_layout(fun: dict[str, Any], image_dim: int = CLIP_WIDTH) -> dict[str, tuple[int, ...]]:
    """Every tensor of the original Wan checkpoint for this config, by its original name, with its shape
    (official Wan `WanModel` / VideoX-Fun `WanTransformer3DModel`)."""
    fun = {**FUN_DEFAULTS, **fun}
    dim, ffn, pt, ph, pw = int(fun["dim"]), int(fun["ffn_dim"]), *fun["patch_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (dim, int(fun["in_dim"]), pt, ph, pw), "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, int(fun["text_dim"])), "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, int(fun["freq_dim"])), "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,),
        "head.head.weight": (int(fun["out_dim"]) * pt * ph * pw, dim),
        "head.head.bias": (int(fun["out_dim"]) * pt * ph * pw,), "head.modulation": (1, 2, dim),
    }
    i2v = fun["model_type"] == "i2v"
    for n in range(int(fun["num_layers"])):
        block = f"blocks.{n}."
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o") + (("k_img", "v_img") if attn == "cross_attn" and i2v else ()):
                shapes[f"{block}{attn}.{proj}.weight"], shapes[f"{block}{attn}.{proj}.bias"] = (dim, dim), (dim,)
            if fun["qk_norm"]:  # RMSNorm over the whole width
                shapes[f"{block}{attn}.norm_q.weight"] = shapes[f"{block}{attn}.norm_k.weight"] = (dim,)
        if i2v and fun["qk_norm"]:
            shapes[f"{block}cross_attn.norm_k_img.weight"] = (dim,)
        if fun["cross_attn_norm"]:  # norm3 is the only affine LayerNorm of a block
            shapes[f"{block}norm3.weight"] = shapes[f"{block}norm3.bias"] = (dim,)
        shapes.update({f"{block}ffn.0.weight": (ffn, dim), f"{block}ffn.0.bias": (ffn,),
                       f"{block}ffn.2.weight": (dim, ffn), f"{block}ffn.2.bias": (dim,),
                       f"{block}modulation": (1, 6, dim)})
    if fun.get("add_ref_conv"):  # V1.1 Control
        shapes["ref_conv.weight"] = (dim, int(fun.get("in_dim_ref_conv", 16)), ph, pw)
        shapes["ref_conv.bias"] = (dim,)
    if fun.get("add_control_adapter"):  # V1.1 Control-Camera's SimpleAdapter (VideoX-Fun's defaults 24, 8)
        scale = int(fun.get("downscale_factor_control_adapter", 8))
        packed = int(fun.get("in_dim_control_adapter", 24)) * scale * scale
        shapes["control_adapter.conv.weight"] = (dim, packed, ph, pw)
        shapes["control_adapter.conv.bias"] = (dim,)
        for conv in ("conv1", "conv2"):
            shapes[f"control_adapter.residual_blocks.0.{conv}.weight"] = (dim, dim, 3, 3)
            shapes[f"control_adapter.residual_blocks.0.{conv}.bias"] = (dim,)
    if i2v:  # MLPProj: LayerNorm, Linear, GELU, Linear, LayerNorm
        shapes.update({"img_emb.proj.0.weight": (image_dim,), "img_emb.proj.0.bias": (image_dim,),
                       "img_emb.proj.1.weight": (image_dim, image_dim), "img_emb.proj.1.bias": (image_dim,),
                       "img_emb.proj.3.weight": (dim, image_dim), "img_emb.proj.3.bias": (dim,),
                       "img_emb.proj.4.weight": (dim,), "img_emb.proj.4.bias": (dim,)})
    return shapes


def convert_state(state: dict[str, torch.Tensor], title: str) -> dict[str, torch.Tensor]:
    """Original Wan names -> diffusers names (diffusers' converter), refusing weights with no slot (the
    caller takes `ref_conv.*` / `control_adapter.*` out first when its config declares them)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    extras = sorted(k for k in state if k.split(".")[0] in EXTRAS)
    if extras:
        kinds = sorted({EXTRAS[k.split(".")[0]] for k in extras})
        shown = ", ".join(extras[:4]) + (f" and {len(extras) - 4} more" if len(extras) > 4 else "")
        raise ModelNotAvailable(f"{title}: holds {', '.join(kinds)} that its config.json does not declare "
                                f"(weights {shown}); they would be dropped, so it is refused")
    return convert_wan_transformer_to_diffusers(dict(state))


def build_transformer(fun: dict[str, Any], state: dict[str, torch.Tensor], dtype: torch.dtype, title: str) -> Any:
    """The diffusers transformer holding exactly the checkpoint's weights (strict both ways), in `dtype`."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    proj = state.get("img_emb.proj.0.weight")
    config = diffusers_config(fun, proj.shape[0] if proj is not None else None)
    converted = convert_state(state, title)
    with init_empty_weights():  # parameters on the meta device; RoPE's buffers are computed for real
        model = WanTransformer3DModel.from_config(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(expected[k].shape) != tuple(converted[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ModelNotAvailable(f"{title}: the checkpoint does not match its config.json ({'; '.join(parts)})")
    # As diffusers' from_pretrained casts: its float32 modules (norms, time embedder, modulation) stay float32.
    keep = tuple(model._keep_in_fp32_modules or ())
    model.load_state_dict({k: v.to(torch.float32 if any(m in k.split(".") for m in keep) else dtype)
                           for k, v in converted.items()}, strict=True, assign=True)
    return model.eval()


class _ConvSide(torch.nn.Module):
    """A module beside the diffusers transformer, led by its `conv`: the dtype and device a diffusers
    pipeline asks of each of its modules when it moves them."""

    @property
    def dtype(self) -> torch.dtype:
        return self.conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv.weight.device


class RefConv(_ConvSide):
    """VideoX-Fun's `ref_conv`: Conv2d(in_dim_ref_conv, dim, patch, stride patch) over the reference
    image's latents; its tokens go before the video's as one more latent frame (see pipeline.py)."""

    def __init__(self, in_channels: int, dim: int, patch: tuple[int, int]) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.conv(latents.to(self.conv.weight.dtype))


def split_ref_conv(fun: dict[str, Any], state: dict[str, torch.Tensor], dtype: torch.dtype,
                   title: str) -> RefConv | None:
    """Take `ref_conv.*` out of `state` into a RefConv when the config declares it (strictly)."""
    if not fun.get("add_ref_conv"):
        return None
    weights = {k.removeprefix("ref_conv."): state.pop(k) for k in [k for k in state if k.startswith("ref_conv.")]}
    module = RefConv(int(fun.get("in_dim_ref_conv", 16)), int(fun["dim"]), tuple(fun["patch_size"][1:]))
    expected = {k: tuple(v.shape) for k, v in module.conv.state_dict().items()}
    if {k: tuple(v.shape) for k, v in weights.items()} != expected:
        raise ModelNotAvailable(f"{title}: config.json has add_ref_conv, but the checkpoint's ref_conv weights "
                                f"({', '.join(sorted(weights)) or 'none'}) are not a Conv2d of {expected}")
    module.conv.load_state_dict(weights, strict=True)
    return module.to(dtype).eval()


class ResidualBlock(torch.nn.Module):
    """VideoX-Fun's ResidualBlock: x + conv2(relu(conv1(x))), 3x3 convolutions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.conv2 = torch.nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class ControlAdapter(_ConvSide):
    """VideoX-Fun's `SimpleAdapter` (wan_camera_adapter.py), its names kept (`conv`, `residual_blocks.0.*`):
    per latent frame, PixelUnshuffle(8) of the 24 packed Plücker channels, a patch-sized strided Conv2d
    to the model width and one residual block -> (B, dim, F, H/16, W/16), added to the patch embeddings."""

    def __init__(self, in_channels: int, dim: int, patch: tuple[int, int], downscale: int = 8) -> None:
        super().__init__()
        self.pixel_unshuffle = torch.nn.PixelUnshuffle(downscale)
        self.conv = torch.nn.Conv2d(in_channels * downscale * downscale, dim, kernel_size=patch, stride=patch)
        self.residual_blocks = torch.nn.Sequential(ResidualBlock(dim))

    def forward(self, camera: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = camera.shape
        x = camera.to(self.conv.weight.dtype).permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        out = self.residual_blocks(self.conv(self.pixel_unshuffle(x)))
        return out.view(b, f, *out.shape[1:]).permute(0, 2, 1, 3, 4)


def split_control_adapter(fun: dict[str, Any], state: dict[str, torch.Tensor], dtype: torch.dtype,
                          title: str) -> ControlAdapter | None:
    """Take `control_adapter.*` out of `state` into a ControlAdapter when the config declares it (strictly)."""
    if not fun.get("add_control_adapter"):
        return None
    prefix = "control_adapter."
    weights = {k.removeprefix(prefix): state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    module = ControlAdapter(int(fun.get("in_dim_control_adapter", 24)), int(fun["dim"]),
                            tuple(fun["patch_size"][1:]), int(fun.get("downscale_factor_control_adapter", 8)))
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        odd = sorted(k for k in got if expected.get(k) != got[k])
        raise ModelNotAvailable(f"{title}: config.json has add_control_adapter, but the checkpoint's control_adapter "
                                f"weights do not match VideoX-Fun's SimpleAdapter (missing: "
                                f"{', '.join(prefix + k for k in missing) or 'none'}; unexpected or wrong shape: "
                                f"{', '.join(prefix + k for k in odd) or 'none'})")
    module.load_state_dict(weights, strict=True)
    return module.to(dtype).eval()


def load_transformer(folder: Path, dtype: torch.dtype,
                     title: str) -> tuple[Any, dict[str, Any], RefConv | None, ControlAdapter | None]:
    """(the diffusers transformer, VideoX-Fun's config, V1.1's RefConv or None, Control-Camera's
    ControlAdapter or None) from a Fun repo's folder; safetensors only."""
    from safetensors.torch import load_file

    fun = read_fun_config(folder, title)
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise ModelNotAvailable(f"{title}: diffusion_pytorch_model.safetensors is missing; download it again")
    state = load_file(str(weights))
    ref_conv = split_ref_conv(fun, state, dtype, title)
    adapter = split_control_adapter(fun, state, dtype, title)
    return build_transformer(fun, state, dtype, title), fun, ref_conv, adapter
