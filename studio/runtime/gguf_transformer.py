"""A card's transformer from a community GGUF file (city96/Wan2.1-T2V-14B-gguf, QuantStack/…), through
diffusers' own GGUF loader: `<TransformerClass>.from_single_file(file.gguf, config=<base snapshot>/transformer,
quantization_config=GGUFQuantizationConfig(compute_dtype))`.

The card names the file (`transformer_gguf: {card, file}`): `card` is a component card whose download
fetches only that file (its `allow_patterns`); the rest of the pipeline (text encoder, VAE, scheduler,
the transformer's config.json) loads from the card's own diffusers source, which skips the
transformer's weights. The weights stay in their packed GGUF blocks (Q8_0: 8.5 bits a weight, Q4_0:
4.5) and are dequantized layer by layer as they compute, so the footprint is the packed bytes.

Before anything is loaded the file's tensor names and shapes are checked against the transformer the
base repo's config describes: the names are mapped by diffusers' single-file converter for that class
(the community files keep the original checkpoints' key names) and compared with the model built on the
meta device. A file made for another architecture, or another size of this one, is refused with what
differs. The file is read with the `gguf` library's memory-mapped reader: nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, ModelNotAvailable
from ..zoo.cards import ModelCard
from . import quantize

log = logging.getLogger(__name__)

_SHOWN = 3  # names quoted per kind of mismatch


ORIG_SHAPE = "comfy.gguf.orig_shape."  # ComfyUI-GGUF's note of a tensor folded to GGML's 4 dimensions


def read_layout(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], str | None, dict[str, tuple[int, ...]]]:
    """({tensor name: (torch-order shape, GGML type name)}, the file's `general.architecture`, {name: the
    shape a folded tensor unfolds to}). GGML tensors have at most 4 dimensions, so community converters
    fold a 5-D one (Wan's patch-embedding Conv3d) and record its shape as `comfy.gguf.orig_shape.<name>`."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    folded: dict[str, tuple[int, ...]] = {}
    arch = None
    for key, field in reader.fields.items():
        try:
            if key.startswith(ORIG_SHAPE):
                folded[key.removeprefix(ORIG_SHAPE)] = tuple(int(field.parts[i][0]) for i in field.data)
            elif key == "general.architecture":
                arch = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
        except (IndexError, ValueError, TypeError):
            continue
    layout = {t.name: (folded.get(t.name) or tuple(int(n) for n in reversed(list(t.shape))), t.tensor_type.name)
              for t in reader.tensors}
    return layout, arch, folded


def read_state_dict(path: Path, folded: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The file's tensors as diffusers' GGUF reader gives them (packed GGUFParameter or plain tensors), the
    folded ones unfolded (only unquantized ones can be: a packed block layout has no shape to restore)."""
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    state = load_gguf_checkpoint(str(path))
    for name, shape in folded.items():
        tensor = state.get(name)
        if tensor is None:
            continue
        if hasattr(tensor, "quant_type"):
            raise InvalidInput(f"{path.name}: {name} is folded to 4 dimensions and quantized; it cannot be unfolded")
        state[name] = tensor.reshape(shape)
    return state


def transformer_class(snapshot: Path) -> type:
    """The transformer class the base repo's model_index.json names (a diffusers model with a GGUF converter)."""
    import diffusers
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    try:
        entry = json.loads((snapshot / "model_index.json").read_text())["transformer"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelNotAvailable(f"{snapshot}: no transformer in its model_index.json, so no GGUF can stand in "
                                "for it") from err
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    cls = getattr(diffusers, str(name), None)
    if not isinstance(cls, type) or name not in SINGLE_FILE_LOADABLE_CLASSES:
        raise InvalidInput(f"the transformer {name!r} has no single-file (GGUF) loader in this diffusers")
    return cls


def expected_shapes(cls: type, snapshot: Path) -> dict[str, tuple[int, ...]]:
    """The state dict shapes of the transformer the base repo's config describes (built on the meta device)."""
    from accelerate import init_empty_weights

    config = cls.load_config(str(snapshot / "transformer"))
    with init_empty_weights():
        model = cls.from_config(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def converted_shapes(cls: type, layout: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, tuple[int, ...]]:
    """The file's tensors as diffusers names them, by the class's own single-file converter (run on meta tensors)."""
    import torch
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    convert = SINGLE_FILE_LOADABLE_CLASSES[cls.__name__]["checkpoint_mapping_fn"]
    fake = {name: torch.empty(shape, device="meta") for name, (shape, _kind) in layout.items()}
    try:
        converted = convert(checkpoint=fake)
    except Exception as err:  # a converter assumes its architecture's layout; another one can break it anywhere
        raise InvalidInput(f"it is not laid out as a {cls.__name__} checkpoint ({type(err).__name__}: {err})") from None
    return {name: tuple(t.shape) for name, t in converted.items()}


def check_architecture(path: Path, cls: type, snapshot: Path) -> None:
    """InvalidInput, saying what differs, unless the file holds exactly the transformer the config describes."""
    layout, arch, _folded = read_layout(path)
    made_for = f" (made for '{arch}')" if arch else ""
    try:
        have = converted_shapes(cls, layout)
    except InvalidInput as err:
        raise InvalidInput(f"{path.name}{made_for} is not a GGUF of this model's transformer: {err}") from None
    want = expected_shapes(cls, snapshot)
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    wrong = [f"{n} {have[n]} (expected {want[n]})" for n in want if n in have and have[n] != want[n]]
    if not (missing or extra or wrong):
        return
    parts = []
    for label, names in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
        if names:
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            parts.append(f"{len(names)} {label}: {', '.join(names[:_SHOWN])}{more}")
    raise InvalidInput(f"{path.name}{made_for} is not a GGUF of this model's transformer (a {cls.__name__} as "
                       f"the base model's config describes it): {'; '.join(parts)}")


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def main_type(layout: dict[str, tuple[tuple[int, ...], str]]) -> str:
    """The quantization of most of the file's weights (by element count): Q8_0, Q4_0, …"""
    counts: Counter[str] = Counter()
    for shape, kind in layout.values():
        counts[kind] += _numel(shape)
    quantized = {k: v for k, v in counts.items() if k not in ("F32", "F16", "BF16")} or counts
    return max(quantized, key=quantized.__getitem__) if quantized else "F32"


def load_transformer(card: ModelCard, gguf_folder: Path, snapshot: Path, dtype: Any) -> tuple[Any, str]:
    """(the transformer, loaded from the card's GGUF file, checked first; a description for the job)."""
    from diffusers import GGUFQuantizationConfig

    assert card.transformer_gguf is not None
    path = gguf_folder / card.transformer_gguf.file
    if not path.is_file():
        raise ModelNotAvailable(f"{card.title}: the GGUF file {card.transformer_gguf.file} is not in the model "
                                f"cache. Download it first (`studio models download {card.id}`).")
    cls = transformer_class(snapshot)
    check_architecture(path, cls, snapshot)
    layout, _arch, folded = read_layout(path)
    kind = main_type(layout)
    # Given as a state dict (diffusers' own GGUF reader, folded tensors unfolded), with the config as a local
    # folder: the snapshot's transformer/ (diffusers 0.42 drops `subfolder=` for a repo id).
    model = cls.from_single_file(
        read_state_dict(path, folded), config=str(snapshot / "transformer"), local_files_only=True,
        torch_dtype=dtype, quantization_config=GGUFQuantizationConfig(compute_dtype=dtype))
    log.info("%s: transformer from %s (%s)", card.id, path.name, kind)
    return model, f"GGUF {kind} ({path.name})"


def remember(pipeline: Any, description: str) -> None:
    quantize.remember(pipeline, description)
