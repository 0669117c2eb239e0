"""How much memory a pipeline needs, measured from its tensors (never guessed from a card).

`Footprint` holds the bytes of every torch component of a pipeline, and how much of it must be on
the device at once under each placement: everything (full), the largest component (model offload),
the largest block group as diffusers forms them (group offload) or the largest leaf module (sequential offload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .placement import Placement, torch_components


def storage_bytes(tensor: torch.Tensor) -> int:
    """The bytes a tensor really holds. A tensor subclass that wraps others (torchao's quantized weights:
    int8 or float8 data plus scales) reports its logical dtype's size; its inner tensors are counted
    instead. A GGUF weight (diffusers' GGUFParameter) is its packed uint8 blocks already."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _context = tensor.__tensor_flatten__()
        inner = (getattr(tensor, name, None) for name in names)
        return sum(storage_bytes(t) for t in inner if isinstance(t, torch.Tensor))
    return tensor.numel() * tensor.element_size()


def tensor_bytes(module: torch.nn.Module, recurse: bool = True) -> int:
    total = sum(storage_bytes(p) for p in module.parameters(recurse=recurse))
    return total + sum(storage_bytes(b) for b in module.buffers(recurse=recurse))


def _own_bytes(module: torch.nn.Module) -> int:
    """`tensor_bytes(module, recurse=False)`, read from the module's own tables: a generator walk per module
    made measuring a big model's leaves cost more than loading it from the page cache."""
    own = (*module._parameters.values(), *module._buffers.values())
    return sum(storage_bytes(t) for t in own if t is not None)


def _largest_block(module: torch.nn.Module) -> int:
    """Bytes onloaded at once by diffusers' block-level group offload (one block per group).

    diffusers splits only a module's direct ModuleList/Sequential children into groups (and, recursively,
    the children named in its `_group_offload_block_modules`); everything else at that level is one
    group, on the device for the module's whole forward. So the peak is that rest plus the largest
    block. A text encoder whose layers sit deeper (T5's `encoder.block`) goes on the device whole.
    """
    return _block_level_peak(module, set(getattr(module, "_group_offload_block_modules", None) or ()))


def _block_level_peak(module: torch.nn.Module, block_modules: set[str]) -> int:
    rest = _own_bytes(module)
    inner = 0
    for name, child in module.named_children():
        if name in block_modules:
            inner = max(inner, _block_level_peak(child, block_modules))
        elif isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
            inner = max(inner, max((tensor_bytes(block) for block in child), default=0))
        else:
            rest += tensor_bytes(child)
    return rest + inner


def _largest_leaf(module: torch.nn.Module) -> int:
    leaves = [_own_bytes(m) for m in module.modules()]
    return max(leaves, default=0)


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
