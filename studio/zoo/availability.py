"""Whether a card's weights are on this machine: the files its library (or, for a native engine, its
family) reads, looked up in the model cache without touching the network."""

from __future__ import annotations

from typing import Any

from ..families import FAMILIES


def needed_files(card: Any) -> list[str]:
    """The files whose presence in the model cache means the card's weights were downloaded."""
    if card.library == "diffusers":
        return ["model_index.json"]
    if card.library == "transformers":
        return ["config.json"]
    family = FAMILIES.of(card)
    hook = family.hook("needed_files") if family is not None and card.runnable else None
    if hook is None:  # listed only (a component file, an engine still to come): the files it names
        return [p for p in card.allow_patterns or [] if "*" not in p]
    return list(hook(card))


def is_available(card: Any, settings: Any) -> bool:
    """Whether the card's weights are on this machine (built-in models always are)."""
    if card.source.builtin:
        return True
    from huggingface_hub import try_to_load_from_cache

    names = needed_files(card)
    return bool(names) and all(
        isinstance(try_to_load_from_cache(card.source.repo, name, cache_dir=str(settings.model_cache),
                                          revision=card.source.revision), str) for name in names)


def missing_requirements(card: Any, cards: Any, settings: Any) -> list[Any]:
    """The component cards `card` requires (and they require, in turn) whose weights are not here:
    a model whose text encoder failed to download is not ready, though its own files are."""
    missing, todo, seen = [], list(card.requires), set()
    while todo:
        required = cards.get(todo.pop(0))
        if required.id in seen:
            continue
        seen.add(required.id)
        if not is_available(required, settings):
            missing.append(required)
        todo.extend(required.requires)
    return missing


def is_ready(card: Any, cards: Any, settings: Any) -> bool:
    """Its weights and those of every component it requires are on this machine."""
    return is_available(card, settings) and not missing_requirements(card, cards, settings)
