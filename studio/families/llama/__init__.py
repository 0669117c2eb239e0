"""LLaMA language models as text encoders other models load (Lumina-T2I reads LLaMA-2-7B's last
hidden state from its own card's folder); they run no task of their own."""

from ..registry import Family, register

FAMILY = register(Family(
    name="llama",
    title="LLaMA text encoders",
    tasks=("component",),
    builders={"tiny-llama": "studio.zoo.builtin_lumina_t2i:TinyLlama"},
))
