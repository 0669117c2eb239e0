"""What a front end holds of a job: the live handle `JobQueue.submit` returns (status, progress,
outputs, waiting for the end) and a line of the Queue panel."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from .history import JobStatus
from .media import SavedFile
from .tasks.base import TaskSpec

if TYPE_CHECKING:
    from .runtime.preview import Preview


class Stage(str, Enum):
    """Where a job is, as a user reads it: in line, loading its model, encoding the prompt, making its
    steps, decoding them into pixels or sound, saving the files."""

    QUEUED = "queued"
    LOADING = "loading"
    ENCODING = "encoding"
    STEPS = "steps"
    DECODING = "decoding"
    SAVING = "saving"


@dataclass
class Job:
    """A handle on one submitted job: its live status, progress and result."""

    id: str
    task: str
    spec: TaskSpec | None
    status: JobStatus = JobStatus.PENDING
    step: int = 0
    total_steps: int = 0
    stage: Stage = Stage.QUEUED
    stage_detail: str = ""  # e.g. where the model is loaded from ("from disk", "already in memory")
    step_unit: str = "steps"  # what a step is: a denoising step, or a token step for autoregressive models
    outputs: list[SavedFile] = field(default_factory=list)
    error: str | None = None
    started: float | None = None  # time.monotonic() when it started running
    device: str = ""  # the device (or device group) its worker runs on, once claimed
    preview: "Preview | None" = None  # the latest live preview while it samples (runtime/preview.py)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (done, failed or cancelled); False on timeout."""
        return self._done.wait(timeout)

    def describe(self) -> str:
        """The stage in words, for a progress bar or a status line ("step 3/30", "loading … from disk")."""
        if self.stage is Stage.LOADING:
            return f"loading the model {self.stage_detail}".strip()
        if self.stage is Stage.ENCODING:
            return "encoding the prompt"
        if self.stage is Stage.STEPS:
            return f"{self.step_unit} {self.step}/{self.total_steps}"
        if self.stage is Stage.DECODING:
            return "decoding"
        if self.stage is Stage.SAVING:
            return "saving"
        return "queued"

    def _finish(self, status: JobStatus, error: str | None = None) -> None:
        self.status, self.error = status, error
        self._done.set()


@dataclass(frozen=True)
class QueueEntry:
    """A job in line or running, as the Queue panel shows it."""

    job_id: str
    task: str
    model_id: str
    prompt: str
    status: JobStatus
    position: int  # 0 = running, 1 = next, ...
    step: int
    total_steps: int
    eta_s: float | None  # seconds until it is done, from recent jobs of the same task and model
    stage: str = "waiting"  # what the running job is doing, in words (Job.describe)
