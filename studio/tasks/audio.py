"""Sound from text: prompt, negative prompt, length, steps, guidance, seed, waveforms and file
format; the model's family runs it (studio.families: Stable Audio Open, AudioLDM 2).

Each model's longest clip (the card's `max_seconds`) is enforced with a clear message; a model that
makes one length only says so with `min_seconds` equal to it (Lumina-T2Audio's 9.984 s). Outputs per
waveform: the WAV or FLAC file (prompt in its title tag, job JSON in its comment) and a waveform picture.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from ..errors import InvalidInput
from ..media import SavedFile, format_infotext, output_relpath
from ..media_av import save_audio, waveform_picture
from ..zoo.cards import ModelCard
from .base import (JobContext, StepCallback, TaskOutput, TaskSpec, family_lines, job_json, png_writer, run_family,
                   save_all)


class AudioSpec(TaskSpec):
    task: ClassVar[str] = "audio"
    FALLBACKS: ClassVar[dict[str, Any]] = {"seconds": 10.0, "steps": 100, "cfg": 7.0}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "steps")

    seconds: float | None = Field(default=None, gt=0, le=600, allow_inf_nan=False)
    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    num_waveforms: int = Field(default=1, ge=1, le=4)
    format: Literal["wav", "flac"] = "wav"

    @classmethod
    def fixed_shape(cls, card: ModelCard) -> bool:
        return makes_one_length(card)

    def check_against(self, card: ModelCard) -> None:
        check_length(self.seconds, card)
        most = int(card.defaults.get("max_waveforms", 4))
        if self.num_waveforms > most:
            # AudioLDM2 ranks several waveforms with CLAP's audio branch, which needs librosa.
            raise InvalidInput(f"{card.title} makes {most} waveform{'s' if most > 1 else ''} per job; "
                               f"run the job again with another seed for more")


def check_length(seconds: float, card: ModelCard) -> None:
    cap = card.defaults.get("max_seconds")
    if cap is not None and seconds > float(cap):
        raise InvalidInput(f"{card.title} makes clips of at most {float(cap):g} s, got {seconds:g} s")


def length_range(card: ModelCard, longest: float) -> tuple[float, float]:
    """The shortest and longest clip the card's model makes, in seconds (`longest` when it says nothing):
    the Length slider's ends. Equal ends: the model makes that one length."""
    hi = float(card.defaults.get("max_seconds", longest))
    return min(float(card.defaults.get("min_seconds", 1.0)), hi), hi


def makes_one_length(card: ModelCard) -> bool:
    """Whether the model makes one clip length only (its card's `min_seconds` is its `max_seconds`)."""
    lo, hi = length_range(card, float("inf"))
    return lo == hi


def sample_rate_of(pipeline: Any) -> int:
    vocoder = getattr(pipeline, "vocoder", None)
    if vocoder is not None:
        return int(vocoder.config.sampling_rate)
    return int(pipeline.vae.sampling_rate)


def run_diffusers_audio(pipeline: Any, spec: Any, on_step: StepCallback) -> TaskOutput:
    """Stable Audio or AudioLDM2: `spec` has prompt, negative_prompt, seconds, steps, cfg, seed."""
    params = inspect.signature(pipeline.__call__).parameters
    length = {"audio_end_in_s" if "audio_end_in_s" in params else "audio_length_in_s": spec.seconds}
    result = pipeline(prompt=spec.prompt, negative_prompt=spec.negative_prompt or None,
                      num_inference_steps=spec.steps, guidance_scale=spec.cfg,
                      num_waveforms_per_prompt=getattr(spec, "num_waveforms", 1),
                      generator=torch.Generator(device="cpu").manual_seed(spec.seed), output_type="np",
                      callback=lambda step, _t, _latents: on_step(step + 1, spec.steps), callback_steps=1, **length)
    audios = [np.asarray(a, dtype=np.float32) for a in result.audios]
    return TaskOutput(items=[a if a.ndim == 2 else a[None] for a in audios],
                      used={"sampler": type(pipeline.scheduler).__name__, "sample_rate": sample_rate_of(pipeline)})


def run_diffusers_audio_job(task: str, pipeline: Any, spec: Any, card: ModelCard, on_step: StepCallback
                            ) -> TaskOutput:
    """The `run` hook of the diffusers audio families: their pipeline's own call."""
    return run_diffusers_audio(pipeline, spec, on_step)


def save_waveforms(task: str, output: TaskOutput, spec: Any, card: ModelCard, ctx: JobContext, fmt: str
                   ) -> list[SavedFile]:
    """Each waveform as an audio file followed by its waveform picture."""
    rate = output.used["sample_rate"]
    infotext = format_infotext(spec.prompt, spec.negative_prompt, {
        "Steps": getattr(spec, "steps", None), "Sampler": output.used.get("sampler"), "CFG scale": spec.cfg,
        "Seed": spec.seed, "Length": f"{spec.seconds:g}s", "Sample rate": rate, "Model": card.id,
        **family_lines(task, spec, card)})
    writers = []
    for wave in output.items:
        writers.append(lambda i, w=wave: save_audio(
            w, rate, ctx.outputs_dir, output_relpath(task, ctx.job_id, i, fmt, ctx.created_at), fmt=fmt,
            title=spec.prompt, job=job_json(task, i, spec, card, ctx, output.used)))
        writers.append(png_writer(task, waveform_picture(wave), spec, card, ctx, output.used, infotext,
                                  kind="waveform"))
    return save_all(writers)


class AudioTask:
    name = "audio"
    spec_type = AudioSpec

    def working_bytes(self, spec: AudioSpec, card: ModelCard) -> int:
        return int(card.working_gb_per_mpx * 2**30 * spec.seconds / 60 * spec.num_waveforms)

    def run(self, pipeline: Any, spec: AudioSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        return run_family(self.name, pipeline, spec, card, on_step)

    def save(self, output: TaskOutput, spec: AudioSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        return save_waveforms(self.name, output, spec, card, ctx, spec.format)
