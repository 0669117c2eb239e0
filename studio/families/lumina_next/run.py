"""Running Lumina-Next jobs: text-to-image, compositional grids and visual anagrams, with the
family's own sampling options turned into the engine's in one place."""

from __future__ import annotations

from typing import Any

import torch

from ...engines import anagram, compose, lumina_next
from ...engines.lumina_next import LuminaNextOptions
from ...tasks.anagram import run_anagram
from ...tasks.base import StepCallback, TaskOutput
from ...tasks.image import SAMPLER_NAMES, seeded_generators


def sampling_options(spec: Any) -> LuminaNextOptions:
    """The spec's resolved sampling fields as the engine takes them."""
    return LuminaNextOptions(solver=spec.option("solver"), steps=spec.steps, shift=spec.option("shift"),
                             cfg=spec.cfg, cfg_mode=spec.option("cfg_mode"), rope_scaling=spec.option("rope_scaling"),
                             watershed=spec.option("watershed"), proportional_attn=spec.option("proportional_attn"))


def anagram_flow(pipeline: Any, spec: Any, opts: LuminaNextOptions) -> anagram.Flow:
    """How the anagram sampler drives Lumina-Next: a velocity per reading, first latents, decoding."""
    velocities, dtype = [], None
    for prompt in spec.styled():
        feats, mask = lumina_next.encode(pipeline, [prompt], spec.negative_prompt, 1, opts.cfg > 1.0)
        velocities.append(lumina_next.make_velocity(pipeline, feats, mask, spec.width, spec.height, opts))
        dtype = feats.dtype
    return anagram.Flow(
        velocities=velocities,
        initial_latents=lambda generator: lumina_next.initial_latents(pipeline, 1, spec.width, spec.height, dtype,
                                                                      generator),
        decode=lambda latents: lumina_next.decode(pipeline, latents))


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)  # the same noise on every device
    opts = sampling_options(spec)
    sampler = SAMPLER_NAMES[opts.solver]
    if task == "image":
        images, evaluations = lumina_next.sample(
            pipeline, prompt=spec.prompt, negative_prompt=spec.negative_prompt, width=spec.width,
            height=spec.height, num_images=spec.num_images, generator=seeded_generators(spec.seed, spec.num_images),
            opts=opts, on_step=on_step)
        return TaskOutput(items=images, used={"sampler": sampler, "model_evaluations": evaluations})
    if task == "compose":
        images, evaluations = compose.sample(
            pipeline, captions=[c.strip() for c in spec.captions], negative_prompt=spec.negative_prompt,
            rows=spec.grid_rows, cols=spec.grid_cols, width=spec.width, height=spec.height, generator=generator,
            opts=opts, on_step=on_step)
        return TaskOutput(items=images, used={"sampler": sampler, "model_evaluations": evaluations})
    if task == "anagram":
        return run_anagram(anagram_flow(pipeline, spec, opts), spec, solver=opts.solver, shift=opts.shift,
                           generator=generator, on_step=on_step, sampler=sampler)
    raise ValueError(f"Lumina-Next does not run {task}")
