"""AudioLDM 2 on diffusers' AudioLDM2Pipeline: 16 kHz mono sound (and music, with the music
checkpoint) from text through CLAP, Flan-T5 and a GPT-2 "language of audio"."""

from ..registry import Family, register

FAMILY = register(Family(
    name="audioldm2",
    title="AudioLDM 2",
    tasks=("audio", "music"),
    unused={"melody": "it follows text only"},
    run="studio.tasks.audio:run_diffusers_audio_job",
    builders={"tiny-audioldm2": "studio.zoo.builtin_audio:build_tiny_audioldm2"},
))
