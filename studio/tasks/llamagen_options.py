"""LlamaGen's controls in the Image task: one definition, one set of defaults, one set of checks.

LlamaGen samples image tokens one at a time, so it has no steps, scheduler shift or negative prompt;
it has a temperature, top-k and top-p instead, and a class-conditional model takes an ImageNet class
(`class_id`; a class name typed as the prompt is looked up) where a text model takes the prompt.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, Field

from ..engines.llamagen.classes import class_names
from ..errors import InvalidInput
from ..zoo.cards import ModelCard

LLAMAGEN_FAMILY = "llamagen"
# LlamaGen's samplers: CFG 4.0, temperature 1.0, no top-k/top-p filtering unless asked (cards set theirs).
LLAMAGEN_DEFAULTS: dict[str, Any] = {"cfg": 4.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
DEFAULT_CLASS = 207  # golden retriever: the class picker's first value, a familiar ImageNet demo class
LLAMAGEN_ONLY = ("class_id", "temperature", "top_k", "top_p")
NOT_FOR_LLAMAGEN = ("steps", "shift")


class TokenSampling(BaseModel):
    """The autoregressive sampling fields (None outside LlamaGen)."""

    class_id: int | None = Field(default=None, ge=0, le=999)
    temperature: float | None = Field(default=None, gt=0, le=10, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=0, le=1_000_000)  # 0: no top-k filtering
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)  # 1: no nucleus filtering


def is_llamagen(card: ModelCard) -> bool:
    return card.family == LLAMAGEN_FAMILY


def takes_class(card: ModelCard) -> bool:
    """Whether the card's model is class-conditional (an ImageNet class rather than a prompt)."""
    return is_llamagen(card) and card.engine.get("kind") == "c2i"


def llamagen_fallbacks(card: ModelCard, fallbacks: dict[str, Any]) -> dict[str, Any]:
    """The task's fallbacks as LlamaGen takes them: no steps, its sampling defaults added, and the one
    size its checkpoint makes."""
    kept = {k: v for k, v in fallbacks.items() if k not in NOT_FOR_LLAMAGEN}
    return {**kept, **LLAMAGEN_DEFAULTS, "width": card.max_size, "height": card.max_size}


def class_label(class_id: int) -> str:
    """'207 · golden retriever': how the class picker and the job's prompt show a class."""
    return f"{class_id} · {class_names()[class_id]}"


_NUMBERED = re.compile(r"([0-9]{1,6})(?:\s*[:·.\-]?\s*(.+))?")


def find_class(text: str) -> int:
    """An ImageNet class id from what someone typed: '207', '207 · golden retriever', or a name.
    Anything that names no class, or more than one, is refused with the reason."""
    names = class_names()
    lowered = [name.lower() for name in names]
    text = text.strip()
    numbered = _NUMBERED.fullmatch(text)
    if numbered:
        class_id = int(numbered.group(1))
        if class_id >= len(names):
            raise InvalidInput(f"ImageNet classes are numbered 0 to {len(names) - 1}, not {class_id}")
        rest = (numbered.group(2) or "").strip().lower()
        if rest and rest != lowered[class_id]:
            raise InvalidInput(f"class {class_id} is {names[class_id]!r}, not {rest!r}: give its number or its name")
        return class_id
    wanted = text.lower()
    for found in ([i for i, name in enumerate(lowered) if name == wanted],
                  [i for i, name in enumerate(lowered) if wanted and wanted in name]):
        if len(found) == 1:
            return found[0]
        if 1 < len(found) <= 10:
            listed = ", ".join(f"{i} ({names[i]})" for i in found)
            raise InvalidInput(f"{text!r} fits {len(found)} ImageNet classes: {listed}. Pick one by its number.")
    close = difflib.get_close_matches(wanted, lowered, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " Pick one from the class list."
    raise InvalidInput(f"{text!r} is not one of the 1000 ImageNet classes this model draws.{hint}")


def with_class(params: dict[str, Any], card: ModelCard) -> dict[str, Any]:
    """A class-conditional job's parameters with its class settled: the class id, and the class's
    label as the prompt (so the history, the gallery search and the file's metadata name it)."""
    class_id = params.get("class_id")
    if class_id is None:
        class_id = find_class(params.get("prompt") or "")
    return {**params, "class_id": class_id, "prompt": class_label(class_id)}


def refuse_foreign_options(spec: Any, card: ModelCard) -> None:
    """LlamaGen's fields only on LlamaGen; the diffusion fields never on it."""
    if not is_llamagen(card):
        used = [name for name in LLAMAGEN_ONLY if getattr(spec, name) is not None]
        if used:
            raise InvalidInput(f"{', '.join(used)}: LlamaGen's sampling options apply to LlamaGen models only, "
                               f"not to {card.title}")
        return
    used = [name for name in NOT_FOR_LLAMAGEN if getattr(spec, name) is not None]
    if used:
        raise InvalidInput(f"{', '.join(used)}: {card.title} draws its image token by token; it has no "
                           "denoising steps or schedule shift")
    if spec.negative_prompt.strip():
        raise InvalidInput(f"{card.title} takes no negative prompt: leave it empty (CFG guides against "
                           "the empty condition)")
    if not takes_class(card) and spec.class_id is not None:
        raise InvalidInput(f"{card.title} draws from a text prompt, not an ImageNet class: leave class_id empty")
