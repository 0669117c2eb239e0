"""What a LlamaGen model is asked to draw: an ImageNet class for the class-conditional models (by
`class_id`, or looked up from what was typed as the prompt), the prompt for the text model."""

from __future__ import annotations

import difflib
import re
from typing import Any

from ...engines.llamagen.classes import class_names
from ...errors import InvalidInput
from . import class_label

_NUMBERED = re.compile(r"([0-9]{1,6})(?:\s*[:·.\-]?\s*(.+))?")


def takes_class(card: Any) -> bool:
    """Whether the card's model is class-conditional (an ImageNet class rather than a prompt)."""
    return card.engine.get("kind") == "c2i"


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


def prepare(card: Any, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """A class-conditional job's parameters with its class settled: the class id, and the class's
    label as the prompt (so the history, the gallery search and the file's metadata name it)."""
    if not takes_class(card):
        if params.get("class_id") is not None:
            raise InvalidInput(f"{card.title} draws from a text prompt, not an ImageNet class: leave class_id empty")
        return params
    class_id = params.get("class_id")
    if isinstance(class_id, float) and class_id.is_integer():
        class_id = int(class_id)  # 207.0 from a JSON client or a number box
    if class_id is None:
        class_id = find_class(params.get("prompt") or "")
    elif isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id < len(class_names()):
        raise InvalidInput(f"Invalid input — class_id: must be an ImageNet class number from 0 to "
                           f"{len(class_names()) - 1} (got {class_id!r})")
    return {**params, "class_id": class_id, "prompt": class_label(class_id)}
