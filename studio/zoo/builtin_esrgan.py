"""Built-in tiny ESRGAN, saved the way the official Real-ESRGAN release is: `RealESRGAN_x4plus.pth`, a
state dict in BasicSR's names wrapped in `{"params_ema": ...}` (the EMA generator BasicSR saves),
here of a 2-block, 8-feature RRDBNet x4 with seeded random weights, so it loads through the same
code as the download."""

from __future__ import annotations

from typing import Any

from .builtin_llamagen import FileSet
from .tiny_parts import SEED

# What the tiny card (model_zoo/tiny-esrgan.yaml) says.
WEIGHTS_FILE = "RealESRGAN_x4plus.pth"
TINY_SCALE = 4
TINY_SIZES = {"num_feat": 8, "num_block": 2, "num_grow_ch": 4}


def tiny_esrgan_state() -> dict[str, Any]:
    import torch

    from ..engines.esrgan.rrdbnet import RRDBConfig, RRDBNet

    torch.manual_seed(SEED + 50)
    model = RRDBNet(RRDBConfig.for_scale(TINY_SCALE, **TINY_SIZES))
    with torch.no_grad():  # mid-grey plus what the random layers make of the picture, strong enough to see
        model.conv_last.bias.fill_(0.5)
        model.conv_last.weight.mul_(6)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def build_tiny_esrgan() -> FileSet:
    import torch

    return FileSet({WEIGHTS_FILE: lambda path: torch.save({"params_ema": tiny_esrgan_state()}, path)})
