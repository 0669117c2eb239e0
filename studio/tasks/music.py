"""Music from text: MusicGen (transformers; 32 kHz, at most 30 s) and AudioLDM2-music (diffusers).

MusicGen samples tokens (temperature, top-k, classifier-free guidance) and reports progress per
token block; AudioLDM2-music denoises like the Audio tab's models. Outputs as in the Audio tab.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from ..errors import InvalidInput
from ..media import SavedFile
from ..zoo.cards import ModelCard
from .audio import check_length, run_diffusers_audio, save_waveforms
from .base import JobContext, StepCallback, TaskOutput, TaskSpec


class MusicSpec(TaskSpec):
    task: ClassVar[str] = "music"
    FALLBACKS: ClassVar[dict[str, Any]] = {"seconds": 10.0, "cfg": 3.0, "steps": 100}

    seconds: float | None = Field(default=None, gt=0, le=600, allow_inf_nan=False)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    steps: int | None = Field(default=None, ge=1, le=1000)  # diffusion models only
    temperature: float = Field(default=1.0, gt=0, le=5, allow_inf_nan=False)  # token models only
    top_k: int = Field(default=250, ge=0, le=10_000)  # token models only (0 = no cut)
    format: Literal["wav", "flac"] = "wav"

    def check_against(self, card: ModelCard) -> None:
        super().check_against(card)
        check_length(self.seconds, card)
        if card.library == "transformers" and self.negative_prompt.strip():
            raise InvalidInput(f"{card.title} has no negative prompt: its guidance is against silence; "
                               "leave it empty")


class _TokenProgress:
    """A transformers streamer that counts generated token steps for the progress bar."""

    def __init__(self, total: int, on_step: StepCallback) -> None:
        self.total, self.on_step, self.done = total, on_step, -1  # the first put() is the prompt

    def put(self, _value: Any) -> None:
        self.done += 1
        if self.done > 0:
            self.on_step(min(self.done, self.total), self.total)

    def end(self) -> None:
        self.on_step(self.total, self.total)


class MusicTask:
    name = "music"
    spec_type = MusicSpec

    def working_bytes(self, spec: MusicSpec, card: ModelCard) -> int:
        return int(card.working_gb_per_mpx * 2**30 * spec.seconds / 60)

    def run(self, pipeline: Any, spec: MusicSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        if card.library != "transformers":
            return run_diffusers_audio(pipeline, spec, on_step)
        model, processor = pipeline.model, pipeline.processor
        encoder = model.config.audio_encoder
        # The codebooks are interleaved with a delay: the first num_codebooks - 1 steps make no audio frame.
        tokens = max(1, int(round(spec.seconds * encoder.frame_rate))) + model.decoder.config.num_codebooks - 1
        inputs = processor(text=[spec.prompt], padding=True, return_tensors="pt").to(pipeline.device)
        torch.manual_seed(spec.seed)  # generate() samples from the global generator
        with torch.no_grad():
            audio = model.generate(**inputs, do_sample=True, guidance_scale=spec.cfg, max_new_tokens=tokens,
                                   temperature=spec.temperature, top_k=spec.top_k or None,
                                   streamer=_TokenProgress(tokens, on_step))
        wave = audio[0].float().cpu().numpy()
        return TaskOutput(items=[np.asarray(wave, dtype=np.float32)],
                          used={"sampler": "sampling", "sample_rate": int(encoder.sampling_rate), "tokens": tokens})

    def save(self, output: TaskOutput, spec: MusicSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        return save_waveforms(self.name, output, spec, card, ctx, spec.format)
