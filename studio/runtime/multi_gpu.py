"""Device groups: one worker owning several GPUs, and the two ways diffusers spreads one model over them.

A device group is written with `+` (`cuda:0+cuda:1`, as in `studio serve --devices cuda:0+cuda:1,cuda:2`).
This module parses and checks one, gives the per-member budgets the MemoryScheduler weighs, decides the
balanced placement as diffusers will make it, and builds diffusers' context-parallel config:

- balanced (a scheduler placement): `DiffusionPipeline.from_pretrained(..., device_map="balanced",
  max_memory={0: bytes, 1: bytes})` puts each *whole component* (transformer, text encoder, VAE) on one
  GPU of the group; accelerate's hooks move activations between them. One process drives all members.
- context parallel (a helper, not a placement): `ContextParallelConfig` + `model.enable_parallelism()` splits
  the sequence of a Wan (or any `_cp_plan`) transformer across ranks. It needs one process per device in an
  initialised torch.distributed process group (NCCL on GPUs), each rank holding the whole model: it makes a
  long video faster, it does not make a model fit, and a one-process worker cannot run it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

GROUP_SEP = "+"


class DeviceGroupError(ValueError):
    """A device group that cannot be used as written."""


def parse_device_group(spec: str) -> tuple[str, ...]:
    """`"cuda:0+cuda:1"` -> `("cuda:0", "cuda:1")`; a single device gives a 1-tuple. Members must be
    distinct CUDA devices with an index (a group of one kind of accelerator the balanced map can number)."""
    text = str(spec).strip()
    members = tuple(part.strip() for part in text.split(GROUP_SEP))
    if len(members) == 1:
        if not members[0]:
            raise DeviceGroupError("empty device: write e.g. cuda:0, or a group cuda:0+cuda:1")
        return members
    seen: set[str] = set()
    for member in members:
        if not member:
            raise DeviceGroupError(f"device group {text!r} has an empty member: write e.g. cuda:0+cuda:1")
        kind, _, index = member.partition(":")
        if kind != "cuda":
            raise DeviceGroupError(f"device group {text!r}: {member!r} is not a CUDA device; a group spreads a model "
                                   "over GPUs only (write cuda:N+cuda:M)")
        if not index.isdigit():
            raise DeviceGroupError(f"device group {text!r}: {member!r} needs a GPU index (cuda:0, cuda:1, ...)")
        canonical = f"cuda:{int(index)}"
        if canonical in seen:
            raise DeviceGroupError(f"device group {text!r} names {canonical} twice")
        seen.add(canonical)
    return tuple(f"cuda:{int(m.partition(':')[2])}" for m in members)


def is_group(device: str | None) -> bool:
    return device is not None and GROUP_SEP in str(device)


def primary(device: str) -> str:
    """Where single-device placements (full, offloads) of a group's worker run: its first member."""
    return parse_device_group(device)[0] if is_group(device) else device


def device_index(member: str) -> int:
    """`"cuda:1"` -> 1 (`"cuda"` -> 0): the key diffusers' and accelerate's `max_memory` use."""
    _kind, _, index = member.partition(":")
    return int(index) if index else 0


def check_visible(members: Sequence[str], count: int | None = None) -> None:
    """Every member exists on this machine (`count`: the CUDA devices torch sees)."""
    if count is None:
        import torch

        count = torch.cuda.device_count()
    missing = [m for m in members if m.startswith("cuda") and device_index(m) >= count]
    if missing:
        raise DeviceGroupError(f"{', '.join(missing)} not present: this machine has {count} CUDA device(s)")


# -- budgets -------------------------------------------------------------------------------------------

def measured_member_budget(member: str) -> Callable[[int], int]:
    """A member's budget, measured when asked: its free memory plus what this process holds on it (the
    worker owns the device, so all it has allocated there could be moved out). The scheduler's argument
    (its books for the whole group) is not used: torch knows this member's share exactly."""
    index = device_index(member)

    def measured(_held_by_studio: int) -> int:
        import torch

        free, _total = torch.cuda.mem_get_info(index)
        return free + torch.cuda.memory_allocated(index)

    return measured


