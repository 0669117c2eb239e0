"""Widgets and glue every tab shares: the model picker's labels and running a job with progress."""

from __future__ import annotations

import html
import time
from typing import Any, Callable, Generator, Iterator, Mapping

import gradio as gr

from ..errors import InvalidInput
from ..families import FAMILIES
from ..history import JobStatus
from ..job import Stage
from ..jobs import Job
from ..services import Studio
from ..zoo.availability import is_ready
from ..zoo.cards import ModelCard
from .results import remember


# Generate handlers only submit and wait: many browser tabs and API clients may wait on their own jobs
# at once, and the studio's job queue (one worker per device), not Gradio's, decides what runs when.
# They share one limit below the server's thread count (launch.MAX_THREADS), so Stop, the Queue
# panel and the API always have threads left while many clients wait.
WAITING_CLIENTS = 64
GENERATE: dict[str, Any] = {"concurrency_limit": WAITING_CLIENTS, "concurrency_id": "generate"}


def model_choices(studio: Studio, task: str) -> list[tuple[str, str]]:
    """(label, card id) for the task's models; the label says when a model is not on this machine."""
    choices = []
    for card in studio.cards.for_task(task):
        label = card.title
        if not card.runnable:
            label += " (not yet runnable)"
        elif not is_ready(card, studio.cards, studio.settings):
            label += " (not downloaded)"
        choices.append((label, card.id))
    return choices


def default_model(studio: Studio, task: str) -> str | None:
    """A real model that is present, else a built-in mini model (trained on simple shapes), else the first
    built-in tiny model, so a new install works offline.
    Among those, one that runs from the prompt alone with the whole form comes first (text-to-video
    before image-to-video, a diffusion model before a class-conditional one, any clip length before one
    fixed length)."""
    from ..tasks import get_task

    spec_type = get_task(task).spec_type
    cards = [c for c in studio.cards.for_task(task) if c.runnable and is_ready(c, studio.cards, studio.settings)]
    # Stable: the catalogue's order otherwise.
    cards.sort(key=lambda c: (not spec_type.needs_only_a_prompt(c), spec_type.fixed_shape(c)))
    real = [c for c in cards if not c.tiny]
    minis = [c for c in cards if c.mini]  # trained on simple shapes: they follow a caption, random weights don't
    chosen = (real or minis or cards or studio.cards.for_task(task) or [None])[0]
    return chosen.id if chosen else None


def card_note(card: ModelCard) -> str:
    """The line under a model picker: the chosen model's title, family and licence, and what to know."""
    family = FAMILIES.of(card)
    note = f"**{html.escape(card.title)}**"
    if family is not None:
        note += f" · {html.escape(family.title)}"
    note += f" · license {html.escape(card.license)}"
    if not card.runnable:
        note += " · ⏳ not yet runnable: the studio lists it but cannot run it yet — pick another model"
    elif card.mini:
        note += (" · mini, trained on simple shapes: it draws a caption such as \"a small red circle at the top left "
                 "on a blue background\" (8 colours, 4 shapes, 9 places, 64x64) and knows no other words")
    elif card.tiny:
        note += " · ⚠️ random weights: what it makes is noise, for trying and testing the studio"
    return note


def model_header(studio: Studio, task: str, spec_type: Any, elem_id: str
                 ) -> tuple[gr.Dropdown, gr.Markdown, dict[str, Any]]:
    """The model picker and its card note; returns them and the preselected card's defaults."""
    model_id = default_model(studio, task)
    card = studio.cards.cards.get(model_id or "")
    model = gr.Dropdown(model_choices(studio, task), value=model_id, label="Model", elem_id=elem_id)
    note = gr.Markdown(card_note(card) if card else "No model for this tab is installed.",
                       elem_id=elem_id.replace("-model", "-note"))
    return model, note, (spec_type.defaults_for(card) if card else {})


