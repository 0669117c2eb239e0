"""Fetching a model's files from the Hugging Face hub into the shared cache, resumably and verified.

huggingface_hub supplies the repo metadata (sizes and hashes of every file), URLs, auth headers and
the HTTP transfer with resume (`http_get(resume_size=...)`); this module decides which files a card
needs and keeps one persistent partial file per blob (`blobs/<hash>.studio-partial`), so a download
cut off by a cancel, a crash or a restart continues where it stopped and no byte is fetched twice.
(hf_hub_download itself discards partial files on failure.) A finished file is checked against the
hub's hash, then placed in the standard cache layout (blobs/, snapshots/<commit>/, refs/) that
diffusers and transformers read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from ..errors import StudioError
from .cards import ModelCard

log = logging.getLogger(__name__)

# What a diffusers/transformers load needs: configs, tokenizers, safetensors weights. Pickle-based
# weight formats are never fetched: the loader only accepts safetensors.
DEFAULT_ALLOW = ["*.json", "*.txt", "*.model", "*.safetensors", "*.tiktoken", "*.jinja"]
DEFAULT_IGNORE = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.gguf"]
PARTIAL_SUFFIX = ".studio-partial"
DISK_MARGIN = 512 * 2**20  # keep this much free after a download
# http_get keeps only whole chunks when a connection drops mid-file (its own retry resumes from the
# last one), so the chunk size bounds what a drop costs again; the library's 10 MiB is coarse for
# progress and resume alike.
CHUNK_SIZE = 2**20


class DownloadError(StudioError):
    """A download could not be done; the message says why and what to do."""


class DownloadCancelled(Exception):
    """Raised from inside the transfer when the user cancels; partial files are kept for a resume."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # POSIX path in the repo
    size: int
    etag: str  # sha256 for LFS files, the git blob sha1 otherwise: also the blob's name in the cache
    lfs: bool


@dataclass(frozen=True)
class RepoPlan:
    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(PurePosixPath(path).name, p) for p in patterns)


def select_files(files: Iterable[RemoteFile], card: ModelCard) -> list[RemoteFile]:
    """The files of the repo that loading this card needs, with the card's weight variant preferred."""
    allow = card.allow_patterns or DEFAULT_ALLOW
    ignore = card.ignore_patterns if card.ignore_patterns is not None else DEFAULT_IGNORE
    chosen = [f for f in files if _matches(f.path, allow) and not _matches(f.path, ignore)]
    if card.variant:
        tag = f".{card.variant}."
        folders_with_variant = {PurePosixPath(f.path).parent for f in chosen if tag in f.path}

        def keep(f: RemoteFile) -> bool:
            is_weights = f.path.endswith(".safetensors") or ".safetensors.index" in f.path
            folder = PurePosixPath(f.path).parent
            return not is_weights or folder not in folders_with_variant or tag in f.path

        chosen = [f for f in chosen if keep(f)]
    elif card.library == "diffusers":
        # Without a variant, diffusers loads the plain weights; don't fetch the fp16 copies too.
        chosen = [f for f in chosen if not any(f".{v}." in f.path for v in ("fp16", "bf16", "fp32"))]
    return chosen


def explain_hub_error(err: BaseException, repo_id: str, endpoint: str) -> str:
    """A message that tells the user what went wrong with the hub and what to do about it."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, GatedRepoError) or status in (401, 403):
        return (f"{repo_id} is gated: accept its license on {endpoint}/{repo_id} with your account, then give the "
                "studio an access token (set HF_TOKEN in the environment, or run `hf auth login`) and try again.")
    if isinstance(err, RevisionNotFoundError):
        return f"{repo_id} has no revision by that name: check the card's `revision`."
    if isinstance(err, RepositoryNotFoundError):
        return f"{repo_id} was not found on {endpoint} (or it is private and needs an access token)."
    if isinstance(err, HfHubHTTPError):
        return f"The hub answered an error for {repo_id}: {err}"
    return (f"Cannot reach the model hub at {endpoint} ({type(err).__name__}). Check the network connection "
            "(or HF_ENDPOINT), then try again.")


def fetch_plan(card: ModelCard, endpoint: str, token: str | None, timeout: float | None = None) -> RepoPlan:
    """Ask the hub for the card's repo: the commit and the files to fetch, with sizes and hashes
    (`timeout`: seconds to wait for the hub's answer; None: huggingface_hub's default)."""
    from huggingface_hub import HfApi

    repo_id = card.source.repo
    try:
        info = HfApi(endpoint=endpoint, token=token or False).model_info(
            repo_id, revision=card.source.revision, files_metadata=True, timeout=timeout)
    except Exception as err:
        raise DownloadError(explain_hub_error(err, repo_id, endpoint)) from err
    remote = [RemoteFile(path=s.rfilename, size=int(s.size or 0),
                         etag=(s.lfs.sha256 if s.lfs else s.blob_id), lfs=s.lfs is not None)
              for s in info.siblings or []]
    files = select_files(remote, card)
    if not files:
        raise DownloadError(f"{repo_id} has none of the files this card needs (patterns: "
                            f"{card.allow_patterns or DEFAULT_ALLOW}).")
    return RepoPlan(repo_id=repo_id, revision=card.source.revision, commit=info.sha, files=tuple(files))


class _ByteCounter:
    """Stands in for the tqdm bar huggingface_hub drives: reports every chunk received."""

    def __init__(self, on_bytes: Callable[[int], None]) -> None:
        self._on_bytes = on_bytes

    def __call__(self, **_kwargs: Any) -> "_ByteCounter":
        return self

    def __enter__(self) -> "_ByteCounter":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        self._on_bytes(n)


class _CancellableFile:
    """The partial file as http_get sees it: a cancel takes effect right after a chunk is written,
    so every byte received is kept for the resume (http_get counts a chunk before writing it)."""

    def __init__(self, raw: Any, cancelled: threading.Event) -> None:
        self._raw = raw
        self._cancelled = cancelled

    def write(self, data: bytes) -> int:
        written = self._raw.write(data)
        if self._cancelled.is_set():
            self._raw.flush()
            raise DownloadCancelled()
        return written

    def __getattr__(self, name: str) -> Any:  # seek, tell, truncate, flush, fileno
        return getattr(self._raw, name)


def file_digest(path: Path, lfs: bool) -> str:
    """The hash the hub states for a file: sha256 for LFS files, git's blob sha1 for the others."""
    h = hashlib.sha256() if lfs else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


