"""The gallery service: browse the history a page at a time, and act on past jobs.

Everything the Gallery tab (and the CLI or API) does to a past job goes through here: find a page,
re-run a job with exactly its recorded parameters (its seed included, so the output is identical),
star it, delete it with its files, and export a selection as a zip with a JSON manifest. Reading
goes through HistoryStore; re-runs go through the JobQueue like every other job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from . import __version__
from .errors import InvalidInput
from .history import AssetRecord, HistoryStore, JobFilter, JobPage, JobRecord, JobStatus
from .history.search import job_model_ids
from .jobs import Job, JobQueue
from .media import THUMBNAIL_SOURCES
from .tasks import TASKS, get_task
from .zoo.cards import CardRegistry
from .history.tables import utcnow

log = logging.getLogger(__name__)

PAGE_SIZE = 48
# The default status filter: what a user looks for among past jobs is what they made. Refused and
# failed requests stay recorded (the Queue and the status filter show them).
SHOWN_STATUS = JobStatus.DONE.value
CAPTION_CHARS = 60  # a tile's caption: the prompt's start, cut at a word
MAX_EXPORT_JOBS = 1000
EXPORTS_DIR = "exports"  # under the outputs dir, so the browser may download what is made there
# Jobs that are still going cannot be deleted from under the worker: cancel first (issue: the queue).
_ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)


@dataclass(frozen=True)
class Export:
    """A zip written under outputs/exports/: its path, and how many jobs and files it holds."""

    path: Path
    jobs: int
    files: int


class Gallery:
    def __init__(self, history: HistoryStore, jobs: JobQueue, outputs_dir: Path, cards: CardRegistry) -> None:
        self._history = history
        self._jobs = jobs
        self._cards = cards
        self._outputs_dir = Path(outputs_dir)

    # -- reading ------------------------------------------------------------------------------

    def page(self, filters: JobFilter = JobFilter(), page: int = 1, page_size: int = PAGE_SIZE) -> JobPage:
        """Page `page` (1-based) of the jobs matching `filters`, newest first."""
        page = max(1, min(int(page), 10**9))
        return self._history.find_jobs(filters, limit=page_size, offset=(page - 1) * page_size)

    def job(self, job_id: str) -> JobRecord:
        record = self._history.get_job(job_id)
        if record is None:
            raise InvalidInput(f"job {job_id!r} is not in the history (it may have been deleted)")
        return record

    def model_choices(self) -> list[tuple[str, str]]:
        """(title, id) of the models worth filtering by, by title: those that generate (image, video,
        audio, music, compositional, anagram cards, not components such as text encoders or image
        tokenizers) and have jobs or can run; and, by id, models of past jobs no card names any more."""
        used = job_model_ids(self._history.engine)
        cards = self._cards.cards
        listed = [(card.title, card.id) for card in cards.values()
                  if set(card.tasks) & TASKS.keys() and (card.runnable or card.id in used)]
        gone = [(model_id, model_id) for model_id in used if model_id not in cards]
        return sorted(listed, key=lambda choice: choice[0].lower()) + sorted(gone)

    def path(self, asset: AssetRecord) -> Path:
        """Where an asset's file is: always inside the outputs dir, whatever the database says."""
        root = self._outputs_dir.resolve()
        target = (root / PurePosixPath(asset.path)).resolve()
        if not target.is_relative_to(root) or target == root:
            raise InvalidInput(f"asset path {asset.path!r} points outside the outputs folder")
        return target

    def thumbnail(self, job: JobRecord) -> Path | None:
        """The job's gallery picture: its thumbnail, or for jobs older than thumbnails its first picture."""
        by_kind = {a.kind: a for a in reversed(job.assets)}
        for kind in ("thumbnail", *THUMBNAIL_SOURCES):
            if kind in by_kind:
                return self.path(by_kind[kind])
        return None

    @staticmethod
    def outputs(job: JobRecord) -> list[AssetRecord]:
        """The job's own outputs, without the gallery thumbnail."""
        return [a for a in job.assets if a.kind != "thumbnail"]

    # -- acting -------------------------------------------------------------------------------

    def rerun(self, job_id: str) -> Job:
        """Submit the job again with its recorded parameters: same model, seed and settings, same output."""
        record = self.job(job_id)
        try:
            spec_type = get_task(record.task).spec_type
            params = spec_type.replayable(record.params, self._cards.cards.get(record.model_id))
        except InvalidInput:  # a task this version does not have: submit says so
            params = record.params
        return self._jobs.submit(record.task, params)

    def set_favorite(self, job_id: str, favorite: bool) -> None:
        self.job(job_id)
        self._history.set_favorite(job_id, favorite)

    def delete(self, job_id: str) -> int:
        """Delete a finished job: its rows first, then its files (a file left behind is harmless; a row
        pointing at a missing file is not). Returns how many files were removed."""
        record = self.job(job_id)
        if record.status in _ACTIVE:
            raise InvalidInput(f"job {job_id} is {record.status.value}; it can be deleted once it has finished")
        removed = self._history.delete_job(job_id)
        count = 0
        for asset in removed.assets:
            try:
                self.path(asset).unlink()
                count += 1
            except FileNotFoundError:
                pass
            except (OSError, InvalidInput) as err:
                log.warning("could not delete %s of job %s: %s", asset.path, job_id, err)
        return count

    def export(self, job_ids: list[str]) -> Export:
        """A zip of the jobs' outputs (`<job id>/<file>`) with `manifest.json` describing every job."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            raise InvalidInput("nothing to export: select one or more jobs first")
        if len(ids) > MAX_EXPORT_JOBS:
            raise InvalidInput(f"{len(ids)} jobs selected; export at most {MAX_EXPORT_JOBS} at a time")
        records = [self.job(job_id) for job_id in ids]
        folder = self._outputs_dir / EXPORTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        now = utcnow()
        target = folder / f"studio-export-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}.zip"  # never overwrites
        fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".zip.part", dir=folder)
        os.close(fd)
        files = 0
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                manifest = []
                for record in records:
                    entries = []
                    for asset in self.outputs(record):
                        source = self.path(asset)
                        if not source.is_file():
                            continue  # deleted by hand; the manifest says which files are in the zip
                        name = f"{record.id}/{source.name}"
                        zf.write(source, name)
                        files += 1
                        entries.append({"file": name, "kind": asset.kind, "mime": asset.mime, "bytes": asset.bytes,
                                        "sha256": asset.sha256, "width": asset.width, "height": asset.height,
                                        "duration_s": asset.duration_s})
                    manifest.append(_manifest_entry(record, entries))
                zf.writestr("manifest.json", json.dumps({"studio_version": __version__,
                                                         "exported_at": now.isoformat(), "jobs": manifest},
                                                        indent=2, ensure_ascii=False))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return Export(path=target, jobs=len(records), files=files)


def caption(job: JobRecord, limit: int = CAPTION_CHARS) -> str:
    """A gallery tile's caption: the job's prompt (one line, cut at a word with "…" past `limit`
    characters), starred when a favourite; task and model for a job without a prompt."""
    text = " ".join(job.prompt.split()) or f"{job.task} · {job.model_id}"
    if len(text) > limit:
        cut = text[:limit]
        if text[limit].isalnum():  # mid-word: back to the word's start, unless that loses half the text
            shorter = cut.rsplit(" ", 1)[0]
            cut = shorter if len(shorter) >= limit // 2 else cut
        text = cut.rstrip(" ,.;:|") + "…"
    return f"{'★ ' if job.favorite else ''}{text}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _manifest_entry(record: JobRecord, files: list[dict[str, object]]) -> dict[str, object]:
    return {"id": record.id, "task": record.task, "model": record.model_id, "status": record.status.value,
            "prompt": record.prompt, "negative_prompt": record.negative_prompt, "seed": record.seed,
            "params": record.params, "created_at": _iso(record.created_at), "finished_at": _iso(record.finished_at),
            "duration_s": record.duration_s, "placement": record.placement, "error": record.error,
            "device": record.device, "worker": record.worker,
            "favorite": record.favorite, "files": files}
