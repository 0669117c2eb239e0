"""Widgets and glue every tab shares: the model picker's labels and running a job with progress."""

from __future__ import annotations

import html
import time
from typing import Any, Mapping

import gradio as gr

from ..history import JobStatus
from ..jobs import Job
from ..runtime.loader import is_available
from ..services import Studio
from ..zoo.cards import ModelCard


def model_choices(studio: Studio, task: str) -> list[tuple[str, str]]:
    """(label, card id) for the task's models; the label says when a model is not on this machine."""
    choices = []
    for card in studio.cards.for_task(task):
        label = card.title
        if not card.runnable:
            label += " (not yet runnable)"
        elif not is_available(card, studio.settings):
            label += " (not downloaded)"
        choices.append((label, card.id))
    return choices


def default_model(studio: Studio, task: str) -> str | None:
    """A real model that is present, else the first built-in tiny model, so a new install works offline."""
    cards = [c for c in studio.cards.for_task(task) if c.runnable and is_available(c, studio.settings)]
    real = [c for c in cards if not c.tiny]
    chosen = (real or cards or studio.cards.for_task(task) or [None])[0]
    return chosen.id if chosen else None


def card_note(card: ModelCard) -> str:
    note = f"**{html.escape(card.title)}** · license {html.escape(card.license)}"
    if card.tiny:
        note += " · ⚠️ random weights: outputs are noise-like test pictures"
    return note


def run_job(studio: Studio, task: str, params: Mapping[str, Any], progress: gr.Progress) -> Job:
    """Submit a job and follow it to the end, feeding the progress bar from its step events."""
    job = studio.jobs.submit(task, params)
    progress(0, desc="queued")
    while not job.wait(0.1):
        if job.status is JobStatus.RUNNING and job.total_steps:
            progress((job.step, job.total_steps), desc="generating", unit="steps")
    return job


def job_summary(job: Job, seconds: float) -> str:
    if job.status is JobStatus.FAILED:
        return f"❌ **Failed** — {html.escape(job.error or 'unknown error')}  \njob `{job.id}`"
    count = len(job.outputs)
    seed = getattr(job.spec, "seed", None)
    return (f"✅ **Done** — {count} output{'s' if count != 1 else ''} in {seconds:.1f} s · "
            f"seed `{seed}` · job `{job.id}`")


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
