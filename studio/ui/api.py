"""The studio's API beside the tabs' own `generate_*` endpoints: queue jobs without waiting, follow
and cancel them, pause the queue, and read the history. `gradio_client` calls these by name, e.g.

    from gradio_client import Client
    client = Client("http://127.0.0.1:7860/", auth=("user", "password"))
    job = client.predict("image", {"model": "tiny-lumina-next", "prompt": "a kite"}, api_name="/submit_job")
    client.predict(job["id"], api_name="/job_status")

A job's files come as `{relpath, url, kind, mime}`: `relpath` under the outputs folder, and `url`
where a client fetches it (Gradio's file route, which serves the outputs folder only: see
ui/launch.py), absolute when the request names the server's root URL, else relative to that root.
No answer names a folder on the server otherwise: a job's input files (a video job's start image, a
music job's melody clip) are named by file name.

Every call goes through the same JobQueue and Gallery as the UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from gradio import route_utils
from gradio_client.utils import encode_file_path

from ..gallery import PAGE_SIZE
from ..history import JobFilter, JobRecord, JobStatus
from ..services import Studio
from .forms import FILE_PARAMS


FILE_ROUTE = f"{route_utils.API_PREFIX}/file="


def root_url(request: gr.Request | None) -> str:
    """The server's root URL as the client reached it (behind a proxy, the proxy's), without a
    trailing slash; "" when the request does not say (then URLs stay relative to the root)."""
    raw = getattr(request, "request", None) if request is not None else None
    if raw is None:
        return ""
    try:
        app = raw.scope.get("app")
        return route_utils.get_root_url(raw, route_utils.get_api_call_path(raw), getattr(app, "root_path", ""))
    except (ValueError, KeyError, AttributeError):  # not an API call (a direct call in a test)
        return ""


def file_entry(studio: Studio, asset: Any, root: str = "") -> dict[str, Any]:
    """One output file for a client: its path under the outputs folder, and the URL that serves it."""
    relative = studio.gallery.path(asset).relative_to(studio.settings.outputs_dir.resolve())
    served = Path(studio.settings.outputs_dir).absolute() / relative  # under the served folder as launch gives it
    # Not "path": gradio_client takes any dict with a "path" for a file of its own to download.
    return {"relpath": relative.as_posix(), "url": f"{root}{FILE_ROUTE}{encode_file_path(served)}", "kind": asset.kind,
            "mime": asset.mime}


def _params(params: dict[str, Any]) -> dict[str, Any]:
    """The recorded parameters, with an input file (a start image, a control clip, a melody) by its name only."""
    return {k: Path(v).name if k in FILE_PARAMS and isinstance(v, str) and v else v for k, v in params.items()}


def _job(studio: Studio, record: JobRecord, root: str = "") -> dict[str, Any]:
    live = studio.jobs.get(record.id)
    return {"id": record.id, "task": record.task, "model": record.model_id, "status": record.status.value,
            "prompt": record.prompt, "seed": record.seed, "error": record.error, "favorite": record.favorite,
            "created_at": record.created_at.isoformat(), "duration_s": record.duration_s,
            "queue_ahead": studio.jobs.ahead(record.id) if record.status is JobStatus.PENDING else None,
            "stage": live.describe() if live and record.status is JobStatus.RUNNING else None,
            "step": live.step if live else None, "total_steps": live.total_steps if live else None,
            "params": _params(record.params), "device": record.device,
            "files": [file_entry(studio, a, root) for a in studio.gallery.outputs(record)]}


def register(studio: Studio) -> None:
    """Add the endpoints to the Blocks being built (call inside `with gr.Blocks()`)."""

    def submit_job(task: str, params: dict) -> dict:
        """Queue a job and return at once: {id, status, error}. Poll job_status for its progress and files.
        A class-conditional model takes `class_id` without a prompt (the class's label is the job's prompt).
        Jobs that take input files (a start image or mask, an input or control video, a melody clip, a
        picture to upscale) go through generate_image, generate_video, generate_music or upscale_image,
        which take them as uploads."""
        named = [name for name in FILE_PARAMS if params.get(name)]
        if named:
            # A path in an API call would name a file on this machine: only the upload endpoints take files.
            where = {"music": "/generate_music", "upscale": "/upscale_image", "image": "/generate_image"}.get(
                task, "/generate_video")
            raise gr.Error(f"{', '.join(named)}: send input files through {where}, not as paths")
        job = studio.jobs.submit(task, params)
        return {"id": job.id, "status": job.status.value, "error": job.error}

    def job_status(job_id: str, request: gr.Request = None) -> dict:
        """A job: status, place in the queue, progress, parameters, error, and its output files, each
        {relpath (under the outputs folder), url (to fetch it), kind, mime}."""
        record = studio.history.get_job(job_id)
        if record is None:
            raise gr.Error(f"no job {job_id!r} in the history")
        return _job(studio, record, root_url(request))

    def cancel_job(job_id: str) -> bool:
        """Cancel a pending job, or stop a running one at its next step; False if it had finished."""
        return studio.jobs.cancel(job_id)

    def queue_status() -> dict:
        """Whether the queue is paused, and the running and waiting jobs in order with ETAs (seconds)."""
        return {"paused": studio.jobs.paused,
                "jobs": [{"id": e.job_id, "status": e.status.value, "position": e.position, "task": e.task,
                          "model": e.model_id, "stage": e.stage, "step": e.step, "total_steps": e.total_steps,
                          "eta_s": e.eta_s}
                         for e in studio.jobs.snapshot()]}

    def pause_queue() -> bool:
        """Start no new job until resume_queue (the running one finishes). Returns whether paused."""
        studio.jobs.pause()
        return studio.jobs.paused

    def resume_queue() -> bool:
        """Run waiting jobs again. Returns whether paused."""
        studio.jobs.resume()
        return studio.jobs.paused

    def list_history(search: str = "", task: str = "", status: str = "", page: int = 1,
                     request: gr.Request = None) -> dict:
        """Past jobs newest first, 48 a page: {total, page, jobs: [...]} (each job as job_status gives it);
        `search` finds words in prompts."""
        try:
            filters = JobFilter(text=search, task=task or None, status=JobStatus(status) if status else None)
        except ValueError:
            raise gr.Error(f"status must be one of {', '.join(s.value for s in JobStatus)}") from None
        found = studio.gallery.page(filters, max(1, int(page)))
        root = root_url(request)
        return {"total": found.total, "page": max(1, int(page)), "page_size": PAGE_SIZE,
                "jobs": [_job(studio, record, root) for record in found.jobs]}

    for fn in (submit_job, job_status, cancel_job, queue_status, pause_queue, resume_queue, list_history):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)
