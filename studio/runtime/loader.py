"""Card -> pipeline object, in RAM; where its weights then go is the MemoryScheduler's decision.

Every model, downloaded or built in, is loaded by the same call: the pipeline class named on the
card, `from_pretrained(repo_id, revision, cache_dir=<model cache>, local_files_only=True)`. Loading
never touches the network; fetching weights is the model manager's job. Only safetensors weights
are accepted (`use_safetensors=True`), so no checkpoint is ever unpickled.

A component whose weight files are the very same blobs as one already loaded (the same Gemma text
encoder in two repos, say) is passed in instead of loaded again, so it sits in memory once.

The one exception to "in RAM": a scheduler that owns a device group asks for `device_map="balanced"` and a
`max_memory` map (runtime/multi_gpu.py), and a diffusers card is then loaded straight onto the group's GPUs,
each component whole on one of them, by diffusers itself. Such a pipeline shares no component.
"""

from __future__ import annotations

import json
import logging
import weakref
from pathlib import Path
from typing import Any

from ..errors import ModelNotAvailable
from ..families import FAMILIES
from ..settings import Settings
from ..zoo.builtin import ensure_builtin
from ..zoo.cards import CardRegistry, ModelCard
from . import multi_gpu, quantize
from .attention import apply_attention_backend, check_backend

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


class SharedComponents:
    """Loaded components by checkpoint identity: the blob names (content hashes) of their weights."""

    def __init__(self) -> None:
        self._modules: "weakref.WeakValueDictionary[tuple, Any]" = weakref.WeakValueDictionary()

    @staticmethod
    def identity(folder: Path) -> tuple | None:
        weights = sorted(folder.glob("*.safetensors"))
        if not weights or not all(w.is_symlink() for w in weights):
            return None  # not a hub snapshot: no content hash to go by
        return tuple(w.resolve().name for w in weights)

    def reusable(self, snapshot: Path) -> tuple[dict[str, Any], dict[str, tuple]]:
        """(components already loaded, to pass to from_pretrained; identities of all components)."""
        index = json.loads((snapshot / "model_index.json").read_text())
        reuse, identities = {}, {}
        for name in index:
            if name.startswith("_") or not (snapshot / name).is_dir():
                continue
            key = self.identity(snapshot / name)
            if key is None:
                continue
            identities[name] = key
            module = self._modules.get(key)
            if module is not None:
                reuse[name] = module
        return reuse, identities

    def remember(self, pipeline: Any, identities: dict[str, tuple]) -> None:
        for name, key in identities.items():
            module = getattr(pipeline, name, None)
            if module is not None:
                self._modules[key] = module


def _snapshot_dir(repo_id: str, revision: str, settings: Settings) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, cache_dir=str(settings.model_cache),
                                  local_files_only=True))


