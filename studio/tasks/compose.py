"""Compositional generation: one image from a grid of region captions (the families that declare
the task run it: Lumina-Next).

The spec holds the grid (1x2 to 4x4, rows x columns), one caption per cell in reading order, and
the cell size; the canvas is derived from them. An empty caption is allowed: that cell is conditioned
on the empty prompt (the same text the unconditional branch gets with no negative), and the job says
which cells those were.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from pydantic import Field, model_validator

from ..engines.compose import PATCH_PIXELS
from ..errors import InvalidInput
from ..media import SavedFile, format_infotext
from ..zoo.cards import ModelCard
from .base import JobContext, StepCallback, TaskOutput, TaskSpec, family_lines, png_writer, run_family, save_all

MAX_GRID = 4


class ComposeSpec(TaskSpec):
    task: ClassVar[str] = "compose"
    FALLBACKS: ClassVar[dict[str, Any]] = {"cell_width": 512, "cell_height": 512, "steps": 30, "cfg": 4.0}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "steps")

    grid_rows: int = Field(ge=1, le=MAX_GRID)
    grid_cols: int = Field(ge=1, le=MAX_GRID)
    captions: list[str] = Field(max_length=MAX_GRID * MAX_GRID)
    cell_width: int | None = Field(default=None, gt=0)
    cell_height: int | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    # The prompt the history shows and searches: the captions, cell by cell (derived, not an input).
    prompt: str = ""

    @model_validator(mode="before")
    @classmethod
    def _prompt_from_captions(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("captions"), list):
            data = {**data, "prompt": " | ".join(str(c).strip() for c in data["captions"])}
        return data

    @model_validator(mode="after")
    def _grid_matches(self) -> "ComposeSpec":
        cells = self.grid_rows * self.grid_cols
        if cells < 2:
            raise ValueError("a grid needs at least two cells (1x2 up to 4x4)")
        if len(self.captions) != cells:
            raise ValueError(f"a {self.grid_rows}x{self.grid_cols} grid has {cells} cells, so it needs {cells} "
                             f"captions (got {len(self.captions)})")
        if not any(c.strip() for c in self.captions):
            raise ValueError("every caption is empty: describe at least one cell")
        return self

    @property
    def width(self) -> int:
        return self.grid_cols * self.cell_width

    @property
    def height(self) -> int:
        return self.grid_rows * self.cell_height

    def check_against(self, card: ModelCard) -> None:
        problem = card.size_problem(self.width, self.height)
        if problem:
            raise InvalidInput(f"The canvas {self.width}x{self.height} ({self.grid_rows}x{self.grid_cols} cells of "
                               f"{self.cell_width}x{self.cell_height}) is not possible: {problem}")
        if self.cell_width % PATCH_PIXELS or self.cell_height % PATCH_PIXELS:
            raise InvalidInput(f"cell sizes must be multiples of {PATCH_PIXELS} so every cell is whole "
                               "image tokens")


class ComposeTask:
    name = "compose"
    spec_type = ComposeSpec

    def working_bytes(self, spec: ComposeSpec, card: ModelCard) -> int:
        # Cross-attention runs once per cell, but on the same tokens: the canvas size is what counts.
        return int(card.working_gb_per_mpx * spec.width * spec.height / 2**20 * 2**30)

    def run(self, pipeline: Any, spec: ComposeSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        output = run_family(self.name, pipeline, spec, card, on_step)
        empty = [i + 1 for i, c in enumerate(spec.captions) if not c.strip()]
        if empty:  # conditioned on the empty prompt
            output = dataclasses.replace(output, used={**output.used, "empty_cells": empty})
        return output

    def save(self, output: TaskOutput, spec: ComposeSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        captions = "\n".join(f"Cell {i + 1}: {c}" for i, c in enumerate(spec.captions))
        infotext = format_infotext(captions, spec.negative_prompt, {
            "Steps": spec.steps, "Sampler": output.used["sampler"], "CFG scale": spec.cfg, "Seed": spec.seed,
            "Size": f"{spec.width}x{spec.height}", "Model": card.id, "Grid": f"{spec.grid_rows}x{spec.grid_cols}",
            **family_lines(self.name, spec, card)})

        return save_all([png_writer(self.name, image, spec, card, ctx, output.used, infotext)
                         for image in output.items])
