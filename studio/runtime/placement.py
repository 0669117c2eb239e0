"""Placement policies: how a pipeline's weights are put on the execution device.

From most to least memory on the device (and fastest to slowest):
- full: every component on the device.
- model_offload: each component moves to the device only while it runs (diffusers/accelerate).
- group_offload: block groups of each component stream to the device as they run (diffusers hooks).
- sequential_offload: layer by layer (diffusers' leaf-level group offload, which does what accelerate's
  sequential offload does without its per-call overhead, and also works with a CPU execution device).
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


class Placement(str, enum.Enum):
    FULL = "full"
    MODEL_OFFLOAD = "model_offload"
    GROUP_OFFLOAD = "group_offload"
    SEQUENTIAL_OFFLOAD = "sequential_offload"


# Most generous first: the scheduler takes the first that fits, OOM recovery steps down one.
LADDER = (Placement.FULL, Placement.MODEL_OFFLOAD, Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD)


def more_frugal(placement: Placement) -> Placement | None:
    index = LADDER.index(placement)
    return LADDER[index + 1] if index + 1 < len(LADDER) else None


def torch_components(pipeline: Any) -> dict[str, torch.nn.Module]:
    """The components a placement moves (and a Footprint measures): those that are torch modules."""
    components = getattr(pipeline, "components", {}) or {}
    return {name: c for name, c in components.items() if isinstance(c, torch.nn.Module)}


def apply_placement(pipeline: Any, placement: Placement, device: str) -> None:
    """Put a pipeline (currently plain, on the CPU, without hooks) on `device` under `placement`."""
    from diffusers.hooks import apply_group_offloading

    target = torch.device(device)
    if placement is Placement.FULL:
        pipeline.to(target)
    elif placement is Placement.MODEL_OFFLOAD:
        pipeline.enable_model_cpu_offload(device=target)
    else:
        kind = "block_level" if placement is Placement.GROUP_OFFLOAD else "leaf_level"
        extra = {"num_blocks_per_group": 1} if kind == "block_level" else {}
        for module in torch_components(pipeline).values():
            apply_group_offloading(module, onload_device=target, offload_device=torch.device("cpu"),
                                   offload_type=kind, **extra)
        if hasattr(pipeline, "placed_on"):  # a ModuleBundle: its weights' device no longer says where it runs
            pipeline.placed_on(target)


def park(pipeline: Any, placement: Placement) -> bool:
    """Move a pipeline's weights to RAM and remove its offload hooks. False if it must be reloaded
    instead (group-offload hooks cannot be removed through a public diffusers API)."""
    if placement in (Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD):
        return False
    if placement is Placement.MODEL_OFFLOAD:
        pipeline.remove_all_hooks()
    pipeline.to("cpu")
    return True
