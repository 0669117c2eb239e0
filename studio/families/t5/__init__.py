"""T5 text encoders as components other models load (LlamaGen's text model reads flan-t5-xl from
its own card's folder); they run no task of their own."""

from ..registry import Family, register

FAMILY = register(Family(
    name="t5",
    title="T5 text encoders",
    tasks=("component",),
    builders={"tiny-flan-t5": "studio.zoo.builtin_llamagen:TinyT5Encoder"},
))
