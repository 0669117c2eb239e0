"""Placement policies: how a pipeline's weights are put on the execution device.

From most to least memory on the device (and fastest to slowest):
- full: every component on the device.
- model_offload: each component moves to the device only while it runs (diffusers/accelerate).
- group_offload: block groups of each component stream to the device as they run (diffusers hooks).
- sequential_offload: layer by layer (diffusers' leaf-level group offload, which does what accelerate's
  sequential offload does without its per-call overhead, and also works with a CPU execution device).

A worker that owns a device group (runtime/multi_gpu.py) has one more, `Spread.BALANCED`: each component
whole on one GPU of the group (diffusers' `device_map="balanced"`), chosen after full on one GPU and before
any offload. It is made at load time, not applied to a loaded pipeline, and never moved by `.to()`: its
accelerate hooks own where it is, so the scheduler frees it by dropping it. It is a separate enum because
`Placement` lists what every single device can do (the settings' `--placement` choices, and the tests
that run each one on the CPU).
"""

from __future__ import annotations

import enum
import itertools
import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


class Placement(str, enum.Enum):
    FULL = "full"
    MODEL_OFFLOAD = "model_offload"
    GROUP_OFFLOAD = "group_offload"
    SEQUENTIAL_OFFLOAD = "sequential_offload"


class Spread(str, enum.Enum):
    """Placements over a device group (one process, several GPUs)."""

    BALANCED = "balanced"


AnyPlacement = Placement | Spread

# Most generous first: the scheduler takes the first that fits, OOM recovery steps down one.
LADDER = (Placement.FULL, Placement.MODEL_OFFLOAD, Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD)
# On a device group: whole on the first GPU beats spread over the group (no hand-over between GPUs), and
# spread beats any offload (weights stay put instead of crossing PCIe every step).
GROUP_LADDER = (Placement.FULL, Spread.BALANCED, *LADDER[1:])


def more_frugal(placement: AnyPlacement, ladder: tuple[AnyPlacement, ...] = LADDER) -> AnyPlacement | None:
    if placement not in ladder:
        ladder = GROUP_LADDER
    index = ladder.index(placement)
    return ladder[index + 1] if index + 1 < len(ladder) else None


def torch_components(pipeline: Any) -> dict[str, torch.nn.Module]:
    """The components a placement moves (and a Footprint measures): those that are torch modules."""
    components = getattr(pipeline, "components", {}) or {}
    return {name: c for name, c in components.items() if isinstance(c, torch.nn.Module)}


def is_on(pipeline: Any, device: torch.device) -> bool:
    """Every tensor of every torch component already on `device` (a cold load on the CPU, a parked
    model on a CPU-only box): one look at each tensor, where `.to()` would re-assign each one."""
    for module in torch_components(pipeline).values():
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.device != device:
                return False
    return True


def apply_placement(pipeline: Any, placement: AnyPlacement, device: str) -> None:
    """Put a pipeline (currently plain, on the CPU, without hooks) on `device` under `placement`."""
    from diffusers.hooks import apply_group_offloading

    if isinstance(placement, Spread):
        raise ValueError(f"{placement.value} is made when the pipeline loads (the loader's device_map), "
                         "not applied to a loaded one")
    target = torch.device(device)
    if placement is Placement.FULL:
        # Nothing to move is the common case on the CPU, where a pipeline's `.to()` still re-assigns every
        # tensor (14 ms for a 1 GB DiT, half a cold switch from the page cache). "cuda" never equals a
        # tensor's "cuda:0", so on a GPU a pipeline coming from RAM is always moved.
        if not is_on(pipeline, target):
            pipeline.to(target)
        elif hasattr(pipeline, "placed_on"):  # what a ModuleBundle's .to() would have recorded
            pipeline.placed_on(target)
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


def park(pipeline: Any, placement: AnyPlacement) -> bool:
    """Move a pipeline's weights to RAM and remove its offload hooks. False if it must be reloaded
    instead (group-offload hooks cannot be removed through a public diffusers API; a balanced pipeline's
    accelerate hooks own its devices, and `.to()` on it is refused by diffusers)."""
    if placement in (Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD, Spread.BALANCED):
        return False
    if placement is Placement.MODEL_OFFLOAD:
        pipeline.remove_all_hooks()
    cpu = torch.device("cpu")
    if not is_on(pipeline, cpu):
        pipeline.to(cpu)
    elif hasattr(pipeline, "placed_on"):
        pipeline.placed_on(cpu)
    return True
