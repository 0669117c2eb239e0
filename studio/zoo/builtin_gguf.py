"""Built-in tiny GGUF transformer files, written as the community files are (city96/Wan2.1-T2V-14B-gguf).

A community GGUF of a Wan transformer keeps the original Wan checkpoint's key names (`blocks.0.self_attn.q`,
`head.head`, …, which diffusers' `convert_wan_transformer_to_diffusers` maps), stores the big 2-D
linear weights quantized (Q8_0 / Q4_0: blocks of 32 weights and one f16 scale) and the rest (biases,
norms, the patch-embedding convolution, modulation tables) as F32; a 5-D tensor (the patch embedding's
Conv3d weight) is folded to GGML's 4 dimensions with its shape noted as `comfy.gguf.orig_shape.<name>`.
These builders write the tiny Wan DiT of `builtin_video.build_tiny_wan` (the very same seeded weights)
that way, as a one-file "snapshot", so a card that points its transformer at it loads through exactly
the path a downloaded file takes (`runtime/gguf_transformer.py`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .tiny_parts import SEED

# diffusers name -> original Wan name, applied in order (the inverse of diffusers' single-file renames).
_WAN_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
    (".norm2.", ".norm3."),  # the cross-attention norm: norm3 in Wan's code, norm2 in diffusers'
)

QUANT_BLOCK = 32  # weights per Q8_0 / Q4_0 block


def wan_original_name(name: str) -> str:
    """A diffusers WanTransformer3DModel state-dict key as the original Wan checkpoint names it."""
    if name == "scale_shift_table":
        return "head.modulation"
    if name.startswith("proj_out."):
        return "head.head." + name.removeprefix("proj_out.")
    out = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", name)
    for new, old in _WAN_TO_ORIGINAL:
        out = out.replace(new, old)
    return out


def write_gguf(tensors: dict[str, Any], path: Path, quant: str, arch: str) -> None:
    """Write `tensors` (name -> torch tensor) to a GGUF file: 2-D weights whose rows split into whole blocks
    quantized as `quant` ("Q8_0", "Q4_0"), everything else as F32 (as the community converters do)."""
    import gguf
    import numpy as np

    qtype = gguf.GGMLQuantizationType[quant]
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, tensor in tensors.items():
        data = tensor.detach().float().cpu().numpy()
        if data.ndim > 4:  # GGML has 4 dimensions: fold, and note the shape, as ComfyUI-GGUF's converter does
            writer.add_array(f"comfy.gguf.orig_shape.{name}", [int(n) for n in data.shape])
            data = data.reshape(data.shape[0], -1, *data.shape[-2:])
        if data.ndim == 2 and data.shape[1] % QUANT_BLOCK == 0 and name.endswith(".weight"):
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


class GGUFFile:
    """What a builder returns: saved as a folder holding one .gguf file (the snapshot a download makes)."""

    def __init__(self, filename: str, tensors: dict[str, Any], quant: str, arch: str) -> None:
        self.filename, self.tensors, self.quant, self.arch = filename, tensors, quant, arch

    def save_pretrained(self, folder: Path, safe_serialization: bool = True) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_gguf(self.tensors, Path(folder) / self.filename, self.quant, self.arch)


def tiny_wan_original_state_dict() -> dict[str, Any]:
    """The tiny Wan DiT of `build_tiny_wan` (same seed, same weights), keyed as the original Wan checkpoint."""
    import torch

    from .builtin_video import _tiny_wan_transformer

    torch.manual_seed(SEED + 1)  # as build_tiny_wan seeds its transformer
    model = _tiny_wan_transformer(in_channels=16, out_channels=16)
    return {wan_original_name(k): v for k, v in model.state_dict().items()}


def build_tiny_wan_q8() -> GGUFFile:
    return GGUFFile("tiny-wan-Q8_0.gguf", tiny_wan_original_state_dict(), "Q8_0", "wan")


def build_tiny_wan_q4() -> GGUFFile:
    return GGUFFile("tiny-wan-Q4_0.gguf", tiny_wan_original_state_dict(), "Q4_0", "wan")