def start_follows_model(studio: Studio, run: gr.Button, model: gr.Dropdown,
                        model_updates: Callable[[str], dict]) -> Callable[[str], dict]:
    """`model_updates` that also enables Generate only for a model the studio can run (a listed one
    cannot be started); the button starts as the preselected model allows."""
    card = studio.cards.cards.get(model.value or "")
    run.interactive = card is None or card.runnable

    def updates(model_id: str) -> dict:
        changes = model_updates(model_id)
        picked = studio.cards.cards.get(model_id or "")
        if picked is not None:
            changes[run] = gr.update(interactive=picked.runnable)
        return changes

    return updates


def only_taken(spec_type: Any, card: ModelCard, params: dict[str, Any]) -> dict[str, Any]:
    """`params` less the optional fields the card's model does not take (a style's negative prompt for
    a model without one, steps for a token model): a form never sends what a model would refuse."""
    takes = spec_type.takes(card)
    return {k: v for k, v in params.items() if k not in spec_type.OPTIONAL or k in takes}


def styled_job(studio: Studio, spec_type: Any, style_key: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """A form's parameters as the job to submit: the chosen style applied, then only what the model takes
    (a style's negative prompt is not sent to a model without one); InvalidInput for a listed-only model."""
    from .forms import styled

    params = styled(studio, style_key, params)
    card = refuse_unrunnable(studio, params.get("model"))
    return only_taken(spec_type, card, params) if card is not None else params


def refuse_unrunnable(studio: Studio, model_id: str | None) -> ModelCard | None:
    """The card, or InvalidInput when it is only listed: such a model cannot be started."""
    card = studio.cards.cards.get(model_id or "")
    if card is not None and not card.runnable:
        raise InvalidInput(f"{card.title} is listed but the studio cannot run it yet: pick another model")
    return card


def sampling_controls(defaults: dict[str, Any], prefix: str, controls: Any) -> tuple[gr.Slider, gr.Slider, gr.Number]:
    """Steps and CFG, then the family options, then the seed and the advanced family options in an
    Advanced fold: the same order in every tab."""
    with gr.Row():
        steps = gr.Slider(1, 200, value=defaults.get("steps", 30), step=1, label="Steps", elem_id=f"{prefix}-steps")
        cfg = gr.Slider(1.0, 20.0, value=defaults.get("cfg", 4.0), step=0.5, label="CFG scale", elem_id=f"{prefix}-cfg")
    with gr.Row():
        controls.place(advanced=False)
    with gr.Accordion("Advanced", open=False):
        seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id=f"{prefix}-seed")
        controls.place(advanced=True)
    return steps, cfg, seed


# The jobs each browser session is waiting on, per tab: what that tab's Stop button cancels.
_waiting: dict[tuple[str, str], list[str]] = {}


def run_job(studio: Studio, task: str, params: Mapping[str, Any], progress: gr.Progress,
            request: gr.Request | None = None) -> Job:
    """Submit a job and follow it to the end, feeding the progress bar from its stages and steps.
    When other jobs are ahead of it, a toast says it was queued behind them (a second Generate click
    while one runs is another job, not a lost click)."""
    return _last(stream_job(studio, task, params, progress, request))


def stream_job(studio: Studio, task: str, params: Mapping[str, Any], progress: gr.Progress,
               request: gr.Request | None = None) -> Generator[Any, None, Job]:
    """`run_job`, yielding each new live preview (a runtime.preview.Preview) while the job samples;
    returns the job."""
    job = studio.jobs.submit(task, params)
    key = (request.session_hash or "", task) if request is not None else None
    if key:
        _waiting.setdefault(key, []).append(job.id)
    ahead = studio.jobs.ahead(job.id) if not job.finished else None
    if ahead:
        gr.Info(f"Queued: {ahead} job{'s' if ahead != 1 else ''} ahead of this one. It starts when "
                f"{'they are' if ahead != 1 else 'that one is'} done.")
    try:
        yield from watch_job(job, progress, studio)
        return job
    finally:
        if key and job.id in _waiting.get(key, []):
            _waiting[key].remove(job.id)
            if not _waiting[key]:
                del _waiting[key]


def _last(stream: Generator[Any, None, Job]) -> Job:
    """What a stream returns, its yields left unused."""
    while True:
        try:
            next(stream)
        except StopIteration as end:
            return end.value


