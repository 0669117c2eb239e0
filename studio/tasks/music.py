"""Music from text: prompt, length, guidance, seed and file format, plus steps and a negative prompt
for the diffusion models, and a melody clip for the models that follow one (MusicGen Melody); the
model's family runs it (studio.families: MusicGen, AudioLDM 2 music). Outputs as in the Audio tab.

A melody is an uploaded audio file (WAV, FLAC, OGG or MP3), named in the job by its path, as the
Video tab's start image is. Before anything is decoded, the file's size (at most
`MAX_MELODY_BYTES`) and then its header (an audio format, a sane rate and channel count, at most
`MAX_MELODY_SECONDS`) are checked; decoding then stops at that length whatever the header said.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..errors import InvalidInput
from ..media import SavedFile
from ..zoo.cards import ModelCard
from .audio import check_length, makes_one_length, save_waveforms
from .base import JobContext, StepCallback, TaskOutput, TaskSpec, run_family

# MusicGen Melody conditions on the chroma of at most 30 s (its extractor's chunk_length and the
# model's chroma_length); a longer clip would be cut without a word, so it is refused instead.
MAX_MELODY_SECONDS = 30.0
# 30 s of 8 channels of 32-bit audio at 48 kHz is 46 MB; no sensible melody clip is bigger.
MAX_MELODY_BYTES = 64 * 2**20
MAX_MELODY_CHANNELS = 8
MELODY_RATES = (4000, 192_000)  # Hz
MELODY_FORMATS = "WAV, FLAC, OGG or MP3"


@dataclass(frozen=True)
class Melody:
    """A decoded melody clip: (channels, samples) float32 at `sample_rate`, and the file's name."""

    wave: np.ndarray
    sample_rate: int
    name: str

    @property
    def seconds(self) -> float:
        return self.wave.shape[-1] / self.sample_rate


def load_melody(path: str | None) -> Melody:
    """The uploaded melody clip, or InvalidInput saying what is wrong with it (missing, too big, not
    audio, too long, silent of samples). Its size and header are checked before any sample is decoded."""
    import soundfile as sf

    if not path:
        raise InvalidInput("no melody clip was given")
    file = Path(path)
    try:
        size = file.stat().st_size if file.is_file() else None
    except (OSError, ValueError):  # a name too long for the file system, say
        size = None
    if size is None:
        raise InvalidInput(f"the melody clip {file.name[:80]!r} is missing (upload it again)")
    if size > MAX_MELODY_BYTES:
        raise InvalidInput(f"the melody clip {file.name!r} is {size / 2**20:.0f} MB; the studio takes melody clips "
                           f"of at most {MAX_MELODY_BYTES // 2**20} MB ({MAX_MELODY_SECONDS:g} s of audio)")
    not_audio = InvalidInput(f"{file.name!r} is not an audio file the studio can read (use {MELODY_FORMATS})")
    try:
        with sf.SoundFile(str(file)) as clip:  # opening reads the header only
            rate, channels, frames = int(clip.samplerate), int(clip.channels), int(clip.frames)
            if not MELODY_RATES[0] <= rate <= MELODY_RATES[1]:
                raise InvalidInput(f"the melody clip {file.name!r} is sampled at {rate} Hz; the studio reads "
                                   f"{MELODY_RATES[0]} to {MELODY_RATES[1]} Hz")
            if not 1 <= channels <= MAX_MELODY_CHANNELS:
                raise InvalidInput(f"the melody clip {file.name!r} has {channels} channels; the studio reads 1 to "
                                   f"{MAX_MELODY_CHANNELS}")
            most = int(MAX_MELODY_SECONDS * rate)
            if frames > most:
                raise too_long(file.name, frames / rate)
            # At most one sample past the limit, whatever the header claimed.
            data = clip.read(frames=most + 1, dtype="float32", always_2d=True)
    except InvalidInput:
        raise
    except Exception:  # soundfile's LibsndfileError / RuntimeError for anything that is not audio
        raise not_audio from None
    if data.shape[0] > most:
        raise too_long(file.name, None)
    if data.shape[0] == 0:
        raise InvalidInput(f"the melody clip {file.name!r} holds no sound (0 samples)")
    if not np.isfinite(data).all():
        raise InvalidInput(f"the melody clip {file.name!r} has samples that are not numbers (NaN or infinite)")
    return Melody(wave=np.ascontiguousarray(data.T), sample_rate=rate, name=file.name)


def too_long(name: str, seconds: float | None) -> InvalidInput:
    length = f"is {seconds:.1f} s long" if seconds is not None else "is longer than that"
    return InvalidInput(f"the melody clip {name!r} {length}; a melody may be at most {MAX_MELODY_SECONDS:g} s: "
                        "trim it first")


class MusicSpec(TaskSpec):
    task: ClassVar[str] = "music"
    FALLBACKS: ClassVar[dict[str, Any]] = {"seconds": 10.0, "cfg": 3.0, "steps": 100}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "steps", "melody")
    FILES: ClassVar[tuple[str, ...]] = ("melody",)
    INPUTS: ClassVar[tuple[str, ...]] = ("melody",)
    REFUSALS: ClassVar[dict[str, str]] = {
        "melody": "{title} takes no melody clip: pick a model that follows one (MusicGen Melody)",
    }

    seconds: float | None = Field(default=None, gt=0, le=600, allow_inf_nan=False)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    steps: int | None = Field(default=None, ge=1, le=1000)
    format: Literal["wav", "flac"] = "wav"
    melody: str | None = None  # a melody clip to follow (MusicGen Melody): a local file path

    @classmethod
    def fixed_shape(cls, card: ModelCard) -> bool:
        return makes_one_length(card)

    def check_against(self, card: ModelCard) -> None:
        check_length(self.seconds, card)
        if self.melody:  # only a model that takes one gets here with it (resolved refuses the others)
            load_melody(self.melody)


class MusicTask:
    name = "music"
    spec_type = MusicSpec

    def working_bytes(self, spec: MusicSpec, card: ModelCard) -> int:
        return int(card.working_gb_per_mpx * 2**30 * spec.seconds / 60)

    def run(self, pipeline: Any, spec: MusicSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        return run_family(self.name, pipeline, spec, card, on_step)

    def save(self, output: TaskOutput, spec: MusicSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        return save_waveforms(self.name, output, spec, card, ctx, spec.format)
