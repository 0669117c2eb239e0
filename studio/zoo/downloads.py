"""The download queue behind the Models tab and `studio models download`.

One background thread fetches queued models in order. Each download's live state (bytes done,
speed, ETA) is kept in memory for the UI; its lasting state is an `installed_models` row. A download
that was running when the studio stopped is queued again at start-up and resumes from its partial
files. Before a download, `size` says what it would fetch (see download_size). Remove deletes that
model's revision from the cache through huggingface_hub's cache manager, which keeps any blob another
model still uses.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StudioError
from ..history.installed import InstalledModels, InstallRecord, InstallStatus
from ..settings import Settings
from .availability import is_available, is_ready
from .cards import CardRegistry, ModelCard
from .download_size import DownloadSize, SizeLookup
from .hub import DownloadCancelled, DownloadError, RemoteFile, RepoFetcher, fetch_plan, repo_folder, select_files

log = logging.getLogger(__name__)


@dataclass
class DownloadState:
    """What the UI shows of one download while it is queued or running."""

    card_id: str
    status: InstallStatus = InstallStatus.QUEUED
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    _resumed_from: int = 0
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 0.0

    @property
    def speed(self) -> float:
        """Bytes per second fetched in this session (bytes found on disk at the start don't count)."""
        elapsed = time.monotonic() - self.started
        return (self.bytes_done - self._resumed_from) / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        speed = self.speed
        return (self.bytes_total - self.bytes_done) / speed if speed > 0 else None

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


_STOP = "__stop__"


class DownloadManager:
    def __init__(self, settings: Settings, cards: CardRegistry, records: InstalledModels) -> None:
        self._settings = settings
        self._cards = cards
        self._records = records
        self._states: dict[str, DownloadState] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.sizes = SizeLookup(settings.hf_endpoint, self._token)

    def _token(self) -> str | None:
        if self._settings.hf_token:
            return self._settings.hf_token
        from huggingface_hub import get_token

        return get_token()

    # -- what the UI and CLI call -------------------------------------------------------------------

    def start(self, resume: bool = True) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="studio-downloads", daemon=True)
            self._thread.start()
        if not resume:
            return
        # Downloads cut off by a stop or a crash carry on from their partial files.
        for record in self._records.all().values():
            unfinished = record.status in (InstallStatus.QUEUED, InstallStatus.DOWNLOADING)
            if unfinished and record.card_id in self._cards.cards:
                self.enqueue(record.card_id)

    def stop(self, timeout: float = 10) -> None:
        with self._lock:
            for state in self._states.values():
                state._cancel.set()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def downloadable(self, card: ModelCard) -> None:
        """Raise StudioError when this card has nothing to download."""
        if card.source.builtin:
            raise StudioError(f"{card.title} is built in: it needs no download.")

    def enqueue(self, card_id: str) -> DownloadState:
        """Queue the card's download, and that of each component card it requires that is not here yet
        (the registry has refused cards whose requirements loop)."""
        card = self._cards.get(card_id)
        self.downloadable(card)

        for required_id in card.requires:
            required = self._cards.get(required_id)
            if not required.source.builtin and not is_available(required, self._settings):
                self.enqueue(required_id)
        with self._lock:
            state = self._states.get(card_id)
            if state is not None and not state._done.is_set():
                return state  # already queued or running
            state = DownloadState(card_id)
            self._states[card_id] = state
        self._records.upsert(card_id, repo_id=card.source.repo, revision=card.source.revision,
                             status=InstallStatus.QUEUED, error=None)
        self._queue.put(card_id)
        return state

    def size(self, card_id: str, wait: float = 0.0) -> DownloadSize | None:
        """What Download would fetch for this card, and how much of it is here; None for a built-in card.
        Waits at most `wait` seconds for the hub (see SizeLookup); until it answers, `pending`."""
        card = self._cards.get(card_id)
        if card.source.builtin:
            return None
        record = self._records.get(card_id)
        if record is not None and record.status is InstallStatus.READY and record.bytes and \
                is_ready(card, self._cards, self._settings):
            return DownloadSize(total=record.bytes, present=record.bytes)  # downloaded: no need to ask
        # The components Download also queues: those it requires (and they require) that are not here.
        cards, todo = [card], list(card.requires)
        while todo:
            required = self._cards.get(todo.pop(0))
            counted = any(required.id == c.id for c in cards)
            if not counted and not required.source.builtin and not is_available(required, self._settings):
                cards.append(required)
                todo.extend(required.requires)
        answers = self.sizes.answers(cards, wait)
        components = tuple(c.title for c in cards[1:])
        failed = next((a.error for a in answers.values() if a is not None and a.error), None)
        if failed or None in answers.values():
            present = sum(disk_bytes(self._settings, c) for c in cards)
            return DownloadSize(total=None, present=present, pending=not failed, error=failed, components=components)
        fetcher = RepoFetcher(self._settings.model_cache, self._settings.hf_endpoint, None)
        plans = [answers[c.id].plan for c in cards]
        return DownloadSize(total=sum(p.total_bytes for p in plans),
                            present=sum(fetcher.present_bytes(p) for p in plans), components=components)

    def cancel(self, card_id: str) -> bool:
        """Stop a queued or running download; its partial files stay for a later resume."""
        with self._lock:
            state = self._states.get(card_id)
        if state is None or state._done.is_set():
            return False
        state._cancel.set()
        return True

    def state(self, card_id: str) -> DownloadState | None:
        with self._lock:
            return self._states.get(card_id)

    def record(self, card_id: str) -> InstallRecord | None:
        return self._records.get(card_id)

    def remove(self, card_id: str) -> int:
        """Delete the model's files from the cache (and its record); returns the bytes freed."""
        from huggingface_hub import scan_cache_dir

        card = self._cards.get(card_id)
        self.downloadable(card)
        state = self.state(card_id)
        if state is not None and not state._done.is_set():
            raise StudioError(f"{card.title} is still downloading: cancel it first.")
        freed = 0
        folder = repo_folder(self._settings.model_cache, card.source.repo)
        siblings = self._siblings_here(card)
        if folder.exists() and siblings:
            # Another model lives in the same repo (LlamaGen's B/L/XL share one): only this card's own files go.
            freed = _remove_files_of(folder, card, siblings)
        elif folder.exists():
            info = scan_cache_dir(self._settings.model_cache)
            revisions = [rev.commit_hash for repo in info.repos if repo.repo_id == card.source.repo
                         and repo.repo_type == "model" for rev in repo.revisions]
            if revisions:
                strategy = info.delete_revisions(*revisions)
                freed = strategy.expected_freed_size
                strategy.execute()
            for partial in folder.glob("blobs/*.studio-partial"):
                freed += partial.stat().st_size
                partial.unlink()
        self._records.delete(card_id)
        return freed

    def _siblings_here(self, card: ModelCard) -> list[ModelCard]:
        """Other cards on the same repo whose files are in the cache."""

        return [other for other in self._cards.cards.values()
                if other.id != card.id and other.source.repo == card.source.repo
                and (self._records.get(other.id) is not None or is_available(other, self._settings))]

    # -- the worker -----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            card_id = self._queue.get()
            if card_id == _STOP:
                return
            state = self.state(card_id)
            if state is None or state._done.is_set():
                continue
            try:
                self._download(self._cards.get(card_id), state)
            except Exception:  # _download records its own failures; never let the thread die
                log.exception("download of %s failed unexpectedly", card_id)
            finally:
                state._done.set()

    def _download(self, card: ModelCard, state: DownloadState) -> None:
        if state._cancel.is_set():
            self._finish(state, InstallStatus.CANCELLED)
            return
        fetcher = RepoFetcher(self._settings.model_cache, self._settings.hf_endpoint, self._token())
        try:
            plan = fetch_plan(card, self._settings.hf_endpoint, self._token())
            self.sizes.remember(card.id, plan)  # the freshest listing there is
            fetcher.check_disk(plan)
            state.bytes_total = plan.total_bytes
            state.bytes_done = state._resumed_from = fetcher.present_bytes(plan)
            state.started = time.monotonic()
            state.status = InstallStatus.DOWNLOADING
            self._records.upsert(card.id, status=InstallStatus.DOWNLOADING, commit=plan.commit)

            def on_bytes(n: int) -> None:
                state.bytes_done += n

            snapshot = fetcher.fetch(plan, on_bytes, state._cancel)
        except DownloadCancelled:
            self._finish(state, InstallStatus.CANCELLED)
            return
        except (DownloadError, StudioError) as err:
            self._finish(state, InstallStatus.FAILED, str(err))
            return
        except Exception as err:
            log.exception("download of %s failed", card.id)
            self._finish(state, InstallStatus.FAILED, f"Internal error: {type(err).__name__}: {err}")
            return
        from ..history.tables import utcnow

        state.bytes_done = plan.total_bytes
        self._records.upsert(card.id, status=InstallStatus.READY, local_path=str(snapshot), bytes=plan.total_bytes,
                             installed_at=utcnow(), error=None)
        state.status = InstallStatus.READY

    def _finish(self, state: DownloadState, status: InstallStatus, error: str | None = None) -> None:
        state.status, state.error = status, error
        self._records.upsert(state.card_id, status=status, error=error)


