"""Default memory budgets, from Settings and the machine.

- Device budget: `--vram-budget` if given; on CUDA, what is free now plus what the studio itself
  holds (it could move that out); on the CPU the "device" is system RAM, so the RAM default applies.
- RAM budget for parked models: `--ram-budget` if given, else half the system RAM less 2 GB (at least
  4 GB), as InvokeAI sizes its model cache. On the CPU nothing is parked: RAM is where models run.
"""

from __future__ import annotations

from typing import Callable

import psutil

from ..settings import Settings

GB = 2**30


def default_ram_share() -> int:
    return max(4 * GB, psutil.virtual_memory().total // 2 - 2 * GB)


def device_budget(settings: Settings) -> int | Callable[[int], int] | None:
    if settings.vram_budget_gb is not None:
        return int(settings.vram_budget_gb * GB)
    device = settings.torch_device()
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


def ram_budget(settings: Settings) -> int:
    if settings.torch_device() == "cpu":
        return 0  # parked and placed are the same RAM on the CPU: keep nothing twice
    return int(settings.ram_budget_gb * GB) if settings.ram_budget_gb else default_ram_share()
