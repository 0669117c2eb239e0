"""Torch modules shaped like a diffusers pipeline, so the MemoryScheduler places them the same way.

The scheduler places pipelines through `components`, `.to()`, model offload hooks and group offload.
A native engine (LlamaGen) is a few torch modules plus a tokenizer, and MusicGen and its kin are a
transformers model plus a processor (runtime.bundle.TransformersBundle); `ModuleBundle` gives both
that surface. Model offload chains accelerate's hooks over the modules in order, as diffusers itself
does it: each module moves to the device when its forward runs and the one before it moves back.
"""

from __future__ import annotations

from typing import Any

import torch


class ModuleBundle:
    """Named components (torch modules and anything else, e.g. a tokenizer), in the order they run."""

    def __init__(self, **components: Any) -> None:
        self._components = dict(components)
        self._hooked: list[torch.nn.Module] = []
        self._hooks: list[Any] = []
        # Where the modules compute: their own device when fully placed, the offload target otherwise.
        self.execution_device: torch.device | None = None

    def __getattr__(self, name: str) -> Any:
        components = self.__dict__.get("_components", {})
        if name in components:
            return components[name]
        raise AttributeError(name)

    @property
    def components(self) -> dict[str, Any]:
        return dict(self._components)

    def _modules(self) -> list[torch.nn.Module]:
        return [c for c in self._components.values() if isinstance(c, torch.nn.Module)]

    @property
    def device(self) -> torch.device:
        if self.execution_device is not None:
            return self.execution_device
        return next(self._modules()[0].parameters()).device

    def placed_on(self, device: Any) -> None:
        """Told by the placement code where an offloaded run computes."""
        self.execution_device = torch.device(device)

    def to(self, device: Any) -> "ModuleBundle":
        for module in self._modules():
            module.to(device)
        self.execution_device = torch.device(device)
        return self

    def enable_model_cpu_offload(self, device: Any = None) -> None:
        from accelerate import cpu_offload_with_hook

        target = torch.device(device if device is not None else "cuda")
        hook = None
        for module in self._modules():
            _, hook = cpu_offload_with_hook(module, execution_device=target, prev_module_hook=hook)
            self._hooked.append(module)
            self._hooks.append(hook)
        self.execution_device = target

    def offload_all(self) -> None:
        """After a run under model offload: move the module that ran last back to RAM too (each hook
        only moves the one before it), as diffusers' maybe_free_model_hooks does."""
        for hook in self._hooks:
            hook.offload()

    def remove_all_hooks(self) -> None:
        from accelerate.hooks import remove_hook_from_module

        for module in self._hooked:
            remove_hook_from_module(module, recurse=True)
        self._hooked, self._hooks = [], []

    def set_progress_bar_config(self, **_: Any) -> None:
        return None
