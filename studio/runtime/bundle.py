"""A transformers model and its processor, shaped like a diffusers pipeline for the scheduler.

The MemoryScheduler places pipelines through `components`, `.to()`, model offload hooks and group
offload; MusicGen and its kin are a transformers model plus a processor, so this wrapper gives them
the same surface (model offload through accelerate's hook, as diffusers itself does it).
"""

from __future__ import annotations

from typing import Any

import torch


class TransformersBundle:
    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self._hook: Any = None

    @property
    def components(self) -> dict[str, Any]:
        return {"model": self.model, "processor": self.processor}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: Any) -> "TransformersBundle":
        self.model.to(device)
        return self

    def enable_model_cpu_offload(self, device: Any = None) -> None:
        from accelerate import cpu_offload_with_hook

        # On the device while it runs; moved back by remove_all_hooks / the next model's hook.
        self.model, self._hook = cpu_offload_with_hook(self.model, execution_device=device)

    def remove_all_hooks(self) -> None:
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(self.model, recurse=True)
        self._hook = None

    def set_progress_bar_config(self, **_: Any) -> None:
        return None
