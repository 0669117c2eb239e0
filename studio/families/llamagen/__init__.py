"""LlamaGen (autoregressive image tokens over a VQ-16 tokenizer; studio.engines.llamagen).

It samples image tokens one at a time, so it takes no steps and no negative prompt; its options are
the token sampler's (temperature, top-k, top-p; LlamaGen's own defaults: temperature 1, no top-k
or top-p filtering unless a card sets them) and, for the class-conditional models, an ImageNet class
instead of the prompt (a class name typed as the prompt is looked up).
"""

from ...engines.llamagen.classes import class_names
from ..registry import Family, Option, register

DEFAULT_CLASS = 207  # golden retriever: the class picker's first value, a familiar ImageNet demo class
ENGINE = "studio.engines.llamagen"


def class_label(class_id: int) -> str:
    """'207 · golden retriever': how the class picker and the job's prompt show a class."""
    return f"{class_id} · {class_names()[class_id]}"


FAMILY = register(Family(
    name="llamagen",
    title="LlamaGen",
    tasks=("image",),
    step_unit="rows of tokens",
    options=(
        Option("class_id", int, None, label="ImageNet class (type to search)", minimum=0, maximum=999,
               choices=tuple((class_label(i), i) for i in range(len(class_names()))), widget="dropdown",
               initial=DEFAULT_CLASS, infotext="Class", help="what a class-conditional model draws"),
        Option("temperature", float, 1.0, label="Temperature", minimum=0, above_minimum=True, maximum=10,
               widget="slider", slider=(0.05, 2.0), step=0.05, infotext="Temperature"),
        Option("top_k", int, 0, label="Top-k (0 = off)", minimum=0, maximum=1_000_000, widget="number",
               infotext="Top-k"),
        Option("top_p", float, 1.0, label="Top-p (1 = off)", minimum=0, above_minimum=True, maximum=1,
               widget="slider", slider=(0.05, 1.0), step=0.05, infotext="Top-p"),
    ),
    defaults={"cfg": 4.0},
    unused={"image": "it draws its image token by token in raster order, with no picture to start from",
            "steps": "it draws its image token by token; it has no denoising steps or schedule shift",
            "negative_prompt": "leave it empty (CFG guides against the empty condition)",
            "loras": "its native token model has no LoRA loader"},
    prompt_from="class_id",
    run="studio.families.llamagen.run:run",
    load=f"{ENGINE}.pipeline:load_llamagen",
    check_card=f"{ENGINE}.options:engine_options",
    needed_files=f"{ENGINE}.options:needed_files",
    takes="studio.families.llamagen.run:takes",
    prepare="studio.families.llamagen.prompting:prepare",
    builders={"tiny-llamagen-c2i": "studio.zoo.builtin_llamagen:build_tiny_c2i",
              "tiny-llamagen-t2i": "studio.zoo.builtin_llamagen:build_tiny_t2i"},
))
