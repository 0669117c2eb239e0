"""A transformers model and its processor as a pipeline-shaped ModuleBundle (engines.bundle), so the
MemoryScheduler places MusicGen and its kin the way it places diffusers pipelines.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engines.bundle import ModuleBundle


class TransformersBundle(ModuleBundle):
    """A transformers model and its processor (MusicGen and its kin)."""

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        super().__init__(model=model, processor=processor)

    @property
    def device(self) -> torch.device:
        # Where the weights are, not where an offloaded run computes: generate() runs the text encoder
        # directly, before any hook on the whole model has moved it, so inputs must start beside it.
        return next(self.model.parameters()).device
