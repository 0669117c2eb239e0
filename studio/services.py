"""The composition root: builds the studio's services from Settings and wires them together.

CLI, UI, API and tests all work through one `Studio`: cards -> history -> memory scheduler -> job
queue -> gallery, plus the preset libraries. Nothing else constructs these services.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .gallery import Gallery
from .history import HistoryStore
from .history.installed import InstalledModels
from .history.user_presets import UserPresets
from .jobs import Job, JobQueue
from .media import remove_orphans, remove_partial_files
from .owner import QueueOwnership
from .preset_checks import task_problem
from .presets import PresetLibrary
from .runtime import budgets
from .runtime.loader import SharedComponents, load_pipeline
from .runtime.memory import MemoryScheduler
from .runtime.placement import Placement
from .runtime.quantize import estimate_gb
from .settings import Settings
from .zoo.cards import CardRegistry
from .zoo.downloads import DownloadManager
from .zoo.loras import LoraLibrary

log = logging.getLogger(__name__)


class Studio:
    def __init__(self, settings: Settings) -> None:
        settings.ensure_dirs()
        self.settings = settings
        self.cards = CardRegistry.load([settings.model_zoo_dir, settings.user_cards_dir])
        self.history = HistoryStore(settings.db_path)
        self.installed = InstalledModels(self.history.engine)
        self.downloads = DownloadManager(settings, self.cards, self.installed)
        self._shared = SharedComponents()
        self.scheduler = MemoryScheduler(
            self._load,
            device=settings.torch_device(),
            device_budget=budgets.device_budget(settings),
            ram_budget=budgets.ram_budget(settings),
            placement_for=self._placement_for,
            estimate_gb=lambda card: estimate_gb(card, settings),
        )
        self.loras = LoraLibrary(settings.lora_dir, self.cards, settings)
        self.jobs = JobQueue(self.cards, self.history, self.scheduler, settings.outputs_dir, self.loras,
                             preview_every=settings.preview_every)
        self.gallery = Gallery(self.history, self.jobs, settings.outputs_dir, self.cards)
        # Presets are data; what makes one valid for its tab's task is decided here, once, for all of them.
        self.preset_check = task_problem
        self.presets = PresetLibrary.load(settings.presets_dir, check=self.preset_check)  # logs each malformed file
        self.user_presets = UserPresets(self.history.engine, check=self.preset_check)
        self._ownership = QueueOwnership(settings.home)
        self.owner = False
        self._started = False

    def _placement_for(self, card) -> Placement | None:
        """A placement forced by Settings (for every model) or by the card; None lets the scheduler choose."""
        if self.settings.placement != "auto":
            return Placement(self.settings.placement)
        return Placement(card.placement) if card.placement else None

    def _load(self, card):
        pipeline = load_pipeline(card, self.settings, self._shared, self.cards)
        self.installed.touch(card.id)
        return pipeline

    def start(self, resume_downloads: bool = True) -> "Studio":
        """Start the job queue and the download queue. Idempotent.

        The first process on a data folder owns the queue: it recovers from a previous run that stopped
        mid-job (running jobs are marked interrupted, partly written files removed), then its worker runs
        what is pending, and interrupted downloads resume. Any other process on the same folder only
        submits jobs, which the owner runs, and follows them (see studio.owner)."""
        if self._started:
            return self
        self._started = True
        self.owner = self._ownership.acquire()
        if not self.owner:
            log.info("another studio process runs the queue of %s; jobs from here are run there", self.settings.home)
            self.jobs.start(run_jobs=False)
            self.downloads.start(resume=False)
            return self
        interrupted = self.history.interrupt_running()
        if interrupted:
            log.warning("%d job(s) were running when the studio stopped; marked interrupted (Re-run retries "
                        "them): %s", len(interrupted), ", ".join(interrupted))
        removed = remove_partial_files(self.settings.outputs_dir)
        if removed:
            log.warning("removed %d partly written output file(s) left by the previous run", removed)
        # Nothing is running now: a studio-named file that no row owns was written by a job the
        # previous run was killed in the middle of saving.
        orphans = remove_orphans(self.settings.outputs_dir, self.history.asset_paths())
        if orphans:
            log.warning("removed %d output file(s) of a save the previous run did not finish", orphans)
        self.jobs.start()
        self.downloads.start(resume=resume_downloads)
        return self

    def run(self, task: str, params: Mapping[str, Any], timeout: float | None = None) -> Job:
        """Submit a job and wait for it to finish (the CLI's and tests' synchronous path)."""
        job = self.jobs.submit(task, params)
        job.wait(timeout)
        return job

    def close(self, job_grace_s: float = 30.0) -> None:
        """Stop: no new job starts; the running one has `job_grace_s` to finish, else it is marked
        interrupted (as after a crash); then the database is closed."""
        self.downloads.stop()
        self.jobs.stop(job_grace_s)
        self.scheduler.free_all()
        self.history.close()
        self._ownership.release()

    def __enter__(self) -> "Studio":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
