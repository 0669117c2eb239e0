"""Running an Infinity job: one batch of `num_images` pictures (each from its own seeded generator),
progress once per scale; and settling its size before validation (only the model's templates)."""

from __future__ import annotations

from typing import Any

from ...engines.infinity.options import TransformerFiles, engine_options
from ...engines.infinity.schedules import ratio_for, schedule, size_names
from ...errors import InvalidInput
from ...tasks.base import StepCallback, TaskOutput
from ...tasks.image import seeded_generators

SAMPLER = "Infinity (bitwise VAR)"


def _budget(card: Any) -> str:
    files = engine_options(card)
    if not isinstance(files, TransformerFiles):
        raise InvalidInput(f"{card.title} is a component of an Infinity model, not a model to run")
    return files.pn


def prepare(card: Any, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Refuse, before the job is queued, a size that is not one of the model's aspect-ratio templates."""
    width = params.get("width") or card.defaults.get("width")
    height = params.get("height") or card.defaults.get("height")
    if width is None or height is None:
        return params
    budget = _budget(card)
    if ratio_for(int(width), int(height), budget) is None:
        raise InvalidInput(f"Size {width}x{height} is not possible: {card.title} makes one size per aspect ratio "
                           f"({budget} pixels): {', '.join(size_names(budget))}")
    return params


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    # A generator per image (seed, seed+1, …): image k of a batch is the one its seed makes alone.
    generators = seeded_generators(spec.seed, spec.num_images)
    images = pipeline(prompts=[spec.prompt] * spec.num_images, width=spec.width, height=spec.height, cfg=spec.cfg,
                      tau=spec.option("tau"), top_k=spec.option("top_k"), top_p=spec.option("top_p"),
                      negative_prompt=spec.negative_prompt or None, generators=generators, on_progress=on_step)
    grids = schedule(ratio_for(spec.width, spec.height, pipeline.pn), pipeline.pn)
    return TaskOutput(items=images, used={"sampler": SAMPLER, "scales": len(grids),
                                          "infotext": {"Scales": len(grids), "VAE": pipeline.vae_name}})
