"""What a tab shows of a finished job: the summary line (what was made, each seed), captions with
each image's seed, the "Reuse seed" button that puts a result's seed back in the form, and the file of a
picked result (what "Send to" buttons send)."""

from __future__ import annotations

import html
from collections import OrderedDict
from typing import Any

import gradio as gr

from ..history import JobStatus
from ..jobs import Job
from ..tasks.base import batch_seeds

# The kinds of file a user asked for, as the summary counts them; posters, waveform pictures and
# thumbnails come with those and are not counted.
_COUNTED = {"image": ("image", "images"), "video": ("video", "videos"), "audio": ("sound", "sounds"),
            "animation": ("animation", "animations")}
# The seeds of the last job each browser tab showed, by (session, task): what "Reuse seed" reuses.
_shown: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
_MAX_SESSIONS = 1000


def result_seeds(job: Job) -> list[int]:
    """The seed of each output a job made: seed, seed+1, … for a batch of images, else its one seed."""
    seed = getattr(job.spec, "seed", None)
    if seed is None or seed < 0:
        return []
    return batch_seeds(seed, int(getattr(job.spec, "num_images", 1) or 1))


def remember(request: gr.Request | None, task: str, job: Job) -> None:
    """Note the seeds of the job this browser tab now shows (only a finished one has seeds worth reusing)."""
    if request is None or job.status is not JobStatus.DONE:
        return
    key = (request.session_hash or "", task)
    _shown[key] = result_seeds(job)
    _shown.move_to_end(key)
    while len(_shown) > _MAX_SESSIONS:
        _shown.popitem(last=False)


def captioned(job: Job) -> list[tuple[str, str]]:
    """A gallery's items for the job's images, each captioned with its own seed."""
    images = [saved for saved in job.outputs if saved.kind == "image"]
    seeds = result_seeds(job)
    return [(str(saved.path), f"seed {seeds[i]}" if i < len(seeds) else "") for i, saved in enumerate(images)]


def made(job: Job) -> str:
    """What a job made, in words: "1 video", "3 images", "2 images and 1 animation"."""
    counts: dict[str, int] = {}
    for saved in job.outputs:
        if saved.kind in _COUNTED:
            counts[saved.kind] = counts.get(saved.kind, 0) + 1
    parts = [f"{n} {_COUNTED[kind][0] if n == 1 else _COUNTED[kind][1]}" for kind, n in counts.items()]
    return " and ".join(parts) or "nothing"


def job_summary(job: Job, seconds: float) -> str:
    """The status line under a result."""
    if job.status is JobStatus.CANCELLED:
        return f"⏹ **Cancelled** — job `{job.id}`"
    if job.status is JobStatus.FAILED:
        return f"❌ **Failed** — {html.escape(job.error or 'unknown error')}  \njob `{job.id}`"
    seeds = result_seeds(job)
    seed = (f"seeds `{seeds[0]}`–`{seeds[-1]}`" if len(seeds) > 1 else f"seed `{seeds[0]}`") if seeds else ""
    return f"✅ **Done** — {made(job)} in {seconds:.1f} s · " + (f"{seed} · " if seed else "") + f"job `{job.id}`"


def reuse_seed_button(task: str, seed: gr.Number, gallery: gr.Gallery | None = None) -> gr.Button:
    """"♻ Reuse seed": puts the shown result's seed in the form's seed field (the picked image's own
    seed when the result is a gallery of several), so the next Generate makes it again or varies it."""
    button = gr.Button("♻ Reuse seed", size="sm", scale=0, min_width=120, elem_id=f"{task}-reuse-seed")
    picked = gr.State(0)
    if gallery is not None:
        def pick(event: gr.SelectData) -> int:
            return int(event.index) if isinstance(event.index, int) else 0

        gallery.select(pick, None, picked, api_visibility="private", show_progress="hidden")

    def reuse(index: int, current: Any, request: gr.Request) -> Any:
        seeds = _shown.get((request.session_hash or "", task))
        if not seeds:
            gr.Info("No finished result in this tab yet: its seed is shown once a job is done.")
            return current
        return seeds[index] if 0 <= index < len(seeds) else seeds[0]

    button.click(reuse, [picked, seed], seed, api_visibility="private", show_progress="hidden", queue=False)
    return button


def picked_path(items: Any, index: int) -> str | None:
    """The file of item `index` (else the first) of a gallery's value, however Gradio hands it over."""
    items = list(items or [])
    if not items:
        return None
    item = items[index] if 0 <= index < len(items) else items[0]
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, dict):
        inner = item.get("image", item)
        item = inner.get("path") if isinstance(inner, dict) else inner
    path = getattr(item, "path", item)
    return str(path) if path else None
