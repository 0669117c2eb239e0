"""Card -> pipeline object.

Every model, downloaded or built in, is loaded by the same call: the pipeline class named on the
card, `from_pretrained(repo_id, revision, cache_dir=<model cache>, local_files_only=True)`. Loading
never touches the network; fetching weights is the model manager's job. Only safetensors weights
are accepted (`use_safetensors=True`), so no checkpoint is ever unpickled.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ModelNotAvailable
from ..settings import Settings
from ..zoo.builtin import ensure_builtin
from ..zoo.cards import ModelCard

log = logging.getLogger(__name__)


def quiet_libraries() -> None:
    """The studio reports progress itself; the libraries' own tqdm bars only clutter the terminal."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def pipeline_class(name: str) -> type:
    import diffusers

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise ModelNotAvailable(f"{name!r} is not a diffusers pipeline class this version of diffusers has")
    return cls


def resolve_source(card: ModelCard, settings: Settings) -> tuple[str, str]:
    """(repo_id, revision) to load from, building a built-in model into the cache first if needed."""
    if card.source.builtin:
        return ensure_builtin(card.source.builtin, settings.model_cache)
    assert card.source.repo is not None
    return card.source.repo, card.source.revision


def is_available(card: ModelCard, settings: Settings) -> bool:
    """Whether the card's weights are on this machine (built-in models always are)."""
    if card.source.builtin:
        return True
    from huggingface_hub import try_to_load_from_cache

    index_file = "model_index.json" if card.library == "diffusers" else "config.json"
    found = try_to_load_from_cache(card.source.repo, index_file, cache_dir=str(settings.model_cache),
                                   revision=card.source.revision)
    return isinstance(found, str)


def load_pipeline(card: ModelCard, settings: Settings) -> Any:
    if not card.runnable or card.library != "diffusers":
        raise ModelNotAvailable(f"{card.title} is listed but the studio cannot run it yet")
    quiet_libraries()
    cls = pipeline_class(card.pipeline)
    repo_id, revision = resolve_source(card, settings)
    dtype = settings.torch_dtype(card.dtype)
    try:
        pipe = cls.from_pretrained(
            repo_id,
            revision=revision,
            cache_dir=str(settings.model_cache),
            local_files_only=True,
            use_safetensors=True,
            dtype=dtype,
            **({"variant": card.variant} if card.variant else {}),
        )
    except (OSError, ValueError) as err:
        # huggingface_hub's LocalEntryNotFoundError is an OSError; diffusers raises OSError or
        # ValueError when a snapshot is missing or incomplete.
        log.info("loading %s from %s failed: %s", card.id, repo_id, err)
        raise ModelNotAvailable(
            f"{card.title} is not in the model cache ({settings.model_cache}). Download it first: "
            f"the Download button in the Models tab, or `studio models download {card.id}`."
        ) from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(settings.torch_device())
