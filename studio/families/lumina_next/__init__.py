"""Lumina-Next (Next-DiT on diffusers' LuminaPipeline components), sampled as its authors sample it.

Its options and their defaults are the Lumina-Next demo's (lumina_next_t2i_mini/demo.py): a
midpoint solver, time shift 4, time-aware RoPE scaling with the linear/NTK watershed at 0.3, and
proportional attention; CFG on the first three latent channels. It also runs the Compositional and
Anagrams tasks. Steps are the demo's: N time points, N - 1 solver steps. Where Studio differs from
the authors on purpose: docs/lumina_next.md.
"""

from ...engines.solvers import SOLVER_LABELS, SOLVERS
from ..registry import Family, Option, register
from ..shared_options import IMAGE_EDITING, time_shift

RUN = "studio.families.lumina_next.run"

SHIFT = time_shift(4.0, "spends more steps near the noise end (s > 1)")
# The published anagram recipe: visual_anagrams/run.sh (cfg 8, shift 7, 30 steps) and generate.py's NEGATIVE_CAP.
ANAGRAM = {"cfg": 8.0, "shift": 7.0, "steps": 30, "negative_prompt": (
    "blurry, ugly, duplicate, poorly drawn, deformed, mosaic, bad quality, bad detail, blurry-image, jpeg artifacts, "
    "bad contrast, bad anatomy, watermark, extra detail, chaotic distribution of objects, distortion")}

FAMILY = register(Family(
    name="lumina-next",
    title="Lumina-Next",
    tasks=("image", "compose", "anagram"),
    options=(
        SHIFT,
        Option("solver", str, "midpoint", label="Solver", choices=tuple((SOLVER_LABELS[s], s) for s in SOLVERS),
               infotext=None, advanced=True, group="Lumina sampling",
               help="torchdiffeq's, as the authors use them. N steps are N time points, N - 1 solver steps "
                    "(30 midpoint steps: 58 model evaluations). rk4 is torchdiffeq's 3/8 rule; dopri5 and dopri8 "
                    "choose their own steps (tolerances 1e-6 / 1e-3, Lumina-T2I's)"),
        Option("rope_scaling", str, "time_aware", label="RoPE scaling",
               choices=(("Time-aware", "time_aware"), ("None", "none")), widget="radio",
               infotext="RoPE scaling", advanced=True, group="Lumina sampling",
               help="for sizes above the native one (the authors' extrapolation sizes); smaller sizes keep the "
                    "native RoPE, as in the authors' demo"),
        Option("watershed", float, 0.3, label="Linear/NTK watershed", minimum=0, maximum=1, widget="slider",
               step=0.05, infotext="Watershed", advanced=True, group="Lumina sampling",
               tasks=("image", "compose")),  # the anagram fork scales RoPE by NTK at every t: no watershed
        Option("proportional_attn", bool, True, label="Proportional attention", infotext="Proportional attention",
               advanced=True, group="Lumina sampling"),
        Option("cfg_mode", str, "lumina", label="CFG form",
               choices=(("Lumina-Next (first 3 channels)", "lumina"), ("Plain", "plain")), widget="radio",
               infotext="CFG mode", advanced=True, group="Lumina sampling"),
        Option("vae_tiles", bool, True, label="Tiled VAE passes", tasks=("anagram",), infotext="VAE tiles",
               advanced=True, group="Lumina sampling",
               help="On, as in the authors' anagram code: the refine phase encodes and decodes in tiles (a quarter "
                    "of the native size each, with context around it and zeros past the picture's edges). Off: one "
                    "pass over the whole picture, for a VAE that tiles and grey borders throw off (the mini model's)"),
        Option("canvas_rope_scaling", bool, False, label="Scale RoPE to the canvas", tasks=("compose",),
               infotext="Canvas RoPE scaling", advanced=True, group="Lumina sampling",
               help="Off, as in the authors' demo: the canvas keeps the native RoPE at any size. On: time-aware "
                    "scaling from the canvas size, as for a large image. (Unlike the authors' demo, every caption "
                    "of a 2x2 grid gets its own cell: theirs repeats caption 2 and drops caption 3.)"),
    ),
    task_defaults={"anagram": ANAGRAM},
    inputs=IMAGE_EDITING,  # image to image, inpainting, outpainting, hires fix (docs/image_editing.md)
    run=f"{RUN}:run",
    prepare="studio.families.lumina_next.checks:prepare",
    builders={"tiny-lumina-next": "studio.zoo.builtin_image:build_tiny_lumina_next",
              "mini-lumina-next": "studio.zoo.builtin_mini:build_mini_lumina_next"},
))
