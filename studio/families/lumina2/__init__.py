"""Lumina-Image 2.0 on diffusers' Lumina2Pipeline: its own Euler flow with normalised CFG, and the
flow-matching time shift as its option (the scheduler's own when unset), and step caching (`speed`) for
its images. It also runs anagrams."""

from ..registry import Family, register
from ..shared_options import IMAGE_EDITING, speed, time_shift

FAMILY = register(Family(
    name="lumina2",
    title="Lumina-Image 2.0",
    tasks=("image", "anagram"),
    options=(
        time_shift(None, "the flow-matching time shift; unset keeps the scheduler's own"),
        speed("step caching by First Block Cache: balanced skips a step's later layers while the first layer's "
              "output moved < 5% since the last full pass, fast < 10%", tasks=("image",)),
    ),
    inputs=IMAGE_EDITING,  # image to image, inpainting, outpainting, hires fix (docs/image_editing.md)
    run="studio.families.lumina2.run:run",
    builders={"tiny-lumina2": "studio.zoo.builtin_image:build_tiny_lumina2"},
))
