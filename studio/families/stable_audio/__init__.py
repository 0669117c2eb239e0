"""Stable Audio Open on diffusers' StableAudioPipeline: 44.1 kHz stereo sound from text, up to the
card's `max_seconds`."""

from ..registry import Family, register

FAMILY = register(Family(
    name="stable-audio",
    title="Stable Audio Open",
    tasks=("audio",),
    run="studio.tasks.audio:run_diffusers_audio_job",
    builders={"tiny-stable-audio": "studio.zoo.builtin_audio:build_tiny_stable_audio"},
))
