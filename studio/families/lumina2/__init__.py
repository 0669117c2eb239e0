"""Lumina-Image 2.0 on diffusers' Lumina2Pipeline: its own Euler flow with normalised CFG, and the
flow-matching time shift as its one option (the scheduler's own when unset). It also runs anagrams."""

from ..registry import Family, Option, register

FAMILY = register(Family(
    name="lumina2",
    title="Lumina-Image 2.0",
    tasks=("image", "anagram"),
    options=(
        Option("shift", float, None, label="Time shift", minimum=0, above_minimum=True, maximum=100,
               widget="slider", slider=(1.0, 20.0), step=0.5, infotext="Shift", advanced=True,
               help="the flow-matching time shift; unset keeps the scheduler's own"),
    ),
    run="studio.families.lumina2.run:run",
    builders={"tiny-lumina2": "studio.zoo.builtin_image:build_tiny_lumina2"},
))
