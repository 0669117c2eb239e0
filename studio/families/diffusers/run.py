"""Running a plain diffusers pipeline: its own call with the job's common fields."""

from __future__ import annotations

from typing import Any

from ...tasks.base import StepCallback, TaskOutput
from ...tasks.image import run_diffusers_image
from ...tasks.video import run_diffusers_video


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    if task == "image":
        return run_diffusers_image(pipeline, spec, on_step)
    if task == "video":
        return run_diffusers_video(pipeline, spec, on_step, {})
    raise ValueError(f"a plain diffusers pipeline does not run {task} here")
