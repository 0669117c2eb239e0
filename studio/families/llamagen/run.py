"""Running a LlamaGen job: one batch of `num_images` token grids (as the original samplers batch,
but each image drawn from its own seeded generator), progress once per row of image tokens."""

from __future__ import annotations

from typing import Any


from ...tasks.base import StepCallback, TaskOutput
from ...tasks.image import seeded_generators
from .prompting import takes_class

SAMPLER = "LlamaGen (autoregressive)"


def takes(card: Any, task: str) -> list[str]:
    """The token sampler's options; the class only for the class-conditional models."""
    return ["temperature", "top_k", "top_p", *(["class_id"] if takes_class(card) else [])]


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    # A generator per image (seed, seed+1, …): image k of a batch is the one its seed makes alone.
    generator = seeded_generators(spec.seed, spec.num_images)
    condition = ({"class_ids": [spec.option("class_id")] * spec.num_images} if pipeline.kind == "c2i"
                 else {"prompts": [spec.prompt] * spec.num_images})
    images = pipeline(**condition, cfg_scale=spec.cfg, temperature=spec.option("temperature"),
                      top_k=spec.option("top_k"), top_p=spec.option("top_p"), generator=generator,
                      on_progress=on_step)
    return TaskOutput(items=images, used={"sampler": SAMPLER, "image_tokens": pipeline.grid ** 2})
