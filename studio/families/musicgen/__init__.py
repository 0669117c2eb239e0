"""MusicGen (transformers' MusicgenForConditionalGeneration): music from text as EnCodec tokens,
sampled with a temperature and top-k (audiocraft's defaults: 1.0 and 250) and classifier-free
guidance against silence, so no negative prompt and no steps; 32 kHz, at most 30 s.

MusicGen Melody (MusicgenMelodyForConditionalGeneration) also takes an optional melody clip: its
chromagram (studio.engines.chroma, as transformers' feature extractor computes it) conditions the
decoder beside the text. Which cards take one is the card's model class (`takes`)."""

from typing import Any

from ..registry import Family, Option, register

MELODY = "MusicgenMelodyForConditionalGeneration"

OPTIONS = (
    Option("temperature", float, 1.0, label="Temperature", minimum=0, above_minimum=True, maximum=5,
           widget="slider", slider=(0.1, 2.0), step=0.05, infotext="Temperature", advanced=True),
    Option("top_k", int, 250, label="Top-k (0 = off)", minimum=0, maximum=10_000, widget="slider",
           slider=(0, 500), step=10, infotext="Top-k", advanced=True),
)


def takes(card: Any, task: str) -> list[str]:
    """The sampling options, and a melody clip for the melody models."""
    return [option.name for option in OPTIONS] + (["melody"] if card.pipeline == MELODY else [])


FAMILY = register(Family(
    name="musicgen",
    title="MusicGen",
    tasks=("music",),
    step_unit="token steps",
    options=OPTIONS,
    unused={"negative_prompt": "its guidance is against silence; leave it empty",
            "steps": "it samples tokens; it has no denoising steps"},
    run="studio.families.musicgen.run:run",
    takes="studio.families.musicgen:takes",
    processor="studio.families.musicgen.melody:processor",
    builders={"tiny-musicgen": "studio.zoo.builtin_audio:build_tiny_musicgen",
              "tiny-musicgen-melody": "studio.zoo.builtin_audio:build_tiny_musicgen_melody"},
))
