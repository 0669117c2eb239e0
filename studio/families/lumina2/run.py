"""Running Lumina-Image 2.0 jobs: text-to-image through the pipeline's own loop, and anagrams in two
phases on its flow (Euler, as its pipeline samples). Images may cache steps (First Block Cache, its
calls named here: runtime/step_cache.py)."""

from __future__ import annotations

from typing import Any

import torch

from ...engines import anagram, lumina2_flow
from ...runtime.step_cache import step_cache
from ...tasks.anagram import run_anagram
from ...tasks.base import StepCallback, TaskOutput
from ...tasks.image import SAMPLER_NAMES, run_diffusers_image
from ...tasks.image_edit import run_image


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    if task == "image":
        def sample(job: Any, edit: Any, on_step: StepCallback) -> TaskOutput:
            used: dict[str, Any] = {}
            with step_cache(pipeline, job.option("speed"), "first_block", used, name_passes=True):
                output = run_diffusers_image(pipeline, job, on_step, edit)
            return TaskOutput(items=output.items, used={**output.used, **used})

        return run_image(spec, card, on_step, sample)
    if task == "anagram":
        # The anagram sampler's two phases (engines/anagram.py) on Lumina-Image 2.0's own flow, which runs
        # at any size: the same velocities in both, Euler as its pipeline samples.
        velocities = [lumina2_flow.make_velocity(pipeline, p, spec.negative_prompt, spec.cfg) for p in spec.styled()]
        model = anagram.vae_two_phase(
            init=velocities, refine=velocities,
            latents=lambda width, height, generator: lumina2_flow.initial_latents(pipeline, width, height, generator),
            vae=pipeline.vae, device=pipeline._execution_device, native=pipeline.default_image_size,
            width=spec.width, height=spec.height,
            multiple=pipeline.vae_scale_factor * pipeline.transformer.config.patch_size)
        output = run_anagram(model, spec, solver="euler", shift=spec.option("shift") or 1.0,
                             generator=torch.Generator(device="cpu").manual_seed(spec.seed), on_step=on_step,
                             sampler=SAMPLER_NAMES["euler"])
        pipeline.maybe_free_model_hooks()
        return output
    raise ValueError(f"Lumina-Image 2.0 does not run {task}")
