"""Infinity (bitwise visual autoregressive, next-scale prediction; studio.engines.infinity).

It predicts a fixed schedule of scales, so it takes no steps; progress is counted in scales. Its
options are the bit sampler's: tau (the logits' temperature), top-k and top-p as the reference
applies them to each bit's two logits. CFG mixes logits (cfg*cond + (1-cfg)*uncond); a negative
prompt replaces the learned unconditional text. Sizes are the model's aspect-ratio templates.
"""

from ..registry import Family, Option, register

ENGINE = "studio.engines.infinity"

FAMILY = register(Family(
    name="infinity",
    title="Infinity",
    tasks=("image",),
    step_unit="scales",
    options=(
        Option("tau", float, 0.5, label="Tau (temperature of the bit logits)", minimum=0, above_minimum=True,
               maximum=10, widget="slider", slider=(0.05, 2.0), step=0.05, infotext="Tau"),
        Option("top_k", int, 900, label="Top-k (0 = off)", minimum=0, maximum=1_000_000, widget="number",
               infotext="Top-k", help="on a bit's two logits: only 1 (always the likelier value) changes anything"),
        Option("top_p", float, 0.97, label="Top-p (1 = off)", minimum=0, above_minimum=True, maximum=1,
               widget="slider", slider=(0.05, 1.0), step=0.01, infotext="Top-p",
               help="drops a bit value whose probability is at most 1 - top-p"),
    ),
    defaults={"cfg": 4.0},
    unused={"image": "it predicts its image scale by scale from nothing, with no picture to start from",
            "steps": "it predicts a fixed schedule of scales; it has no denoising steps",
            "loras": "its native transformer has no LoRA loader"},
    run="studio.families.infinity.run:run",
    load=f"{ENGINE}.pipeline:load_infinity",
    check_card=f"{ENGINE}.options:engine_options",
    needed_files=f"{ENGINE}.options:needed_files",
    prepare="studio.families.infinity.run:prepare",
    builders={"tiny-infinity": "studio.zoo.builtin_infinity:build_tiny_infinity",
              "tiny-infinity-vae": "studio.zoo.builtin_infinity:build_tiny_vae",
              "tiny-infinity-t5": "studio.zoo.builtin_infinity:TinyInfinityT5"},
))
