"""Built-in tiny models of the real architectures, for offline use and tests.

Each model family declares its builders (studio.families); a builder (builtin_image, _video, _audio,
_llamagen) makes a diffusers pipeline, a transformers model or the official file layout of a native
engine from tiny configs of the real classes, with seeded random weights and a tokenizer built
in-process (tiny_parts). It is saved once, in diffusers format, as a snapshot in the Hugging Face cache layout
(`models--studio-builtin--NAME/snapshots/REV`, `refs/main`), so from then on it loads through exactly
the same `from_pretrained(repo_id, cache_dir=..., local_files_only=True)` call as a downloaded
checkpoint. Weights are random: outputs are noise-like pictures, which is all a test needs.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Callable

from filelock import FileLock

from ..families import FAMILIES
from .tiny_parts import SEED

BUILTIN_NAMESPACE = "studio-builtin"
# Bump when a builder changes: a new revision is built next to the old one.
BUILDER_VERSION = "3"
# Weights trained here and shipped with the studio (the mini models), one folder per built-in model's name.
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "minis" / "weights"


def builders() -> dict[str, Callable[[], object]]:
    """Every built-in model builder by name, as the model families declare them (imported on first use)."""
    return {name: (lambda name=name: FAMILIES.builder(name)()) for name in FAMILIES.builder_names()}


def builtin_repo_id(name: str) -> str:
    return f"{BUILTIN_NAMESPACE}/{name}"


def builtin_revision(name: str) -> str:
    """A commit-like hash that changes whenever the builder does, or the weights it ships (a mini model's)."""
    return hashlib.sha1(f"{name}:{BUILDER_VERSION}:{SEED}{shipped_weights_digest(name)}".encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def shipped_weights_digest(name: str, root: Path = SHIPPED_WEIGHTS) -> str:
    """":" + sha1 of the files a built-in model ships in the repository (studio/minis/weights/NAME), "" when it
    ships none: retrained weights get a snapshot of their own, never the cached one of the old weights."""
    folder = root / name
    if not folder.is_dir():
        return ""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return ":" + digest.hexdigest()


def ensure_builtin(name: str, cache_dir: Path) -> tuple[str, str]:
    """Build and save the tiny model `name` into the HF cache unless it is there; return (repo_id, revision)."""
    BUILDERS = builders()
    if name not in BUILDERS:
        raise KeyError(f"no built-in model builder named {name!r}; known: {', '.join(sorted(BUILDERS))}")
    repo_id, revision = builtin_repo_id(name), builtin_revision(name)
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision

    def done() -> bool:  # the snapshot appears whole: it is renamed into place once every file is written
        return snapshot.is_dir() and any(snapshot.iterdir())

    if done():
        return repo_id, revision
    repo_dir.mkdir(parents=True, exist_ok=True)
    # Two processes starting at once (a test run and the app) must not write the same snapshot.
    with FileLock(str(repo_dir / ".studio-build.lock")):
        if not done():
            staging = repo_dir / f".building-{uuid.uuid4().hex}"
            try:
                BUILDERS[name]().save_pretrained(staging, safe_serialization=True)
                snapshot.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(snapshot, ignore_errors=True)
                staging.rename(snapshot)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(revision)
    return repo_id, revision
