"""Built-in tiny LlamaGen models, saved the way the official releases are: bare `.pt` files.

FoundationVision/LlamaGen publishes each GPT as a training checkpoint (`{"model": state_dict, ...}`
with an argparse Namespace beside it) and the VQ tokenizer as `{"model": state_dict}` under
LlamaGen's own parameter names, with no config files. The tiny models are written in exactly that
form (the VQ's names mapped back from transformers' JanusVQVAE to LlamaGen's), so they load through
the same code, with `torch.load(weights_only=True)`, as a downloaded checkpoint. The text-to-image
one requires a tiny Flan-T5 encoder, its own built-in model, as the real one requires flan-t5-xl.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from .tiny_parts import SEED, tiny_t5_encoder, tiny_t5_tokenizer

# What the tiny cards (model_zoo/tiny-llamagen-*.yaml) say; the builders write what they describe.
TINY_IMAGE_SIZE = 64  # 16 x 16 tokens through the tiny VQ's 4x downsampling
TINY_FILES = {
    "c2i": {"kind": "c2i", "gpt_file": "c2i_tiny.pt", "gpt_size": "tiny", "vq_file": "vq_tiny.pt",
            "vq_size": "tiny"},
    "t2i": {"kind": "t2i", "gpt_file": "t2i_tiny.pt", "gpt_size": "tiny", "vq_file": "vq_tiny.pt",
            "vq_size": "tiny", "text_encoder": "tiny-flan-t5"},
}


class FileSet:
    """A built-in model that is a set of files: `save_pretrained` writes each one into the folder."""

    def __init__(self, writers: dict[str, Callable[[Path], None]]) -> None:
        self.writers = writers

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **_: Any) -> None:
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name, write in self.writers.items():
            write(folder / name)


def _gpt_checkpoint(kind: str) -> dict[str, Any]:
    import torch

    from ..engines.llamagen.gpt import GPT
    from ..engines.llamagen.options import LlamaGenFiles
    from ..engines.llamagen.pipeline import gpt_config

    config = gpt_config(LlamaGenFiles(**TINY_FILES[kind]), TINY_IMAGE_SIZE)
    torch.manual_seed(SEED + 10)
    gpt = GPT(config)
    # The original's training checkpoint: weights under "model", plus the run's arguments.
    return {"model": gpt.state_dict(), "steps": 0,
            "args": argparse.Namespace(gpt_model="GPT-tiny", gpt_type=kind, image_size=TINY_IMAGE_SIZE)}


def _vq_checkpoint() -> dict[str, Any]:
    import torch
    from transformers import JanusVQVAE

    from ..engines.llamagen.vq import tiny_vq_config, to_official_keys

    torch.manual_seed(SEED + 11)
    state = to_official_keys(JanusVQVAE(tiny_vq_config()).state_dict())
    # The official file also carries the quantizer's training statistic (a ring buffer of code ids).
    state["quantize.codebook_used"] = torch.zeros(65536)
    return {"model": state}


def build_tiny_llamagen(kind: str) -> FileSet:
    import torch

    files = TINY_FILES[kind]
    return FileSet({
        files["gpt_file"]: lambda path: torch.save(_gpt_checkpoint(kind), path),
        files["vq_file"]: lambda path: torch.save(_vq_checkpoint(), path),
    })


class TinyT5Encoder:
    """A tiny Flan-T5-style encoder and tokenizer, laid out as google/flan-t5-* repos are."""

    def __init__(self) -> None:
        import torch

        self.tokenizer = tiny_t5_tokenizer()
        torch.manual_seed(SEED + 12)
        self.model = tiny_t5_encoder(len(self.tokenizer))

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.model.save_pretrained(save_directory, safe_serialization=safe_serialization, **kwargs)
        self.tokenizer.save_pretrained(save_directory)


def build_tiny_c2i() -> FileSet:
    return build_tiny_llamagen("c2i")


def build_tiny_t2i() -> FileSet:
    return build_tiny_llamagen("t2i")
