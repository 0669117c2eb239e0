"""How much memory a pipeline needs, measured from its tensors (never guessed from a card).

`Footprint` holds the bytes of every torch component of a pipeline, and how much of it must be on
the device at once under each placement: everything (full), the largest component (model offload),
the largest block group (group offload) or the largest leaf module (sequential offload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .placement import Placement


def tensor_bytes(module: torch.nn.Module, recurse: bool = True) -> int:
    total = sum(p.numel() * p.element_size() for p in module.parameters(recurse=recurse))
    return total + sum(b.numel() * b.element_size() for b in module.buffers(recurse=recurse))


def _largest_block(module: torch.nn.Module) -> int:
    """Bytes onloaded at once by block-level group offload: the biggest entry of any ModuleList,
    plus everything outside ModuleLists (which diffusers onloads as one group)."""
    in_lists: set[int] = set()
    largest = 0
    for child in module.modules():
        if isinstance(child, torch.nn.ModuleList):
            for block in child:
                in_lists.update(id(t) for t in block.parameters())
                in_lists.update(id(t) for t in block.buffers())
                largest = max(largest, tensor_bytes(block))
    rest = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()] if id(t) not in in_lists)
    return largest + rest


def _largest_leaf(module: torch.nn.Module) -> int:
    leaves = [tensor_bytes(m, recurse=False) for m in module.modules()]
    return max(leaves, default=0)


def torch_components(pipeline: Any) -> dict[str, torch.nn.Module]:
    components = getattr(pipeline, "components", {}) or {}
    return {name: c for name, c in components.items() if isinstance(c, torch.nn.Module)}


@dataclass(frozen=True)
class Footprint:
    components: dict[str, int]  # component name -> bytes
    largest_block: int
    largest_leaf: int

    @classmethod
    def measure(cls, pipeline: Any) -> "Footprint":
        modules = torch_components(pipeline)
        return cls(
            components={name: tensor_bytes(m) for name, m in modules.items()},
            largest_block=max((_largest_block(m) for m in modules.values()), default=0),
            largest_leaf=max((_largest_leaf(m) for m in modules.values()), default=0),
        )

    @property
    def total(self) -> int:
        return sum(self.components.values())

    def device_bytes(self, placement: Placement) -> int:
        """Bytes of weights on the device at the peak of a run under `placement`."""
        if placement is Placement.FULL:
            return self.total
        if placement is Placement.MODEL_OFFLOAD:
            return max(self.components.values(), default=0)
        if placement is Placement.GROUP_OFFLOAD:
            return self.largest_block
        return self.largest_leaf
