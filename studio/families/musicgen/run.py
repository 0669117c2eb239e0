"""Running a MusicGen job: `generate()` with sampling, classifier-free guidance and a token budget
for the asked length; progress once per token step. A MusicGen Melody job with a melody clip also
gives the model the clip's chromagram as `input_features` (without one, the model's own null melody)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ...tasks.base import StepCallback, TaskOutput
from ...tasks.music import load_melody


class TokenProgress(StoppingCriteria):
    """Counts generated token steps for the progress bar. A stopping criterion, because generate()
    asks those after every step (MusicGen's generate() does not feed a streamer step by step); it
    never stops anything itself: the token budget does."""

    def __init__(self, total: int, on_step: StepCallback) -> None:
        self.total, self.on_step, self.done = total, on_step, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
        self.done += 1
        self.on_step(min(self.done, self.total), self.total)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    model, processor = pipeline.model, pipeline.processor
    encoder = model.config.audio_encoder
    # The codebooks are interleaved with a delay: the first num_codebooks - 1 steps make no audio frame.
    tokens = max(1, int(round(spec.seconds * encoder.frame_rate))) + model.decoder.config.num_codebooks - 1
    inputs = processor(text=[spec.prompt], padding=True, return_tensors="pt").to(pipeline.device)
    used: dict[str, Any] = {"sampler": "sampling", "sample_rate": int(encoder.sampling_rate), "tokens": tokens}
    melody = getattr(spec, "melody", None)
    if melody:
        chroma = getattr(processor, "chroma", None)
        if chroma is None:  # resolved() refuses a melody for these; a model loaded some other way
            raise ValueError(f"{card.title} was loaded without a chroma extractor, so it cannot follow a melody")
        clip = load_melody(melody)
        features = chroma(clip.wave, clip.sample_rate)
        inputs["input_features"] = features.to(pipeline.device, dtype=model.dtype)
        used.update(melody=Path(melody).name, melody_seconds=round(min(clip.seconds, chroma.chunk_length), 3),
                    chroma_frames=int(features.shape[1]))
    torch.manual_seed(spec.seed)  # generate() samples from the global generator
    with torch.no_grad():
        audio = model.generate(**inputs, do_sample=True, guidance_scale=spec.cfg, max_new_tokens=tokens,
                               temperature=spec.option("temperature"), top_k=spec.option("top_k") or None,
                               stopping_criteria=StoppingCriteriaList([TokenProgress(tokens, on_step)]))
    wave = audio[0].float().cpu().numpy()
    return TaskOutput(items=[np.asarray(wave, dtype=np.float32)], used=used)
