"""Lumina-T2I (the original Lumina-T2X 5B Flag-DiT, studio.engines.lumina_t2i), sampled as its demo does.

Its options and their defaults are the demo's (lumina_t2i/demo.py): the euler solver (dopri5 and
dopri8 adaptive, tolerances 1e-6 / 1e-3), 30 steps, CFG 4 on the first three latent channels, time
shift 4, NTK scaling and proportional attention on (they only change a size above the native one).
Sizes are the demo's three native ones and its three extrapolation sizes. Its components, the
LLaMA-2-7B text encoder (studio.families.llama) and the SDXL VAE (a component card of this family),
are cards the model card requires. Where Studio differs from the authors on purpose: docs/lumina_t2i.md.
"""

from ..registry import Family, Option, register
from ..shared_options import IMAGE_EDITING, time_shift

ENGINE = "studio.engines.lumina_t2i"
# The demo's solver choices, as torchdiffeq names them.
SOLVERS = (("euler", "euler"), ("dopri5 (adaptive)", "dopri5"), ("dopri8 (adaptive)", "dopri8"))

FAMILY = register(Family(
    name="lumina-t2i",
    title="Lumina-T2I",
    tasks=("image",),
    options=(
        time_shift(4.0, "spends more steps near the noise end (s > 1); the adaptive solvers choose their own"),
        Option("solver", str, "euler", label="Solver", choices=SOLVERS, advanced=True, group="Lumina sampling",
               help="torchdiffeq's, as the demo offers them. N euler steps are N time points, N - 1 steps; "
                    "dopri5 and dopri8 choose their own steps (tolerances 1e-6 / 1e-3)"),
        Option("ntk_scaling", bool, True, label="NTK scaling", infotext="NTK scaling", advanced=True,
               group="Lumina sampling",
               help="for the extrapolation sizes: RoPE's theta times the area ratio to the native size "
                    "(1 at the native sizes, where it changes nothing)"),
        Option("proportional_attn", bool, True, label="Proportional attention", infotext="Proportional attention",
               advanced=True, group="Lumina sampling"),
    ),
    defaults={"steps": 30, "cfg": 4.0},
    unused={"loras": "its native Flag-DiT has no LoRA loader (LoRAs load into Lumina-Image 2.0, Lumina-Next, "
                     "Wan 2.1 and CogVideoX models)"},
    inputs=IMAGE_EDITING,  # image to image, inpainting, outpainting, hires fix (docs/image_editing.md)
    run="studio.families.lumina_t2i.run:run",
    load=f"{ENGINE}.pipeline:load_lumina_t2i",
    check_card=f"{ENGINE}.options:engine_options",
    needed_files=f"{ENGINE}.options:needed_files",
    prepare="studio.families.lumina_t2i.run:prepare",
    builders={"tiny-lumina-t2i": "studio.zoo.builtin_lumina_t2i:build_tiny_lumina_t2i",
              "tiny-sdxl-vae": "studio.zoo.builtin_lumina_t2i:build_tiny_sdxl_vae"},
))
