"""The composition root: builds the studio's services from Settings and wires them together.

CLI, UI, API and tests all work through one `Studio`: cards -> history -> memory scheduler -> job
queue. Nothing else constructs these services.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .history import HistoryStore
from .jobs import Job, JobQueue
from .runtime.loader import load_pipeline
from .runtime.memory import MemoryScheduler
from .settings import Settings
from .zoo.cards import CardRegistry

log = logging.getLogger(__name__)


class Studio:
    def __init__(self, settings: Settings) -> None:
        settings.ensure_dirs()
        self.settings = settings
        self.cards = CardRegistry.load([settings.model_zoo_dir, settings.user_cards_dir])
        self.history = HistoryStore(settings.db_path)
        self.scheduler = MemoryScheduler(lambda card: load_pipeline(card, settings))
        self.jobs = JobQueue(self.cards, self.history, self.scheduler, settings.outputs_dir)

    def start(self) -> "Studio":
        self.jobs.start()
        return self

    def run(self, task: str, params: Mapping[str, Any], timeout: float | None = None) -> Job:
        """Submit a job and wait for it to finish (the CLI's and tests' synchronous path)."""
        job = self.jobs.submit(task, params)
        job.wait(timeout)
        return job

    def close(self) -> None:
        self.jobs.stop()
        self.scheduler.free_all()
        self.history.close()

    def __enter__(self) -> "Studio":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
