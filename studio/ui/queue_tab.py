"""The Queue tab: what is running and what waits, with progress and ETAs; cancel a job, pause and
resume the queue, retry jobs a restart interrupted. It only calls the JobQueue and the Gallery."""

from __future__ import annotations

import html

import gradio as gr

from ..history import JobFilter, JobStatus
from ..services import Studio
from .common import follow_job

COLUMNS = ["#", "Status", "Task", "Model", "Prompt", "Progress", "ETA", "Job"]


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def queue_rows(studio: Studio) -> list[list[str]]:
    rows = []
    for entry in studio.jobs.snapshot():
        progress = entry.stage if entry.status is JobStatus.RUNNING else "waiting"
        rows.append([str(entry.position) if entry.position else "▶", entry.status.value, entry.task, entry.model_id,
                     entry.prompt[:80], progress, _eta(entry.eta_s), entry.job_id])
    return rows


def interrupted_choices(studio: Studio) -> list[tuple[str, str]]:
    page = studio.gallery.page(JobFilter(status=JobStatus.INTERRUPTED), page_size=50)
    return [(f"{j.created_at.astimezone():%Y-%m-%d %H:%M} · {j.task} · {j.prompt[:50]}", j.id) for j in page.jobs]


def build(studio: Studio, tabs: gr.Tabs, tab: gr.Tab) -> None:
    with gr.Row(equal_height=True):
        state = gr.Markdown(elem_id="queue-state")
        pause = gr.Button("Pause the queue", scale=0, min_width=180, elem_id="queue-pause")
        resume = gr.Button("Resume", scale=0, min_width=120, elem_id="queue-resume")
    table = gr.Dataframe(headers=COLUMNS, value=queue_rows(studio), interactive=False, wrap=True,
                         elem_id="queue-table")
    with gr.Row(equal_height=True):
        picked = gr.Textbox(label="Job id (click a row)", scale=3, elem_id="queue-job")
        cancel = gr.Button("Cancel this job", variant="stop", scale=1, elem_id="queue-cancel")
    message = gr.Markdown(elem_id="queue-message")
    with gr.Accordion("Interrupted by a restart", open=False):
        interrupted = gr.Dropdown(interrupted_choices(studio), label="Jobs that were running when the studio stopped",
                                  elem_id="queue-interrupted")
        retry = gr.Button("Retry (same parameters and seed)", elem_id="queue-retry")
        retried = gr.Markdown()
    timer = gr.Timer(1.0, active=False)  # ticks only while this tab is on screen

    def state_text(rows: list[list[str]]) -> str:
        waiting = sum(1 for row in rows if row[1] == JobStatus.PENDING.value)
        if studio.jobs.paused:
            return f"⏸ **Paused** — {waiting} waiting; the running job finishes, nothing new starts."
        return f"▶ **Running** — {waiting} waiting."

    def refresh():
        rows = queue_rows(studio)
        return rows, state_text(rows)

    def on_row(evt: gr.SelectData, rows):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return rows.iloc[row, len(COLUMNS) - 1]
        except (AttributeError, IndexError):
            return gr.update()

    def on_cancel(job_id: str) -> str:
        job_id = (job_id or "").strip()
        if not job_id:
            return "Pick a job first."
        if studio.jobs.cancel(job_id):
            return f"⏹ Cancelling job `{html.escape(job_id)}`."
        return f"Job `{html.escape(job_id)}` is not waiting or running."

    def on_retry(job_id: str, progress=gr.Progress()) -> tuple[str, object]:
        if not job_id:
            return "Pick a job first.", gr.update()
        job = follow_job(studio.gallery.rerun(job_id), progress, studio)
        text = f"✅ Retried as job `{job.id}`." if job.error is None else f"❌ {html.escape(job.error)}"
        return text, gr.update(choices=interrupted_choices(studio), value=None)

    def on_tab(evt: gr.SelectData) -> gr.Timer:
        return gr.Timer(active=evt.value == tab.label)

    private = {"api_visibility": "private"}
    timer.tick(refresh, None, [table, state], show_progress="hidden", **private)
    tab.select(lambda: gr.update(choices=interrupted_choices(studio)), None, interrupted, **private)
    tab.select(refresh, None, [table, state], **private)
    tabs.select(on_tab, None, timer, **private)
    table.select(on_row, table, picked, **private)
    cancel.click(on_cancel, picked, message, **private).then(refresh, None, [table, state], **private)
    pause.click(lambda: studio.jobs.pause(), None, None, **private).then(refresh, None, [table, state], **private)
    resume.click(lambda: studio.jobs.resume(), None, None, **private).then(refresh, None, [table, state], **private)
    retry.click(on_retry, interrupted, [retried, interrupted], **private)