def apply_speed_settings(pipeline: Any, settings: Settings) -> None:
    """Attention backend (on every diffusers model: runtime/attention.py), channels_last and torch.compile,
    as Settings ask."""
    import torch

    transformer = getattr(pipeline, "transformer", None) or getattr(pipeline, "unet", None)
    apply_attention_backend(pipeline, settings.attention, settings.torch_device())
    if settings.channels_last:
        for module in (transformer, getattr(pipeline, "vae", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if settings.compile and transformer is not None:
        transformer.compile()


def _load_transformers(card: ModelCard, repo_id: str, revision: str, settings: Settings, dtype: Any) -> Any:
    import transformers

    from .bundle import TransformersBundle

    cls = getattr(transformers, card.pipeline, None)
    if not isinstance(cls, type):
        raise ModelNotAvailable(f"{card.pipeline!r} is not a model class this version of transformers has")
    where = {"revision": revision, "cache_dir": str(settings.model_cache), "local_files_only": True}
    model = cls.from_pretrained(repo_id, use_safetensors=True, dtype=dtype, **where)
    family = FAMILIES.of(card)
    load_processor = family.hook("processor") if family is not None else None
    if load_processor is not None:  # e.g. MusicGen Melody's, whose library processor needs torchaudio
        processor = load_processor(card, repo_id, **where)
    else:
        processor = transformers.AutoProcessor.from_pretrained(repo_id, **where)
    return TransformersBundle(model.eval(), processor)


def _not_there(card: ModelCard, settings: Settings) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"{card.title} is not in the model cache ({settings.model_cache}). Download it first: "
        f"the Download button in the Models tab, or `studio models download {card.id}`.")


def _load_native(card: ModelCard, repo_id: str, revision: str, settings: Settings, dtype: Any,
                 cards: CardRegistry | None) -> Any:
    """A native engine's pipeline (its family's `load` hook) from the card's snapshot folder and those
    of the cards it requires."""
    family = FAMILIES.for_card(card)
    load = family.hook("load")
    if load is None:
        raise ModelNotAvailable(f"{card.title}: the {family.title} family has no native loader")
    folders: dict[str, Path] = {}
    try:
        folder = _snapshot_dir(repo_id, revision, settings)
        for required_id in card.requires:
            if cards is None:
                raise ModelNotAvailable(f"{card.title} needs {required_id}, and no card registry was given")
            required = cards.get(required_id)
            try:
                folders[required_id] = _snapshot_dir(*resolve_source(required, settings), settings)
            except (OSError, ValueError) as err:
                raise _not_there(required, settings) from err
    except (OSError, ValueError) as err:
        raise _not_there(card, settings) from err
    return load(card, folder, folders, dtype)


def _store_in_fp8(pipe: Any, card: ModelCard, settings: Settings, dtype: Any) -> None:
    """Weights of the transformer's layers stored in fp8, each cast to the load dtype while it computes
    (diffusers' layerwise casting; norms and embeddings stay as they are): about half of bf16."""
    transformer = getattr(pipe, "transformer", None)
    if not (settings.fp8 and card.fp8_ok and transformer is not None) or quantize.is_quantized(pipe):
        return  # a quantized transformer (runtime/quantize.py) is not cast again
    import torch

    quantize.remember(pipe, "fp8 storage (layerwise casting)")  # recorded on its jobs as a quantization is
    if hasattr(transformer, "enable_layerwise_casting"):  # a diffusers model knows what it must skip
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
        return
    from diffusers.hooks import apply_layerwise_casting
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    # A native model names the small layers that stay in full precision (embeddings, output) as diffusers' do.
    skip = (*DEFAULT_SKIP_MODULES_PATTERN, *getattr(transformer, "skip_in_fp8", ()))
    apply_layerwise_casting(transformer, storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype,
                            skip_modules_pattern=skip)


def _gguf_transformer(card: ModelCard, repo_id: str, revision: str, settings: Settings, dtype: Any,
                      cards: CardRegistry | None) -> tuple[Any, str] | None:
    """The card's transformer from its GGUF file (runtime/gguf_transformer.py), or None when it has none."""
    if card.transformer_gguf is None:
        return None
    from .gguf_transformer import load_transformer

    if cards is None:
        raise ModelNotAvailable(f"{card.title} needs {card.transformer_gguf.card}, and no card registry was given")
    holder = cards.get(card.transformer_gguf.card)
    try:
        folder = _snapshot_dir(*resolve_source(holder, settings), settings)
        snapshot = _snapshot_dir(repo_id, revision, settings)
    except (OSError, ValueError) as err:
        raise _not_there(holder, settings) from err
    return load_transformer(card, folder, snapshot, dtype)


def load_pipeline(card: ModelCard, settings: Settings, shared: SharedComponents | None = None,
                  cards: CardRegistry | None = None, *, device_map: str | None = None,
                  max_memory: dict[int, int] | None = None) -> Any:
    """The card's pipeline in RAM; `cards` resolves the component cards a native model requires. With
    `device_map="balanced"` (and `max_memory`: GPU index -> bytes) a diffusers card is loaded spread over
    those GPUs instead."""
    if not card.runnable:
        raise ModelNotAvailable(f"{card.title} is listed but the studio cannot run it yet")
    if device_map is not None and (device_map != "balanced" or card.library != "diffusers"):
        raise ModelNotAvailable(f"{card.title}: device_map={device_map!r} is only for diffusers pipelines "
                                f"(\"balanced\"); this card is a {card.library} model")
    quiet_libraries()
    if multi_gpu.is_group(settings.torch_device()):  # a group's worker: what runs on one GPU runs on its first
        settings = settings.replace(device=multi_gpu.primary(settings.torch_device()))
    check_backend(settings.attention, settings.torch_device())  # a kernel that cannot run here: before any load
    repo_id, revision = resolve_source(card, settings)
    dtype = settings.torch_dtype(card.dtype)
    not_there = _not_there(card, settings)
    if card.library == "native":
        pipe = _load_native(card, repo_id, revision, settings, dtype, cards)
        quantize.quantize_native(pipe, card, settings)
        _store_in_fp8(pipe, card, settings, dtype)
        # A native pipeline built on diffusers models (Wan2.1-Fun's) takes the backend on those.
        apply_attention_backend(pipe, settings.attention, settings.torch_device())
        return pipe
    if card.library == "transformers":
        try:
            return _load_transformers(card, repo_id, revision, settings, dtype)
        except (OSError, ValueError) as err:
            raise not_there from err
    cls = pipeline_class(card.pipeline)
    reuse: dict[str, Any] = {}
    identities: dict[str, tuple] = {}
    if shared is not None:
        try:
            reuse, identities = shared.reusable(_snapshot_dir(repo_id, revision, settings))
        except (OSError, ValueError) as err:
            raise not_there from err
    quantized = quantize.from_pretrained_kwargs(card, settings)
    gguf = _gguf_transformer(card, repo_id, revision, settings, dtype, cards)
    if quantized or gguf:  # a quantized transformer is this card's alone: never shared either way
        reuse.pop("transformer", None)
        identities.pop("transformer", None)
    spread: dict[str, Any] = {}
    if device_map is not None:
        # Each component is dispatched onto a GPU by accelerate's hooks: one shared with a RAM pipeline would be
        # pulled from under it, so a balanced pipeline loads its own (and is not remembered for reuse either).
        reuse, identities = {}, {}
        spread = {"device_map": device_map, **({"max_memory": max_memory} if max_memory else {})}
    try:
        pipe = cls.from_pretrained(
            repo_id,
            revision=revision,
            cache_dir=str(settings.model_cache),
            local_files_only=True,
            use_safetensors=True,
            dtype=dtype,
            **({"variant": card.variant} if card.variant else {}),
            **reuse,
            **quantized,
            **({"transformer": gguf[0]} if gguf else {}),
            **spread,
        )
    except (OSError, ValueError) as err:
        # huggingface_hub's LocalEntryNotFoundError is an OSError; diffusers raises OSError or
        # ValueError when a snapshot is missing or incomplete.
        log.info("loading %s from %s failed: %s", card.id, repo_id, err)
        raise not_there from err
    if reuse:
        log.info("%s re-uses loaded %s", card.id, ", ".join(reuse))
    if shared is not None:
        shared.remember(pipe, identities)
    quantize.settle(pipe, card, settings)
    if gguf:
        quantize.remember(pipe, gguf[1])
    _store_in_fp8(pipe, card, settings, dtype)
    apply_speed_settings(pipe, settings)
    pipe.set_progress_bar_config(disable=True)
    return pipe
