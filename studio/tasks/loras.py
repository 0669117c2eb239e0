"""The `loras` field of the image and video specs: which LoRA adapters a job loads, each with a weight.

A job's `loras` is a list of `{"name": str, "weight": float}` (the job row records it so, and a re-run
sends it back as is). Front ends may also send text: `"name"`, `"name:0.8"`, several separated by commas
or new lines (the form's text box, `--lora NAME[:WEIGHT]` repeated, the named API's list of strings).
A weight is within [-4, 4] (1 when left out); a name is checked and found by zoo/loras.py when the job
is submitted. How a LoRA shows in A1111's infotext: `<lora:name:weight>` after the prompt (`prompt_tags`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from typing_extensions import Annotated

MAX_WEIGHT = 4.0
MAX_LORAS = 8


class LoraPick(BaseModel):
    """One adapter of a job: its name (a file stem in the LoRA folder or a LoRA card's id) and weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=120)
    weight: float = Field(default=1.0, ge=-MAX_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False)


def _split(text: str) -> list[Any]:
    picks: list[Any] = []
    for part in filter(None, (p.strip() for p in text.replace("\n", ",").split(","))):
        part = part.removeprefix("<lora:").removesuffix(">") if part.startswith("<lora:") else part
        name, sep, weight = part.rpartition(":")
        if not sep:
            picks.append({"name": part})
            continue
        try:
            picks.append({"name": name.strip(), "weight": float(weight)})
        except ValueError:
            raise ValueError(f"{part[:80]!r}: write a LoRA as NAME or NAME:WEIGHT (e.g. style:0.8)") from None
    return picks


def _as_picks(value: Any) -> Any:
    """Text or a list of texts/mappings as the list of picks; an empty one as None (no LoRA: nothing set)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = _split(value)
    elif isinstance(value, (list, tuple)):
        value = [p for item in value for p in (_split(item) if isinstance(item, str) else [item])]
    else:
        return value  # pydantic says what is wrong with it
    if len(value) > MAX_LORAS:
        raise ValueError(f"at most {MAX_LORAS} LoRAs a job, got {len(value)}")
    names = [p.get("name") if isinstance(p, dict) else getattr(p, "name", None) for p in value]
    names = [n for n in names if isinstance(n, str)]  # anything else pydantic refuses below
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{', '.join(map(str, twice))} named twice: give each LoRA once, with one weight")
    return value or None


Loras = Annotated[list[LoraPick] | None, BeforeValidator(_as_picks)]


def prompt_tags(prompt: str, loras: list[LoraPick] | None) -> str:
    """The prompt as A1111 writes it with LoRAs: each as `<lora:name:weight>` after the text."""
    if not loras:
        return prompt
    return prompt + " " + " ".join(f"<lora:{p.name}:{p.weight:g}>" for p in loras)


def as_text(loras: Any) -> str:
    """A job's LoRAs as the form's text box shows them (`name:weight, …`)."""
    try:
        picks = _as_picks(loras) or []
    except ValueError:
        return str(loras)
    return ", ".join(f"{p['name']}:{float(p.get('weight', 1.0)):g}" if isinstance(p, dict) else
                     f"{p.name}:{p.weight:g}" for p in picks)
