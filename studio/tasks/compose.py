"""Compositional generation (Lumina-Next): one image from a grid of region captions.

The spec holds the grid (1x2 to 4x4, rows x columns), one caption per cell in reading order, and
the cell size; the canvas is derived from them. An empty caption is allowed: that cell is conditioned
on the empty prompt (the same text the unconditional branch gets with no negative), and the job says
which cells those were.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator

from ..engines import compose
from ..errors import InvalidInput
from ..media import SavedFile, format_infotext
from ..zoo.cards import ModelCard
from .base import JobContext, StepCallback, TaskOutput, TaskSpec, png_writer, save_all
from .image import SAMPLER_NAMES
from .lumina_options import LUMINA_NEXT_FAMILY, FlowSampling, family_fallbacks

MAX_GRID = 4


class ComposeSpec(FlowSampling, TaskSpec):
    task: ClassVar[str] = "compose"
    FALLBACKS: ClassVar[dict[str, Any]] = {"cell_width": 512, "cell_height": 512, "steps": 30, "cfg": 4.0}

    grid_rows: int = Field(ge=1, le=MAX_GRID)
    grid_cols: int = Field(ge=1, le=MAX_GRID)
    captions: list[str] = Field(max_length=MAX_GRID * MAX_GRID)
    cell_width: int | None = Field(default=None, gt=0)
    cell_height: int | None = Field(default=None, gt=0)
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

    @classmethod
    def fallbacks_for(cls, card: ModelCard) -> dict[str, Any]:
        return family_fallbacks(card, cls.FALLBACKS)

    def check_against(self, card: ModelCard) -> None:
        super().check_against(card)
        if card.family != LUMINA_NEXT_FAMILY:
            raise InvalidInput(f"compositional generation runs on Lumina-Next models, not on {card.title}")
        problem = card.size_problem(self.width, self.height)
        if problem:
            raise InvalidInput(f"The canvas {self.width}x{self.height} ({self.grid_rows}x{self.grid_cols} cells of "
                               f"{self.cell_width}x{self.cell_height}) is not possible: {problem}")
        if self.cell_width % compose.PATCH_PIXELS or self.cell_height % compose.PATCH_PIXELS:
            raise InvalidInput(f"cell sizes must be multiples of {compose.PATCH_PIXELS} so every cell is whole "
                               "image tokens")


class ComposeTask:
    name = "compose"
    spec_type = ComposeSpec

    def working_bytes(self, spec: ComposeSpec, card: ModelCard) -> int:
        # Cross-attention runs once per cell, but on the same tokens: the canvas size is what counts.
        return int(card.working_gb_per_mpx * spec.width * spec.height / 2**20 * 2**30)

    def run(self, pipeline: Any, spec: ComposeSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        images, evaluations = compose.sample(
            pipeline, captions=[c.strip() for c in spec.captions], negative_prompt=spec.negative_prompt,
            rows=spec.grid_rows, cols=spec.grid_cols, width=spec.width, height=spec.height,
            generator=torch.Generator(device="cpu").manual_seed(spec.seed), opts=spec.lumina_next_options(),
            on_step=on_step)
        used: dict[str, Any] = {"sampler": SAMPLER_NAMES[spec.solver], "model_evaluations": evaluations}
        empty = [i + 1 for i, c in enumerate(spec.captions) if not c.strip()]
        if empty:
            used["empty_cells"] = empty  # conditioned on the empty prompt
        return TaskOutput(items=images, used=used)

    def save(self, output: TaskOutput, spec: ComposeSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        captions = "\n".join(f"Cell {i + 1}: {c}" for i, c in enumerate(spec.captions))
        infotext = format_infotext(captions, spec.negative_prompt, {
            "Steps": spec.steps, "Sampler": output.used["sampler"], "CFG scale": spec.cfg, "Seed": spec.seed,
            "Size": f"{spec.width}x{spec.height}", "Model": card.id, "Grid": f"{spec.grid_rows}x{spec.grid_cols}",
            "Shift": spec.shift})

        return save_all([png_writer(self.name, image, spec, card, ctx, output.used, infotext)
                         for image in output.items])
