"""Running Lumina-Next jobs: text-to-image, compositional grids and visual anagrams, with the
family's own sampling options turned into the engine's in one place."""

from __future__ import annotations

from typing import Any

import torch

from ...engines import anagram, compose, lumina_next, lumina_next_anagram
from ...engines.flow import Integration
from ...engines.lumina_next import LuminaNextOptions
from ...runtime import preview
from ...tasks.anagram import run_anagram
from ...tasks.base import StepCallback, TaskOutput
from ...tasks.image import SAMPLER_NAMES, seeded_generators
from ...tasks.image_edit import run_image


def sampling_options(spec: Any) -> LuminaNextOptions:
    """The spec's resolved sampling fields as the engine takes them."""
    return LuminaNextOptions(solver=spec.option("solver"), steps=spec.steps, shift=spec.option("shift"),
                             cfg=spec.cfg, cfg_mode=spec.option("cfg_mode"), rope_scaling=spec.option("rope_scaling"),
                             watershed=spec.option("watershed"), proportional_attn=spec.option("proportional_attn"))


def integration_used(sampler: str, result: Integration) -> dict[str, Any]:
    """What the job records of its sampling: the sampler, model evaluations and the solver's steps
    (the authors' N steps are N - 1 solver steps; an adaptive solver's are the steps it accepted)."""
    return {"sampler": sampler, "model_evaluations": result.evaluations, "solver_steps": result.solver_steps}


def anagram_flow(pipeline: Any, spec: Any, opts: LuminaNextOptions) -> anagram.TwoPhase:
    """How the anagram sampler drives Lumina-Next: the anagram fork's two phases, a velocity per
    reading in each (engines/lumina_next_anagram.py)."""
    return lumina_next_anagram.two_phase(pipeline, spec.styled(), spec.negative_prompt, spec.width, spec.height, opts,
                                         vae_tiles=bool(spec.option("vae_tiles", True)))


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)  # the same noise on every device
    opts = sampling_options(spec)
    sampler = SAMPLER_NAMES[opts.solver]
    if task == "image":
        def sample(job: Any, edit: Any, on_step: StepCallback) -> TaskOutput:
            images, result = lumina_next.sample(
                pipeline, prompt=job.prompt, negative_prompt=job.negative_prompt, width=job.width,
                height=job.height, num_images=job.num_images, generator=seeded_generators(job.seed, job.num_images),
                opts=sampling_options(job), on_step=on_step, edit=edit, on_latents=preview.hook(pipeline.vae))
            return TaskOutput(items=images, used=integration_used(sampler, result))

        return run_image(spec, card, on_step, sample)
    if task == "compose":
        images, result = compose.sample(
            pipeline, captions=[c.strip() for c in spec.captions], negative_prompt=spec.negative_prompt,
            rows=spec.grid_rows, cols=spec.grid_cols, width=spec.width, height=spec.height, generator=generator,
            opts=opts, on_step=on_step, scale_rope_to_canvas=bool(spec.option("canvas_rope_scaling")))
        return TaskOutput(items=images, used=integration_used(sampler, result))
    if task == "anagram":
        output = run_anagram(anagram_flow(pipeline, spec, opts), spec, solver=opts.solver, shift=opts.shift,
                             generator=generator, on_step=on_step, sampler=sampler)
        pipeline.maybe_free_model_hooks()
        return output
    raise ValueError(f"Lumina-Next does not run {task}")