def generate(studio: Studio, task: str, params: Mapping[str, Any], progress: gr.Progress,
             request: gr.Request | None, present: Callable[[Job, float], tuple]) -> tuple:
    """Run a job from a tab (or its named API endpoint) and show it: a warning when it failed, then
    what `present` makes of it for the tab's result widgets."""
    with Timer() as timer:
        job = run_job(studio, task, params, progress, request)
    if job.error:
        gr.Warning(job.error)
    remember(request, task, job)
    return present(job, timer.seconds)


def generate_live(studio: Studio, task: str, params: Mapping[str, Any], progress: gr.Progress,
                  request: gr.Request | None, present: Callable[[Job, float], tuple],
                  preview: Callable[[Any], tuple]) -> Iterator[tuple]:
    """`generate` for a tab that shows live previews: what `preview` makes of each new preview (a
    runtime.preview.Preview: its step and pictures) while the job samples (Settings.preview_every), then
    what `present` makes of the finished job, which replaces it."""
    with Timer() as timer:
        stream = stream_job(studio, task, params, progress, request)
        while True:
            try:
                shown = next(stream)
            except StopIteration as end:
                job = end.value
                break
            yield preview(shown)
    if job.error:
        gr.Warning(job.error)
    remember(request, task, job)
    yield present(job, timer.seconds)


def wire_generate(run: gr.Button, handler: Callable[..., Any], inputs: list[Any], results: list[Any]) -> None:
    """Generate's click: first the status line (the last of `results`) says the job is on its way, so
    the previous job's message is gone at once; then `handler` runs it, with one progress bar, on the
    first result. Every click is a job: one made while another runs is queued behind it."""
    status = results[-1]
    run.click(lambda: "⏳ Sending the job…", None, status, queue=False, show_progress="hidden",
              api_visibility="private", trigger_mode="multiple").then(
        handler, inputs, results, api_visibility="private", show_progress_on=[results[0]],
        trigger_mode="multiple", **GENERATE)


def stop_button(studio: Studio, task: str) -> gr.Button:
    """A Stop button that cancels the jobs this browser tab is waiting for (running and queued)."""
    button = gr.Button("Stop", variant="stop", scale=1, min_width=80, elem_id=f"{task}-stop")

    def stop(request: gr.Request) -> None:
        for job_id in list(_waiting.get((request.session_hash or "", task), [])):
            studio.jobs.cancel(job_id)

    # Its own queue slot: a Stop must never wait behind the Generate it is meant to stop.
    button.click(stop, None, None, api_visibility="private", concurrency_limit=None)
    return button


def follow_job(job: Job, progress: gr.Progress, studio: Studio | None = None) -> Job:
    """Wait for a submitted job and say what stage it is in: its place in line while it waits, then
    loading the model (and from where), encoding the prompt, its steps N/M, decoding, saving."""
    return _last(watch_job(job, progress, studio))


def watch_job(job: Job, progress: gr.Progress, studio: Studio | None = None) -> Generator[Any, None, Job]:
    """`follow_job`, yielding each new live preview of the job (runtime.preview.Preview) as it arrives."""
    progress(0, desc="queued")
    checked = 0.0
    shown = None
    while not job.wait(0.1):
        if job.status is JobStatus.RUNNING:
            if job.stage is Stage.STEPS and job.total_steps:
                # The bar writes the count and unit itself ("generating 3/30 steps").
                progress((job.step, job.total_steps), desc="generating", unit=job.step_unit)
            else:
                # No fraction while loading or encoding: a bar at "0/30 steps" would say it is stuck.
                progress(None, desc=job.describe())
            latest = job.preview
            if latest is not None and latest is not shown:
                shown = latest
                yield latest
        elif studio is not None and time.monotonic() - checked > 0.5:
            checked = time.monotonic()
            ahead = studio.jobs.ahead(job.id)
            if ahead is not None:
                progress(None, desc=waiting_line(ahead, studio.jobs.paused))
    return job


def waiting_line(ahead: int, paused: bool) -> str:
    """A pending job's place in line, in words."""
    place = "next in line" if ahead == 0 else f"waiting: {ahead} job{'s' if ahead != 1 else ''} ahead"
    return place + (" (queue paused)" if paused else "")


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
