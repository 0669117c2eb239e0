"""The native engines a card can name (`library: native`, `pipeline: <engine>`): what neither diffusers
nor transformers has. Each checks its cards' `engine:` section when the card is read, and loads a
pipeline-shaped object (a runtime.bundle.ModuleBundle) from the card's snapshot folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENGINES = ("llamagen",)


def check_card(card: Any) -> None:
    """ValueError if no native engine can run this card as written (reported as a card problem)."""
    if not card.runnable:
        return  # listed only (an engine still to come): nothing to check yet
    if card.pipeline not in ENGINES:
        raise ValueError(f"pipeline: {card.pipeline!r} is not a native engine; known: {', '.join(ENGINES)}")
    from .llamagen.options import engine_options

    engine_options(card)


def needed_files(card: Any) -> list[str]:
    """The files whose presence in the model cache means the card's weights were downloaded."""
    from .llamagen.options import needed_files as llamagen_files

    if not card.runnable:  # listed only (a component file): the files it names
        return [p for p in card.allow_patterns or [] if "*" not in p]
    return llamagen_files(card)


def load(card: Any, folder: Path, required: dict[str, Path], dtype: Any) -> Any:
    """The card's pipeline, from its snapshot `folder` and the snapshot folders of the cards it requires."""
    from .llamagen.pipeline import load_llamagen

    return load_llamagen(card, folder, required, dtype)
