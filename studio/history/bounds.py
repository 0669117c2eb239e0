"""What the history stores is always readable: strings clipped, numbers JSON and every client
(orjson, SQLite) can read back, nesting and sizes bounded. Applied by the store to every job it
writes, so no request — however odd — can make the history unreadable."""

from __future__ import annotations

import math
from typing import Any

MAX_TEXT = 10_000  # a prompt (the TaskSpec's own limit)
MAX_ERROR = 2_000  # an error message
MAX_NAME = 128  # a task or model name
MAX_FIELDS = 64  # fields of one mapping in the parameters
MAX_ITEMS = 64  # items of one list
MAX_DEPTH = 4
INT64 = 2**63


def clip(text: Any, limit: int) -> str:
    value = text if isinstance(text, str) else repr(text)
    # PostgreSQL text cannot hold a NUL character (SQLite can): the same visible mark on both.
    value = value.replace("\x00", "\ufffd")
    return value if len(value) <= limit else value[:limit - 1] + "…"


def storable(value: Any, depth: int = 0) -> Any:
    """`value` as JSON that reads back everywhere: an integer past 64 bits or a non-finite float
    becomes its text, long text is clipped, deep or long containers are cut."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -INT64 <= value < INT64 else clip(str(value), 64)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clip(value, MAX_TEXT)
    if depth >= MAX_DEPTH:
        return clip(value, 200)
    if isinstance(value, dict):
        return {clip(str(k), 64): storable(v, depth + 1) for k, v in list(value.items())[:MAX_FIELDS]}
    if isinstance(value, (list, tuple)):
        return [storable(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
    return clip(value, 200)