def disk_bytes(settings: Settings, card: ModelCard) -> int:
    """Bytes the card's files take in the cache (downloads: blobs incl. partial files; built-ins: the snapshot)."""
    repo_id = card.source.repo or f"studio-builtin/{card.source.builtin}"
    folder = repo_folder(settings.model_cache, repo_id)
    # A download's snapshot holds links into blobs/; a built-in model is saved as plain files.
    files = folder.glob("blobs/*") if card.source.repo else folder.rglob("*")
    return sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())


def _remove_files_of(folder: Path, card: ModelCard, keep_for: list[ModelCard]) -> int:
    """Delete the snapshot files `card` fetched that none of `keep_for` fetches too, and their blobs
    once no snapshot points at them; returns the bytes freed."""
    def wanted_by(owner: ModelCard, relpath: str) -> bool:
        return bool(select_files([RemoteFile(path=relpath, size=0, etag="", lfs=False)], owner))

    freed = 0
    links = [p for p in folder.glob("snapshots/*/**/*") if p.is_symlink() or p.is_file()]
    for link in links:
        relpath = "/".join(link.relative_to(folder / "snapshots").parts[1:])  # the path inside the repo
        if not wanted_by(card, relpath) or any(wanted_by(other, relpath) for other in keep_for):
            continue
        blob = link.resolve()
        link.unlink()
        still_used = any(p.resolve() == blob for p in links if p.is_symlink() and p.exists())
        if blob.is_file() and not still_used and blob.parent.name == "blobs":
            freed += blob.stat().st_size
            blob.unlink()
    return freed
