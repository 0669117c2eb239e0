"""Running a Lumina-T2Audio / T2Music job, and settling its parameters before validation: the
model's one clip length, at least two steps (N time points), sound events that parse."""

from __future__ import annotations

import math
from typing import Any

from ...errors import InvalidInput
from ...tasks.base import StepCallback, TaskOutput

# A typed length this close to the model's is taken as the model's (10 s for 9.984 s).
LENGTH_TOLERANCE_S = 0.05


def prepare(card: Any, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Refuse, before the job is queued, a length the model cannot make, one step, and sound events
    that do not parse; a length within LENGTH_TOLERANCE_S of the model's is set to it exactly."""
    from ...engines.lumina_audio.options import model_seconds

    if "component" in card.tasks:
        return params
    fixed = model_seconds(card)
    seconds = params.get("seconds")
    if fixed is not None and seconds is not None:
        if not math.isclose(float(seconds), fixed, abs_tol=LENGTH_TOLERANCE_S):
            raise InvalidInput(f"{card.title} makes clips of {fixed:g} s only (its latent has a fixed length), "
                               f"got {float(seconds):g} s")
        params["seconds"] = fixed
    steps = params.get("steps")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps < 2:
        raise InvalidInput(f"steps: {card.title} needs at least 2 (got {steps}): N steps are N time points "
                           "from noise to sound, N - 1 Euler steps between them")
    events = params.get("sound_events")
    if task == "audio" and isinstance(events, str) and events.strip():
        from ...engines.lumina_audio.text import parse_struct_caption

        parse_struct_caption(events)
    return params


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    from ...engines.lumina_audio.pipeline import AudioOptions
    from ...tasks.image import seeded_generators

    opts = AudioOptions(steps=spec.steps, cfg=spec.cfg, sound_events=spec.option("sound_events") or "")
    # A generator per waveform (seed, seed+1, …): waveform k is the one its seed makes alone.
    count = getattr(spec, "num_waveforms", 1)
    result = pipeline(prompt=spec.prompt, opts=opts, generators=seeded_generators(spec.seed, count), on_step=on_step)
    used: dict[str, Any] = {"sampler": "Euler", "sample_rate": result.sample_rate, "solver_steps": result.solver_steps,
                            "unconditional": "empty prompt"}
    if result.struct_caption is not None:
        used["struct_caption"] = result.struct_caption
    return TaskOutput(items=result.waveforms, used=used)