def member_budgets_of(members: Sequence[str], device_budget: Any,
                      member_budgets: Sequence[Any] | None) -> list[Any]:
    """One budget source per member (an int, a callable of the studio's held bytes, or None: unlimited).
    Without `member_budgets` a group's `device_budget` is shared evenly among its members."""
    if member_budgets is not None:
        if len(member_budgets) != len(members):
            raise DeviceGroupError(f"{len(member_budgets)} member budgets for the {len(members)} devices of "
                                   f"{GROUP_SEP.join(members)}")
        return list(member_budgets)
    count = len(members)
    if count == 1 or device_budget is None:
        return [device_budget] * count
    if callable(device_budget):
        return [lambda held: device_budget(held) // count] * count
    return [int(device_budget) // count] * count


def group_total(members: Sequence[int | Callable[[int], int]]) -> int | Callable[[int], int]:
    """The group's budget: the sum of its members' (a callable when any member is measured)."""
    if all(isinstance(m, int) for m in members):
        return sum(members)  # type: ignore[arg-type]

    def total(held_by_studio: int) -> int:
        return sum(m(held_by_studio) if callable(m) else m for m in members)

    return total


def balanced_max_memory(members: Sequence[str], free: Sequence[int]) -> dict[int, int]:
    """The `max_memory` a balanced load gets: GPU index -> bytes diffusers may put there (no "cpu" key:
    a component that fits nowhere must not silently land in RAM; the scheduler checked it fits)."""
    if len(members) != len(free):
        raise ValueError(f"{len(members)} members but {len(free)} budgets")
    return {device_index(m): max(0, int(b)) for m, b in zip(members, free)}


def balanced_assignment(sizes: dict[str, int], max_memory: dict[int, int]) -> dict[str, int | str]:
    """Component -> GPU index (or "cpu" where it fits none) exactly as `device_map="balanced"` assigns
    them: diffusers' own routine, components largest first over the devices most-free first."""
    from diffusers.pipelines.pipeline_loading_utils import _assign_components_to_devices

    ordered = dict(sorted(sizes.items(), key=lambda item: item[1], reverse=True))
    devices = dict(sorted(max_memory.items(), key=lambda item: item[1], reverse=True))
    placed = _assign_components_to_devices(ordered, devices, device_mapping_strategy="balanced")
    # diffusers' routine keeps only the last component it sends to "cpu": the others are missing from it.
    where = {name: device for device, names in placed.items() for name in names}
    return {name: where.get(name, "cpu") for name in sizes}


def fits_balanced(sizes: dict[str, int], max_memory: dict[int, int]) -> bool:
    """True when a balanced load would put every component on a GPU of the group."""
    return bool(sizes) and "cpu" not in balanced_assignment(sizes, max_memory).values()


def device_map_bytes(pipeline: Any, sizes: dict[str, int], members: Sequence[str]) -> list[int]:
    """Bytes a balanced pipeline holds on each member, from its `hf_device_map` and the measured sizes
    (a component the map does not name is counted on the first member; one in "cpu" on none)."""
    where = getattr(pipeline, "hf_device_map", None) or {}
    indices = [device_index(m) for m in members]
    held = [0] * len(members)
    for name, size in sizes.items():
        device = where.get(name, indices[0])
        if isinstance(device, str):
            device = device_index(device) if device.startswith("cuda") else None
        if device in indices:
            held[indices.index(device)] += size
    return held


# -- context parallelism ---------------------------------------------------------------------------------

CP_REQUIREMENT = (
    "context parallelism runs one process per device: torch.distributed must be initialised in every rank "
    "(dist.init_process_group('nccl') under torchrun, world size = the group's size, rank r on cuda:r) before "
    "enable_context_parallel, and every rank must call the model with the same inputs")


def context_parallel_config(world_size: int, *, ring: bool = False) -> Any:
    """diffusers' ContextParallelConfig over `world_size` ranks: Ulysses (all-to-all over heads) by default,
    which diffusers' native SDPA backend supports; ring attention needs a backend that returns the LSE
    (flash, cuDNN), which `native` does not."""
    from diffusers import ContextParallelConfig

    if world_size < 2:
        raise DeviceGroupError("context parallelism needs at least two devices")
    return ContextParallelConfig(ring_degree=world_size) if ring else ContextParallelConfig(ulysses_degree=world_size)


def enable_context_parallel(model: Any, world_size: int, *, ring: bool = False,
                            cp_plan: dict | None = None) -> Any:
    """Turn on diffusers' context parallelism on a transformer (its `_cp_plan`, or `cp_plan` for a model that
    declares none). The process group must already be up (CP_REQUIREMENT); returns the config."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(CP_REQUIREMENT)
    if dist.get_world_size() != world_size:
        raise RuntimeError(f"the process group has {dist.get_world_size()} ranks, the device group {world_size}")
    if cp_plan is None and getattr(model, "_cp_plan", None) is None:
        raise DeviceGroupError(f"{type(model).__name__} declares no _cp_plan: diffusers cannot split its sequence "
                               "without one (pass cp_plan)")
    config = context_parallel_config(world_size, ring=ring)
    model.enable_parallelism(config=config, cp_plan=cp_plan)
    return config
