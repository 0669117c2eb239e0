"""MusicGen (transformers' MusicgenForConditionalGeneration): music from text as EnCodec tokens,
sampled with a temperature and top-k (audiocraft's defaults: 1.0 and 250) and classifier-free
guidance against silence, so no negative prompt and no steps; 32 kHz, at most 30 s."""

from ..registry import Family, Option, register

FAMILY = register(Family(
    name="musicgen",
    title="MusicGen",
    tasks=("music",),
    step_unit="token steps",
    options=(
        Option("temperature", float, 1.0, label="Temperature", minimum=0, above_minimum=True, maximum=5,
               widget="slider", slider=(0.1, 2.0), step=0.05, infotext="Temperature", advanced=True),
        Option("top_k", int, 250, label="Top-k (0 = off)", minimum=0, maximum=10_000, widget="slider",
               slider=(0, 500), step=10, infotext="Top-k", advanced=True),
    ),
    unused={"negative_prompt": "its guidance is against silence; leave it empty",
            "steps": "it samples tokens; it has no denoising steps"},
    run="studio.families.musicgen.run:run",
    builders={"tiny-musicgen": "studio.zoo.builtin_audio:build_tiny_musicgen"},
))
