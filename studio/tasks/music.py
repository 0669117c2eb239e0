"""Music from text: prompt, length, guidance, seed and file format, plus steps and a negative prompt
for the diffusion models; the model's family runs it (studio.families: MusicGen, AudioLDM 2 music).
Outputs as in the Audio tab.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ..media import SavedFile
from ..zoo.cards import ModelCard
from .audio import check_length, save_waveforms
from .base import JobContext, StepCallback, TaskOutput, TaskSpec, run_family


class MusicSpec(TaskSpec):
    task: ClassVar[str] = "music"
    FALLBACKS: ClassVar[dict[str, Any]] = {"seconds": 10.0, "cfg": 3.0, "steps": 100}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "steps")

    seconds: float | None = Field(default=None, gt=0, le=600, allow_inf_nan=False)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    steps: int | None = Field(default=None, ge=1, le=1000)
    format: Literal["wav", "flac"] = "wav"

    def check_against(self, card: ModelCard) -> None:
        check_length(self.seconds, card)


class MusicTask:
    name = "music"
    spec_type = MusicSpec

    def working_bytes(self, spec: MusicSpec, card: ModelCard) -> int:
        return int(card.working_gb_per_mpx * 2**30 * spec.seconds / 60)

    def run(self, pipeline: Any, spec: MusicSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        return run_family(self.name, pipeline, spec, card, on_step)

    def save(self, output: TaskOutput, spec: MusicSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        return save_waveforms(self.name, output, spec, card, ctx, spec.format)
