"""Running a CogVideoX job: the start image for image-to-video, the control clip for Fun control, and
step caching (TaylorSeer, lite)."""

from __future__ import annotations

from typing import Any

from ...runtime.step_cache import step_cache
from ...tasks.base import StepCallback, TaskOutput
from ...tasks.video import load_input_image, load_input_video, run_diffusers_video

IMAGE, CONTROL = "CogVideoXImageToVideoPipeline", "CogVideoXFunControlPipeline"


def takes(card: Any, task: str) -> list[str]:
    return ["negative_prompt", "speed", "loras", *(["image"] if card.pipeline == IMAGE else []),
            *(["control_video"] if card.pipeline == CONTROL else [])]


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    inputs: dict[str, Any] = {}
    if card.pipeline == IMAGE:
        inputs["image"] = load_input_image(spec.image, card)
    if card.pipeline == CONTROL:
        inputs["control_video"] = load_input_video(spec.control_video, spec.frames, spec.width, spec.height, card)
    # Fun control takes its length from the control clip.
    used: dict[str, Any] = {}
    with step_cache(pipeline, spec.option("speed"), "taylorseer", used):
        output = run_diffusers_video(pipeline, spec, on_step, inputs, num_frames=card.pipeline != CONTROL)
    return TaskOutput(items=output.items, used={**output.used, **used})
