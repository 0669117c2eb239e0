"""Where LoRA adapters come from, and the checks a LoRA file passes before a job is queued.

A LoRA is named, never given as a path: a name is the stem of a `.safetensors` file in the LoRA
folder (`Settings.lora_dir`, `--lora-dir` / `STUDIO_LORA_DIR`), or the id of a downloaded LoRA card
(`tasks: [lora]`, `lora: {file: …}`, its `family:` the base model's family). A name with a path
separator, `..`, or anything but letters, digits and `._+- ` is refused before any file is touched, so
a user's string never becomes a path. Files are safetensors only: a pickle format (`.ckpt`, `.pt`,
`.bin`, `.pth`) is refused by name, and a file's header is read and checked (not its tensors) before
the job queues. The hash recorded for a LoRA is A1111's: the first 12 hex digits of the sha256 of the
file's tensor data (what follows the safetensors header; Civitai's "AutoV3").
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,99}$")
SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the JSON header
LORA_TASK = "lora"  # a LoRA card's `tasks:` entry


@dataclass(frozen=True)
class LoraFile:
    """A LoRA the studio can load: its name, its file, the family it is for (None: not said, a folder file),
    its tensors' bytes and how many tensors the header lists."""

    name: str
    path: Path
    family: str | None
    data_bytes: int
    tensors: int


def check_name(name: Any) -> str:
    """The name as given, or InvalidInput when it could be a path or is not a plain file stem."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("loras: a LoRA needs a name (a file in the LoRA folder, without .safetensors)")
    name = name.strip()
    lowered = name.lower()
    for suffix in PICKLE_SUFFIXES:
        if lowered.endswith(suffix):
            raise InvalidInput(f"LoRA {name[:80]!r}: {suffix} files are pickles, which can run code when read; "
                               "the studio loads LoRAs from .safetensors files only")
    if lowered.endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    if ".." in name or "/" in name or "\\" in name or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(f"LoRA {name[:80]!r}: a LoRA is named by its file's stem in the LoRA folder (letters, "
                           "digits, spaces and ._+-), never by a path")
    return name


def read_header(path: Path, name: str) -> tuple[int, int]:
    """(tensor data bytes, tensor count) from a safetensors file's header, or InvalidInput saying what is
    wrong with the file. Only the header is read."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("it is shorter than a safetensors header")
            (length,) = struct.unpack("<Q", head)
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise ValueError("its header length does not fit the file")
            header = json.loads(f.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise InvalidInput(f"LoRA {name!r}: {path.name} is not a readable safetensors file ({err})") from None
    if not isinstance(header, dict):
        raise InvalidInput(f"LoRA {name!r}: {path.name} is not a safetensors file (its header is not a mapping)")
    data = size - 8 - length
    count = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data):
            raise InvalidInput(f"LoRA {name!r}: {path.name} is corrupt or cut short (tensor {str(key)[:80]!r} lies "
                               "outside the file)")
        count += 1
    if not count:
        raise InvalidInput(f"LoRA {name!r}: {path.name} holds no tensors")
    return data, count


_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def short_hash(path: Path) -> str:
    """A1111's LoRA hash: the first 12 hex digits of the sha256 of the file after its header (cached by
    path, size and modification time)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key in _hashes:
            return _hashes[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + length)
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    short = digest.hexdigest()[:12]
    with _hash_lock:
        _hashes[key] = short
    return short


class LoraLibrary:
    """The LoRAs on this machine: the folder's files and the downloaded LoRA cards, by name."""

    def __init__(self, folder: Path, cards: Any, settings: Any = None) -> None:
        self.folder = Path(folder)
        self._cards = cards
        self._settings = settings

    def _card_file(self, card: Any) -> Path | None:
        if card.lora is None or self._settings is None:
            return None
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(card.source.repo, card.lora.file, cache_dir=str(self._settings.model_cache),
                                       revision=card.source.revision) if card.source.repo else None
        return Path(found) if isinstance(found, str) else None

    def names(self, family: str | None = None) -> list[str]:
        """Every LoRA name there is a file for; with `family`, those for it (folder files say no family)."""
        files = sorted(self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else []
        found = [p.stem for p in files if p.is_file() and NAME_PATTERN.fullmatch(p.stem)]
        for card in getattr(self._cards, "cards", {}).values():
            if LORA_TASK in card.tasks and card.id not in found and (family is None or card.family == family):
                if self._card_file(card) is not None:
                    found.append(card.id)
        return found

    def for_job(self, picks: Any, card: Any) -> list[tuple[LoraFile, float]]:
        """A job's picks (tasks/loras.LoraPick) as files and weights for `card`'s model; InvalidInput for an
        unknown name, a bad file, or a LoRA card of another family."""
        from ..families import FAMILIES

        chosen = []
        for pick in picks or []:
            lora = self.resolve(pick.name)
            if lora.family is not None:
                mine, theirs = FAMILIES.of(card), FAMILIES.of(self._cards.get(lora.name))
                if mine is not None and theirs is not None and mine.name != theirs.name:
                    raise InvalidInput(f"LoRA {lora.name!r} is for {theirs.title} models, not {card.title} "
                                       f"({mine.title})")
            chosen.append((lora, float(pick.weight)))
        return chosen

    def resolve(self, name: Any) -> LoraFile:
        """The LoRA called `name`, its header checked; InvalidInput for a bad or unknown name or a bad file."""
        name = check_name(name)
        path = self.folder / f"{name}{SUFFIX}"
        family = None
        if not path.is_file():
            card = getattr(self._cards, "cards", {}).get(name)
            if card is not None and LORA_TASK in card.tasks:
                found = self._card_file(card)
                if found is None:
                    raise InvalidInput(f"LoRA {name!r} is a card whose file is not downloaded yet: download it in "
                                       "the Models tab (or `studio models download`)")
                path, family = found, card.family
            else:
                known = self.names()
                listed = ", ".join(known[:12]) + (" …" if len(known) > 12 else "") if known else "none"
                raise InvalidInput(f"Unknown LoRA {name!r}: put {name}{SUFFIX} in the LoRA folder ({self.folder}) or "
                                   f"download its card. Available: {listed}")
        data, count = read_header(path, name)
        return LoraFile(name=name, path=path, family=family, data_bytes=data, tensors=count)
