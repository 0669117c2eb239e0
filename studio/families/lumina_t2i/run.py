"""Running a Lumina-T2I job, and settling its parameters before validation: only the demo's sizes
(those the card lists, native and extrapolation) and at least two steps (N time points)."""

from __future__ import annotations

from typing import Any

from ...engines.solvers import steps_problem
from ...errors import InvalidInput
from ...runtime import preview
from ...tasks.base import StepCallback, TaskOutput
from ...tasks.image import SAMPLER_NAMES, seeded_generators
from ...tasks.image_edit import run_image


def prepare(card: Any, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Refuse, before the job is queued, a size the model has no setting for and a single step."""
    steps = params.get("steps")
    problem = steps_problem(steps, "Lumina-T2I") if isinstance(steps, int) and not isinstance(steps, bool) else None
    if problem:
        raise InvalidInput(problem)
    width = params.get("width") or card.defaults.get("width")
    height = params.get("height") or card.defaults.get("height")
    sizes = [*card.resolutions, *card.extrapolation]
    if width is not None and height is not None and sizes and f"{width}x{height}" not in sizes:
        raise InvalidInput(f"Size {width}x{height} is not one of {card.title}'s: {', '.join(card.resolutions)}, "
                           f"and beyond what it was trained at, {', '.join(card.extrapolation)}")
    return params


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    return run_image(spec, card, on_step, lambda job, edit, on_step: sample(pipeline, job, edit, on_step))


def sample(pipeline: Any, spec: Any, edit: Any, on_step: StepCallback) -> TaskOutput:
    from ...engines.lumina_t2i.pipeline import T2IOptions

    opts = T2IOptions(solver=spec.option("solver"), steps=spec.steps, shift=spec.option("shift"), cfg=spec.cfg,
                      ntk_scaling=spec.option("ntk_scaling"), proportional_attn=spec.option("proportional_attn"))
    # A generator per image (seed, seed+1, …): image k of a batch is the one its seed makes alone.
    images, result = pipeline(prompt=spec.prompt, negative_prompt=spec.negative_prompt or "", width=spec.width,
                              height=spec.height, opts=opts, generators=seeded_generators(spec.seed, spec.num_images),
                              on_step=on_step, edit=edit, on_latents=preview.hook(pipeline.vae))
    return TaskOutput(items=images, used={"sampler": SAMPLER_NAMES[opts.solver],
                                          "model_evaluations": result.evaluations, "solver_steps": result.solver_steps})
