"""The composition root: builds the studio's services from Settings and wires them together.

CLI, UI, API and tests all work through one `Studio`: cards -> history -> memory scheduler -> job
queue -> gallery, plus the preset libraries. Nothing else constructs these services.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from .gallery import Gallery
from .history import HistoryStore
from .history.installed import InstalledModels
from .history.notify import Listener, notify
from .history.workers import WorkerBook
from .history.user_presets import UserPresets
from .jobs import Job, JobQueue
from .media import remove_orphans, remove_partial_files
from .owner import QueueOwnership
from .wakeup import WakeListener, signal
from .preset_checks import task_problem
from .presets import PresetLibrary
from .errors import InvalidInput
from .runtime import budgets, multi_gpu
from .runtime.loader import SharedComponents, load_pipeline
from .runtime.memory import MemoryScheduler
from .runtime.placement import Placement
from .runtime.quantize import estimate_gb
from .settings import Settings
from .zoo.availability import is_ready
from .zoo.cards import CardRegistry
from .zoo.downloads import DownloadManager
from .zoo.loras import LoraLibrary

log = logging.getLogger(__name__)


class Studio:
    def __init__(self, settings: Settings) -> None:
        settings.ensure_dirs()
        self.settings = settings
        self.cards = CardRegistry.load([settings.model_zoo_dir, settings.user_cards_dir])
        self.history = HistoryStore(settings.db_target)
        self.installed = InstalledModels(self.history.engine)
        self.downloads = DownloadManager(settings, self.cards, self.installed)
        # Loading is one at a time in a process: accelerate's empty-weights initialisation patches torch.nn
        # for the whole process, so two workers loading at once would see each other's meta tensors.
        self._load_lock = threading.Lock()
        self.devices = settings.worker_devices()
        # One scheduler per worker, each with its own device and budget (a CPU worker's budget is RAM).
        self.schedulers = [self._scheduler_for(device) for device in self.devices]
        self.scheduler = self.schedulers[0]
        self.loras = LoraLibrary(settings.lora_dir, self.cards, settings)
        book = WorkerBook(self.history.engine, settings.lease_s, requeue_lost=settings.lost_jobs == "requeue",
                          host_id=settings.host_id)
        self.jobs = JobQueue(self.cards, self.history, self.schedulers, settings.outputs_dir, self.loras,
                             preview_every=settings.preview_every, devices=self.devices, book=book)
        self.jobs.ready_models = self._ready_models
        self.gallery = Gallery(self.history, self.jobs, settings.outputs_dir, self.cards)
        # Presets are data; what makes one valid for its tab's task is decided here, once, for all of them.
        self.preset_check = task_problem
        self.presets = PresetLibrary.load(settings.presets_dir, check=self.preset_check)  # logs each malformed file
        self.user_presets = UserPresets(self.history.engine, check=self.preset_check)
        self._ownership = QueueOwnership(settings.home)
        self._wakeup: WakeListener | None = None
        self._listener: Listener | None = None
        self.owner = False
        self._started = False

    def _scheduler_for(self, device: str) -> MemoryScheduler:
        """A worker's scheduler: its device (or device group, whose GPUs it may spread one model over:
        runtime/multi_gpu.py) and budget."""
        if multi_gpu.is_group(device):
            try:
                multi_gpu.check_visible(multi_gpu.parse_device_group(device))
            except ValueError as err:
                raise InvalidInput(f"devices: {err}") from None
        on_device = self.settings if device == self.settings.torch_device() else self.settings.replace(device=device)
        # A component shared by two pipelines moves with them: only pipelines of one worker's device share one.
        shared = SharedComponents()
        return MemoryScheduler(
            lambda card, **placing: self._load(card, on_device, shared, **placing),
            device=device,
            device_budget=budgets.device_budget(on_device, device),
            member_budgets=budgets.member_budgets(on_device, device) if multi_gpu.is_group(device) else None,
            ram_budget=budgets.ram_budget(on_device, device),
            placement_for=self._placement_for,
            estimate_gb=lambda card: estimate_gb(card, on_device),
        )

    def _ready_models(self) -> set[str]:
        """The runnable models whose files are all on this host (what its workers can take from a shared queue)."""
        return {card.id for card in self.cards.cards.values()
                if card.runnable and is_ready(card, self.cards, self.settings)}

    def _placement_for(self, card) -> Placement | None:
        """A placement forced by Settings (for every model) or by the card; None lets the scheduler choose."""
        if self.settings.placement != "auto":
            return Placement(self.settings.placement)
        return Placement(card.placement) if card.placement else None

    def _load(self, card, settings: Settings, shared: SharedComponents, **placing: Any):
        # `placing`: device_map / max_memory when the scheduler spreads the model over a device group.
        with self._load_lock:
            pipeline = load_pipeline(card, settings, shared, self.cards, **placing)
        self.installed.touch(card.id)
        return pipeline

    def start(self, resume_downloads: bool = True, run_jobs: bool | None = None) -> "Studio":
        """Start the job queue's workers (or its follower) and the download queue. Idempotent.

        On SQLite the first process on a data folder owns the queue (studio.owner): its workers run what is
        pending; any other process on the same folder only submits jobs, which the owner runs, and follows
        them. On PostgreSQL every process with workers runs them (`run_jobs`, default Settings.run_worker),
        on any host: they share the line through the database. A process that runs jobs first recovers from
        workers that died (their running jobs are marked interrupted, or re-queued: history/workers.py) and,
        when no other worker is alive, removes partly written files."""
        if self._started:
            return self
        self._started = True
        want = self.settings.run_worker if run_jobs is None else run_jobs
        postgres = self.history.engine.dialect.name == "postgresql"
        self.owner = want and (postgres or self._ownership.acquire())
        if postgres:
            self._listen()
        if not self.owner:
            if not postgres:
                log.info("another studio process runs the queue of %s; jobs from here are run there",
                         self.settings.home)
                # Each job committed here signals the owner's worker, which would otherwise find it at its poll.
                self.jobs.on_submitted = lambda: signal(self._ownership.owner_port())
            self.jobs.start(run_jobs=False)
            self.downloads.start(resume=False)
            return self
        self._recover()
        if not postgres and self._ownership.exclusive:  # other processes can find this one: let them wake it
            try:
                self._wakeup = WakeListener(self.jobs.wake)
                self._ownership.announce(self._wakeup.port)
            except OSError as err:  # no loopback socket: other processes' jobs start at the worker's poll
                log.warning("no wake-up port for other studio processes (%s); their jobs wait for the poll", err)
        self.jobs.start()
        self.downloads.start(resume=resume_downloads)
        return self

    def start_client(self) -> "Studio":
        """Start for a command that submits jobs and waits for them (`studio generate`, `history rerun`): on
        PostgreSQL its jobs go to the live workers when there are any, and it runs them itself only when
        none is (on SQLite the data folder's lock decides, as for any start)."""
        if self.history.engine.dialect.name == "postgresql":
            alone = self.settings.run_worker and not self.jobs.book.live()
            self.jobs.own_jobs_only = alone  # then it runs its own jobs only, never other people's
            return self.start(run_jobs=alone)
        return self.start()

    def _recover(self) -> None:
        """Before this process's workers start: end the jobs of workers that died, and, when no other worker
        is alive (nobody else may be writing outputs), remove what a killed save left behind."""
        book = self.jobs.book
        ended = book.reap()
        if ended:
            log.warning("%d job(s) were running when their worker stopped; marked interrupted or re-queued: %s",
                        len(ended), ", ".join(ended))
        # Registered before looking: a host starting at the same moment then sees this one and sweeps nothing.
        for worker in self.jobs.workers:
            book.register(worker.id, worker.device)
        if book.live(exclude={w.id for w in self.jobs.workers}):
            return
        removed = remove_partial_files(self.settings.outputs_dir)
        if removed:
            log.warning("removed %d partly written output file(s) left by the previous run", removed)
        # Nothing is running now: a studio-named file that no row owns was written by a job the
        # previous run was killed in the middle of saving.
        orphans = remove_orphans(self.settings.outputs_dir, self.history.asset_paths())
        if orphans:
            log.warning("removed %d output file(s) of a save the previous run did not finish", orphans)

    def _listen(self) -> None:
        """PostgreSQL: hear other processes' submits, resumes and cancels at once (LISTEN), and tell them of
        this one's (NOTIFY); the heartbeat and the poll stay as the fallback."""
        self._listener = Listener(self.history.engine, self._heard)
        self.jobs.on_submitted = lambda: notify(self.history.engine, "wake")
        self.jobs.on_cancel_requested = lambda job_id: notify(self.history.engine, f"cancel {job_id}")

    def _heard(self, message: str) -> None:
        word, _, job_id = message.partition(" ")
        if word == "cancel":
            for job in self.jobs.running_jobs():
                if job.id == job_id:
                    job._cancel.set()
        self.jobs.wake()

    def run(self, task: str, params: Mapping[str, Any], timeout: float | None = None) -> Job:
        """Submit a job and wait for it to finish (the CLI's and tests' synchronous path)."""
        job = self.jobs.submit(task, params)
        job.wait(timeout)
        return job

    def close(self, job_grace_s: float = 30.0) -> None:
        """Stop: no new job starts; the running one has `job_grace_s` to finish, else it is marked
        interrupted (as after a crash); then the database is closed."""
        self.downloads.stop()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None
        self.jobs.stop(job_grace_s)
        for scheduler in self.schedulers:
            scheduler.free_all()
        self.history.close()
        self._ownership.release()

    def __enter__(self) -> "Studio":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
