"""Default memory budgets, from Settings and the machine.

- Device budget: `--vram-budget` if given; on CUDA, what is free now plus what the studio itself
  holds (it could move that out); on the CPU the "device" is system RAM, so the RAM default applies.
- A device group (`cuda:0+cuda:1`, runtime/multi_gpu.py): each member's budget as a single GPU's
  (`--vram-budget` then applies to each GPU), and the group's is their sum.
- RAM budget for parked models: `--ram-budget` if given, else half the system RAM less 2 GB (at least
  4 GB), as InvokeAI sizes its model cache. On the CPU nothing is parked: RAM is where models run.
"""

from __future__ import annotations

from typing import Callable

import psutil

from ..settings import Settings
from . import multi_gpu

GB = 2**30

Budget = int | Callable[[int], int] | None


def default_ram_share() -> int:
    return max(4 * GB, psutil.virtual_memory().total // 2 - 2 * GB)


def device_budget(settings: Settings, device: str | None = None) -> Budget:
    """The budget of `device` (default: the settings' device); for a group, the sum of its members'."""
    device = settings.torch_device() if device is None else device
    if multi_gpu.is_group(device):
        members = member_budgets(settings, device)
        return None if any(m is None for m in members) else multi_gpu.group_total(members)  # type: ignore[arg-type]
    if settings.vram_budget_gb is not None:
        return int(settings.vram_budget_gb * GB)
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0

        def measured(held_by_studio: int) -> int:
            free, _total = torch.cuda.mem_get_info(index)
            return free + held_by_studio

        return measured
    if device == "cpu":
        return int(settings.ram_budget_gb * GB) if settings.ram_budget_gb else default_ram_share()
    return None


def member_budgets(settings: Settings, device: str | None = None) -> list[Budget]:
    """One budget per member of a device group (a one-item list for a single device). A measured member
    counts what this process has allocated on that GPU as its own (multi_gpu.measured_member_budget)."""
    device = settings.torch_device() if device is None else device
    members = multi_gpu.parse_device_group(device)
    if len(members) == 1:
        return [device_budget(settings, device)]
    if settings.vram_budget_gb is not None:
        return [int(settings.vram_budget_gb * GB)] * len(members)
    return [multi_gpu.measured_member_budget(m) for m in members]


def ram_budget(settings: Settings, device: str | None = None) -> int:
    device = settings.torch_device() if device is None else device
    if device == "cpu":
        return 0  # parked and placed are the same RAM on the CPU: keep nothing twice
    return int(settings.ram_budget_gb * GB) if settings.ram_budget_gb else default_ram_share()
