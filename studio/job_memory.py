"""Running a job's task within the GPU memory budget: on out-of-memory, free everything else and retry
once with the next more frugal placement; the placement that ran is recorded on the job. Live previews
(runtime/preview.py) are on for the run when asked, each one kept on the job's handle."""

from __future__ import annotations

import logging
from typing import Any, Callable

from .errors import StudioError
from .history import HistoryStore
from .job import Job, Stage
from .runtime.lora import adapters, infotext_hashes
from .runtime import preview
from .runtime.memory import MemoryScheduler
from .runtime.quantize import describe as quantization_of

log = logging.getLogger(__name__)


class OutOfMemory(StudioError):
    """The job did not fit the device even with the most frugal placement the scheduler tried."""


def run_with_memory(scheduler: MemoryScheduler, history: HistoryStore, job: Job, task: Any, card: Any,
                    on_step: Callable[[int, int], None],
                    on_stage: Callable[[Stage, str], None] = lambda stage, detail: None, loras: Any = None,
                    preview_every: int = 0) -> Any:
    """Run the task on its pipeline; on out-of-memory, free everything else and retry once with
    the next more frugal placement. The placement that ran is recorded on the job. `on_stage` hears
    when the model is being loaded (and from where) and when the prompt is being encoded. The job's
    LoRAs (found in `loras`, a zoo.loras.LoraLibrary) are in the model for the run only
    (runtime/lora.py), their bytes counted in the job's working memory. With `preview_every` N > 0,
    every Nth step's preview lands in `job.preview` (a tiny model's random VAE gets a fitted
    projection, never the published factors of the VAE it imitates)."""
    with preview.previews(preview_every, lambda shown: setattr(job, "preview", shown), published=not card.tiny):
        return _run(scheduler, history, job, task, card, on_step, on_stage, loras)


def _run(scheduler: MemoryScheduler, history: HistoryStore, job: Job, task: Any, card: Any,
         on_step: Callable[[int, int], None], on_stage: Callable[[Stage, str], None], loras: Any) -> Any:
    import torch  # for its out-of-memory error: only once a job runs

    spec = job.spec
    files = loras.for_job(getattr(spec, "loras", None), card) if loras is not None else []
    working = task.working_bytes(spec, card) + sum(lora.data_bytes for lora, _ in files)
    record: dict[str, Any] = {}

    def run_on(lease: Any) -> Any:
        with adapters(lease.pipeline, files, lease.placement.value, record):
            return task.run(lease.pipeline, spec, card, on_step)

    on_stage(Stage.LOADING, f"{card.title} {scheduler.whereabouts(card.id)}")
    with scheduler.acquire(card, working) as lease:
        # Every pipeline encodes the prompt before its first step: the stage lasts until that step.
        on_stage(Stage.ENCODING, "")
        try:
            ran = lease.pipeline
            output = run_on(lease)
            placement = lease.placement
        except torch.OutOfMemoryError:
            log.warning("job %s: out of memory with %s", job.id, lease.placement.value)
            retry = scheduler.step_down(card, working)
            if retry is None:
                raise OutOfMemory(oom_message(scheduler, card, spec, lease.placement, working)) from None
            try:
                ran = retry.pipeline
                output = run_on(retry)
            except torch.OutOfMemoryError:
                raise OutOfMemory(oom_message(scheduler, card, spec, retry.placement, working)) from None
            placement = retry.placement
    history.set_placement(job.id, placement.value)
    output.used["placement"] = placement.value
    # How the transformer's weights were stored (runtime/quantize.py): in the job JSON, and in the infotext
    # when it is not the plain dtype.
    quantization = quantization_of(ran)
    output.used["quantization"] = quantization or "none"
    if record.get("loras"):
        output.used["loras"] = record["loras"]
        hashes = infotext_hashes(record["loras"])
        output.used["infotext"] = {**(output.used.get("infotext") or {}), "Lora hashes": hashes}
    if quantization:
        output.used["infotext"] = {**(output.used.get("infotext") or {}), "Quantization": quantization}
    return output


def oom_message(scheduler: MemoryScheduler, card: Any, spec: Any, placement: Any, working: int) -> str:
    """What to do when even the most frugal placement did not fit."""
    need = scheduler.need_bytes(card, placement, working)
    budget = scheduler.device_budget()
    size = f" at {spec.width}x{spec.height}" if getattr(spec, "width", None) else ""
    have = f"; {budget / 2**30:.1f} GB were available" if budget else ""
    return (f"Out of memory: {card.title}{size} needs about {need / 2**30:.1f} GB on {scheduler.device} "
            f"even with {placement.value}{have}. Try a smaller size or fewer images, or close other programs "
            "using the GPU.")