class RepoFetcher:
    """Brings the files of one RepoPlan into the cache. `on_bytes(n)` reports every chunk received."""

    def __init__(self, cache_dir: Path, endpoint: str, token: str | None) -> None:
        self.cache_dir = Path(cache_dir)
        self.endpoint = endpoint
        self.token = token

    def present_bytes(self, plan: RepoPlan) -> int:
        """Bytes of the plan already on disk (finished blobs and partial files)."""
        blobs = repo_folder(self.cache_dir, plan.repo_id) / "blobs"
        done = 0
        for f in plan.files:
            blob, partial = blobs / f.etag, blobs / (f.etag + PARTIAL_SUFFIX)
            if blob.exists():
                done += f.size
            elif partial.exists():
                done += min(partial.stat().st_size, f.size)
        return done

    def check_disk(self, plan: RepoPlan) -> None:
        missing = plan.total_bytes - self.present_bytes(plan)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.cache_dir).free
        if missing + DISK_MARGIN > free:
            raise DownloadError(f"Not enough disk space for {plan.repo_id}: it needs {missing / 2**30:.1f} GB more, "
                                f"{free / 2**30:.1f} GB are free in {self.cache_dir}.")

    def fetch(self, plan: RepoPlan, on_bytes: Callable[[int], None], cancelled: threading.Event) -> Path:
        """Download whatever is missing, verify it, and return the snapshot folder."""
        repo_dir = repo_folder(self.cache_dir, plan.repo_id)
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot = repo_dir / "snapshots" / plan.commit
        for remote in plan.files:
            if cancelled.is_set():
                raise DownloadCancelled()
            blob = repo_dir / "blobs" / remote.etag
            if not blob.exists():
                self._fetch_blob(plan, remote, blob, on_bytes, cancelled)
            self._link(snapshot, remote.path, blob)
        (repo_dir / "refs").mkdir(exist_ok=True)
        if plan.revision != plan.commit:
            (repo_dir / "refs" / plan.revision).write_text(plan.commit)
        return snapshot

    def _fetch_blob(self, plan: RepoPlan, remote: RemoteFile, blob: Path, on_bytes: Callable[[int], None],
                    cancelled: threading.Event) -> None:
        from huggingface_hub import constants, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK_SIZE)

        partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
        url = hf_hub_url(plan.repo_id, remote.path, revision=plan.commit, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token or False)
        for attempt in (1, 2):
            if partial.exists() and partial.stat().st_size > remote.size:
                partial.unlink()  # longer than the file can be: not ours to trust
            # Not append mode: http_get seeks back if a server ignores the Range and resends it all.
            with partial.open("r+b" if partial.exists() else "wb") as out:
                out.seek(0, os.SEEK_END)
                try:
                    http_get(url, _CancellableFile(out, cancelled), resume_size=out.tell(), headers=headers,
                             expected_size=remote.size, tqdm_class=_ByteCounter(on_bytes))  # type: ignore[arg-type]
                except DownloadCancelled:
                    raise
                except Exception as err:
                    raise DownloadError(f"Downloading {remote.path} of {plan.repo_id} failed: "
                                        f"{explain_hub_error(err, plan.repo_id, self.endpoint)}") from err
                out.flush()
                os.fsync(out.fileno())
            if file_digest(partial, remote.lfs) == remote.etag:
                os.replace(partial, blob)
                return
            log.warning("%s of %s failed verification (attempt %d)", remote.path, plan.repo_id, attempt)
            on_bytes(-partial.stat().st_size)  # those bytes will be fetched again
            partial.unlink()
        raise DownloadError(f"{remote.path} of {plan.repo_id} arrived corrupted twice (its hash does not match the "
                            "hub's); nothing was kept. Try again later.")

    @staticmethod
    def _link(snapshot: Path, repo_path: str, blob: Path) -> None:
        target = snapshot / repo_path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:  # no symlinks (some Windows set-ups): a copy, as huggingface_hub does then
            shutil.copyfile(blob, target)
