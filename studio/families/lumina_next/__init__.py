"""Lumina-Next (Next-DiT on diffusers' LuminaPipeline components), sampled as its authors sample it.

Its options and their defaults are the Lumina-Next demo's (lumina_next_t2i_mini/demo.py): a
midpoint solver, time shift 4, time-aware RoPE scaling with the linear/NTK watershed at 0.3, and
proportional attention; CFG on the first three latent channels. It also runs the Compositional and
Anagrams tasks.
"""

from ...engines.solvers import SOLVERS
from ..registry import Family, Option, register
from ..shared_options import time_shift

RUN = "studio.families.lumina_next.run"

SHIFT = time_shift(4.0, "spends more steps near the noise end (s > 1)")

FAMILY = register(Family(
    name="lumina-next",
    title="Lumina-Next",
    tasks=("image", "compose", "anagram"),
    options=(
        SHIFT,
        Option("solver", str, "midpoint", label="Solver", choices=tuple((s, s) for s in SOLVERS),
               infotext=None, advanced=True, group="Lumina-Next sampling"),
        Option("rope_scaling", str, "time_aware", label="RoPE scaling",
               choices=(("Time-aware", "time_aware"), ("None", "none")), widget="radio",
               infotext="RoPE scaling", advanced=True, group="Lumina-Next sampling",
               help="for resolution extrapolation"),
        Option("watershed", float, 0.3, label="Linear/NTK watershed", minimum=0, maximum=1, widget="slider",
               step=0.05, infotext="Watershed", advanced=True, group="Lumina-Next sampling"),
        Option("proportional_attn", bool, True, label="Proportional attention", infotext="Proportional attention",
               advanced=True, group="Lumina-Next sampling"),
        Option("cfg_mode", str, "lumina", label="CFG form",
               choices=(("Lumina-Next (first 3 channels)", "lumina"), ("Plain", "plain")), widget="radio",
               infotext="CFG mode", advanced=True, group="Lumina-Next sampling"),
    ),
    run=f"{RUN}:run",
    builders={"tiny-lumina-next": "studio.zoo.builtin_image:build_tiny_lumina_next"},
))
