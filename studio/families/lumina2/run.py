"""Running Lumina-Image 2.0 jobs: text-to-image through the pipeline's own loop, and anagrams on its
flow (Euler, as its pipeline samples)."""

from __future__ import annotations

from typing import Any

import torch

from ...engines import anagram, lumina2_flow
from ...tasks.anagram import run_anagram
from ...tasks.base import StepCallback, TaskOutput
from ...tasks.image import SAMPLER_NAMES, run_diffusers_image


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    if task == "image":
        return run_diffusers_image(pipeline, spec, on_step)
    if task == "anagram":
        flow = anagram.Flow(
            velocities=[lumina2_flow.make_velocity(pipeline, p, spec.negative_prompt, spec.cfg) for p in spec.styled()],
            initial_latents=lambda generator: lumina2_flow.initial_latents(pipeline, spec.width, spec.height,
                                                                           generator),
            decode=lambda latents: lumina2_flow.decode(pipeline, latents))
        return run_anagram(flow, spec, solver="euler", shift=spec.option("shift") or 1.0,
                           generator=torch.Generator(device="cpu").manual_seed(spec.seed), on_step=on_step,
                           sampler=SAMPLER_NAMES["euler"])
    raise ValueError(f"Lumina-Image 2.0 does not run {task}")
