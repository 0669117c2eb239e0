"""The sampling controls Lumina-Next's tasks share (image, compositional, anagrams): one definition,
one set of defaults (the Lumina-Next demo's), turned into the engine's options in one place."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..engines.flow import SOLVERS
from ..engines.lumina_next import LuminaNextOptions
from ..errors import InvalidInput
from ..zoo.cards import ModelCard

LUMINA_NEXT_FAMILY = "lumina-next"
LUMINA_NEXT_DEFAULTS: dict[str, Any] = {"solver": "midpoint", "shift": 4.0, "rope_scaling": "time_aware",
                                        "watershed": 0.3, "proportional_attn": True, "cfg_mode": "lumina"}
LUMINA_NEXT_ONLY = ("solver", "rope_scaling", "watershed", "proportional_attn", "cfg_mode")


class FlowSampling(BaseModel):
    """Steps, guidance and the flow schedule, plus Lumina-Next's own options (None elsewhere)."""

    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    # The flow-matching time shift; None keeps the scheduler's own (from the card or the checkpoint).
    shift: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    solver: Literal[SOLVERS] | None = None  # type: ignore[valid-type]
    rope_scaling: Literal["time_aware", "none"] | None = None
    watershed: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    proportional_attn: bool | None = None
    cfg_mode: Literal["lumina", "plain"] | None = None

    def lumina_next_options(self) -> LuminaNextOptions:
        return LuminaNextOptions(solver=self.solver, steps=self.steps, shift=self.shift, cfg=self.cfg,
                                 cfg_mode=self.cfg_mode, rope_scaling=self.rope_scaling, watershed=self.watershed,
                                 proportional_attn=self.proportional_attn)


def family_fallbacks(card: ModelCard, fallbacks: dict[str, Any]) -> dict[str, Any]:
    return {**fallbacks, **LUMINA_NEXT_DEFAULTS} if card.family == LUMINA_NEXT_FAMILY else fallbacks


def refuse_lumina_next_options(spec: FlowSampling, card: ModelCard) -> None:
    if card.family != LUMINA_NEXT_FAMILY:
        used = [name for name in LUMINA_NEXT_ONLY if getattr(spec, name) is not None]
        if used:
            raise InvalidInput(f"{', '.join(used)}: Lumina-Next's sampling options apply to Lumina-Next models "
                               f"only, not to {card.title}")
