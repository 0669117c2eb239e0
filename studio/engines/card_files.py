"""What every native engine checks of the files a card's `engine:` section names (torch-free): each
is a plain file name in the model's snapshot (never a path), and the card's download fetches it."""

from __future__ import annotations

import fnmatch
import re
from typing import Any


def plain_file_name(value: str, suffixes: tuple[str, ...]) -> str:
    """`value` if it is a file name (letters, digits, `._-`, at most 128) ending in one of `suffixes`."""
    pattern = rf"^[\w][\w.-]{{0,127}}\.({'|'.join(map(re.escape, suffixes))})$"
    if not re.match(pattern, value) or ".." in value:
        raise ValueError(f"{value!r} must be a file name in the model's repo ({', '.join('.' + s for s in suffixes)})")
    return value


def check_fetched(card: Any, name: str) -> None:
    """ValueError unless the card's `allow_patterns` (None: the library's usual set) let `name` through."""
    if card.allow_patterns is not None and not any(fnmatch.fnmatch(name, p) for p in card.allow_patterns):
        raise ValueError(f"{name} is not in allow_patterns, so a download would not fetch it")


def read_section(model: Any, card: Any) -> Any:
    """The card's `engine:` section validated as the pydantic `model`; ValueError names each problem
    (`engine: gpt_file: ...`)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(card.engine)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'engine'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"engine: {problems}") from None
