"""The Gallery tab: every past job as a thumbnail grid with search, filters and pages; a detail panel
to play, inspect, re-run, send to its tab, star, download or delete a job; export a selection; and
"Read parameters" from any PNG, saying what the model it fills a tab for made of each value. It starts
on the jobs that made something (the status filter this browser chose last; "done" at first), each
tile captioned with its prompt. It builds widgets and calls the Gallery service, nothing else."""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta

import gradio as gr
from PIL import Image, ImageDraw

from ..errors import StudioError
from ..gallery import PAGE_SIZE, SHOWN_STATUS, caption
from ..history import JobFilter, JobRecord, JobStatus
from ..png_params import read_parameters
from ..services import Studio
from ..tasks import TASKS
from .common import GENERATE, follow_job
from .family_controls import search_afresh
from .forms import TabForm, fill_fitted, short_title
from .upscale_tab import send_button as send_to_upscale

# The status filter's choice, kept in the browser's localStorage so a reload keeps it (plain
# localStorage, not gr.BrowserState, whose per-launch secret would lose it at every server restart).
STATUS_KEY = "studio-gallery-status"
_ICONS = {"done": "✅", "failed": "❌", "cancelled": "⏹", "interrupted": "⚠️", "pending": "⏳", "running": "▶️"}


def _placeholder(status: str) -> Image.Image:
    """What the grid shows for a job without a picture (failed, still running, or gone)."""
    picture = Image.new("RGB", (160, 160), (48, 48, 56))
    ImageDraw.Draw(picture).text((16, 70), status, fill=(220, 220, 230))
    return picture


def parse_day(text: str, label: str) -> datetime | None:
    """A YYYY-MM-DD box as the start of that day in this machine's time zone; None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").astimezone()
    except ValueError:
        raise gr.Error(f"{label} must be a date like 2026-11-22, got {text!r}") from None


def describe(studio: Studio, job: JobRecord) -> str:
    """The detail panel's text: what, with which model, how it went, and when."""
    card = studio.cards.cards.get(job.model_id)
    lines = [f"### {_ICONS.get(job.status.value, '')} {job.task} · {html.escape(card.title if card else job.model_id)}"
             f"{' ★' if job.favorite else ''}",
             f"**Status:** {job.status.value}" + (f" — {html.escape(job.error)}" if job.error else "")]
    if job.prompt:
        lines.append(f"**Prompt:** {html.escape(job.prompt)}")
    if job.negative_prompt:
        lines.append(f"**Negative:** {html.escape(job.negative_prompt)}")
    when = job.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    facts = [f"seed `{job.seed}`" if job.seed is not None else None, f"created {when}",
             f"ran {job.duration_s:.1f} s" if job.duration_s is not None else None,
             f"placement {job.placement}" if job.placement else None,
             f"on {html.escape(job.device)}" + (f" ({html.escape(job.worker.split(':')[0])})" if job.worker else "")
             if job.device else None, f"job `{job.id}`"]
    lines.append(" · ".join(f for f in facts if f))
    return "  \n".join(lines)


def build(studio: Studio, tabs: gr.Tabs, tab: gr.Tab, forms: list[TabForm]) -> None:
    gallery = studio.gallery
    by_task = {form.task: form for form in forms}
    any_value = [("Any", "")]
    with gr.Row():
        search = gr.Textbox(label="Search prompts", placeholder='words, or "a phrase" — any language', scale=4,
                            elem_id="gallery-search")
        task = gr.Dropdown(any_value + [(name, name) for name in TASKS], value="", label="Task", scale=1,
                           elem_id="gallery-task")
        model = search_afresh(gr.Dropdown(any_value + gallery.model_choices(), value="", label="Model", scale=2,
                                          elem_id="gallery-model"))
        statuses = [s.value for s in JobStatus]
        status = gr.Dropdown(any_value + [(s, s) for s in statuses], value=SHOWN_STATUS, label="Status", scale=1,
                             elem_id="gallery-status")
    with gr.Row(equal_height=True):
        favorites = gr.Checkbox(label="★ Favorites only", scale=1, elem_id="gallery-favorites")
        since = gr.Textbox(label="From (YYYY-MM-DD)", scale=1, elem_id="gallery-since")
        until = gr.Textbox(label="To (YYYY-MM-DD)", scale=1, elem_id="gallery-until")
        find = gr.Button("Search", variant="primary", scale=1, elem_id="gallery-find")
    with gr.Row(equal_height=True):
        newer = gr.Button("◀ Newer", size="sm", scale=0, min_width=100, elem_id="gallery-newer")
        page_no = gr.Number(1, precision=0, minimum=1, label="Page", scale=0, min_width=90, elem_id="gallery-page")
        older = gr.Button("Older ▶", size="sm", scale=0, min_width=100, elem_id="gallery-older")
        info = gr.Markdown(elem_id="gallery-info")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            grid = gr.Gallery(show_label=False, columns=6, height=640, allow_preview=False, object_fit="cover",
                              elem_id="gallery-grid")
        with gr.Column(scale=2, min_width=320):
            summary = gr.Markdown("Pick an item to see it here.", elem_id="gallery-detail")
            pictures = gr.Gallery(label="Outputs", columns=2, height=320, visible=False, elem_id="gallery-pictures")
            clip = gr.Video(label="Video", visible=False, elem_id="gallery-video")
            sound = gr.Audio(label="Sound", type="filepath", visible=False, elem_id="gallery-audio")
            with gr.Row():
                rerun = gr.Button("↻ Re-run", elem_id="gallery-rerun")
                send = gr.Button("Send to tab", elem_id="gallery-send")
                to_edit = gr.Button("Send to img2img / inpaint", elem_id="gallery-send-edit")
                send_to_upscale("gallery", pictures)
                star = gr.Button("☆ Favorite", elem_id="gallery-star")
                delete = gr.Button("Delete", variant="stop", elem_id="gallery-delete")
            with gr.Row(visible=False) as confirm_row:
                confirm_text = gr.Markdown()
                confirm = gr.Button("Yes, delete", variant="stop", elem_id="gallery-confirm-delete")
                keep = gr.Button("Keep it")
            message = gr.Markdown(elem_id="gallery-message")
            files = gr.File(label="Download", file_count="multiple", elem_id="gallery-files")
            params = gr.JSON(label="Parameters", elem_id="gallery-params")
            with gr.Accordion("Export", open=False):
                with gr.Row():
                    pick = gr.Button("Add to selection", elem_id="gallery-select")
                    pick_page = gr.Button("Select this page")
                    clear = gr.Button("Clear")
                selected_text = gr.Markdown("Nothing selected.")
                export = gr.Button("Export selection as zip", elem_id="gallery-export")
                export_file = gr.File(label="Zip with a manifest.json", elem_id="gallery-export-file")
    with gr.Accordion("Read parameters from a PNG", open=False):
        with gr.Row(equal_height=False):
            png = gr.File(label="Drop a PNG — from Studio, A1111/Forge, ComfyUI, InvokeAI or Fooocus",
                          file_types=[".png"], type="filepath", elem_id="gallery-png")
            with gr.Column():
                found_text = gr.Markdown(elem_id="gallery-found")
                found_json = gr.JSON(label="Found")
                fill_tab = gr.Button("Fill its tab with these", visible=False, elem_id="gallery-fill")

    page_ids = gr.State([])
    current = gr.State("")
    selection = gr.State([])
    found = gr.State({})

    def filters(text, task_v, model_v, status_v, fav, since_v, until_v) -> JobFilter:
        start, end = parse_day(since_v, "From"), parse_day(until_v, "To")
        return JobFilter(text=text or "", task=task_v or None, model_id=model_v or None, status=status_v or None,
                         favorites=bool(fav), since=start, until=end + timedelta(days=1) if end else None)

    def show_page(number, *filter_values):
        page = gallery.page(filters(*filter_values), int(number or 1))
        pages = max(1, -(-page.total // PAGE_SIZE))
        if page.total and not page.jobs and number > pages:  # past the end (e.g. after deletes): last page
            return show_page(pages, *filter_values)
        items = []
        for job in page.jobs:
            thumb = gallery.thumbnail(job)
            items.append((str(thumb) if thumb and thumb.is_file() else _placeholder(job.status.value), caption(job)))
        shown = f"{page.offset + 1}–{page.offset + len(page.jobs)}" if page.jobs else "0"
        text = f"Page {int(number or 1)} of {pages} · jobs {shown} of {page.total:,}"
        return items, [j.id for j in page.jobs], int(number or 1), text

    filter_inputs = [search, task, model, status, favorites, since, until]
    page_outputs = [grid, page_ids, page_no, info]

    def detail(job_id: str):
        job = studio.history.get_job(job_id) if job_id else None
        if job is None:
            return {summary: "Pick an item to see it here.", pictures: gr.update(visible=False, value=None),
                    clip: gr.update(visible=False, value=None), sound: gr.update(visible=False, value=None),
                    files: None, params: None, current: "", star: "☆ Favorite", confirm_row: gr.update(visible=False)}
        outputs = gallery.outputs(job)
        images = [str(gallery.path(a)) for a in outputs if a.mime.startswith("image/")]
        video = next((str(gallery.path(a)) for a in outputs if a.mime.startswith("video/")), None)
        audio = next((str(gallery.path(a)) for a in outputs if a.mime.startswith("audio/")), None)
        return {summary: describe(studio, job), pictures: gr.update(visible=bool(images), value=images or None),
                clip: gr.update(visible=bool(video), value=video), sound: gr.update(visible=bool(audio), value=audio),
                files: [str(gallery.path(a)) for a in outputs if gallery.path(a).is_file()] or None,
                params: job.params, current: job.id, star: "★ Favorited" if job.favorite else "☆ Favorite",
                confirm_row: gr.update(visible=False)}

    detail_outputs = [summary, pictures, clip, sound, files, params, current, star, confirm_row]

    def on_select(ids, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        return detail(ids[index] if 0 <= index < len(ids) else "")

    def on_rerun(job_id, progress=gr.Progress()):
        if not job_id:
            return {message: "Pick an item first."}
        try:
            job = follow_job(gallery.rerun(job_id), progress, studio)
        except StudioError as err:
            return {message: f"❌ {html.escape(str(err))}"}
        note = (f"✅ Re-ran as job `{job.id}` with the same parameters and seed." if job.error is None
                else f"❌ The re-run failed: {html.escape(job.error)}")
        return {message: note, **detail(job.id)}

    def on_send(job_id):
        job = studio.history.get_job(job_id) if job_id else None
        if job is None:
            return {message: "Pick an item first."}
        form = by_task.get(job.task)
        if form is None:
            return {message: f"No tab makes {job.task} jobs."}
        return {tabs: gr.Tabs(selected=form.tab_id), message: "", **form.fill(job.params)}

    editing = next((f for f in forms if f.send_image is not None), None)

    def on_send_edit(job_id):
        job = studio.history.get_job(job_id) if job_id else None
        picture = next((a for a in (job.assets if job else []) if a.mime == "image/png"), None)
        if editing is None or picture is None:
            return {message: "Pick a picture first: a job whose output is an image."}
        path = str(studio.settings.outputs_dir / picture.path)
        return {tabs: gr.Tabs(selected=editing.tab_id), message: "", **editing.send_image(path)}

    def on_star(job_id):
        job = studio.history.get_job(job_id) if job_id else None
        if job is None:
            return {message: "Pick an item first."}
        gallery.set_favorite(job.id, not job.favorite)
        return detail(job.id)

    def on_delete(job_id):
        job = studio.history.get_job(job_id) if job_id else None
        if job is None:
            return {message: "Pick an item first."}
        count = len(gallery.outputs(job))
        return {confirm_row: gr.update(visible=True), message: "",
                confirm_text: f"Delete this {job.task} job and its {count} file{'s' if count != 1 else ''}? "
                              "This cannot be undone."}

    def on_confirm(job_id):
        try:
            removed = gallery.delete(job_id)
        except StudioError as err:
            return {message: f"❌ {html.escape(str(err))}", confirm_row: gr.update(visible=False)}
        return {**detail(""), message: f"Deleted job `{job_id}` and {removed} file{'s' if removed != 1 else ''}."}

    def selected_label(ids: list[str]) -> str:
        return f"{len(ids)} job{'s' if len(ids) != 1 else ''} selected." if ids else "Nothing selected."

    def on_pick(job_id, chosen):
        chosen = chosen + [job_id] if job_id and job_id not in chosen else chosen
        return chosen, selected_label(chosen)

    def on_pick_page(ids, chosen):
        chosen = list(dict.fromkeys([*chosen, *ids]))
        return chosen, selected_label(chosen)

    def on_export(chosen):
        try:
            made = gallery.export(chosen)
        except StudioError as err:
            return None, f"❌ {html.escape(str(err))}"
        return str(made.path), f"Exported {made.jobs} jobs ({made.files} files) to `{made.path.name}`."

    def on_png(path):
        if not path:
            return {found_text: "", found_json: None, found: {}, fill_tab: gr.update(visible=False)}
        try:
            result = read_parameters(path)
        except StudioError as err:
            return {found_text: f"❌ {html.escape(str(err))}", found_json: None, found: {},
                    fill_tab: gr.update(visible=False)}
        values = {"prompt": result.prompt, "negative_prompt": result.negative_prompt, **result.params}
        if result.task == "compose" or result.task == "anagram":
            values.pop("prompt")  # derived from the captions or readings, which the params hold
        form = by_task.get(result.task)
        shown = {"source": result.source, "task": result.task, "prompt": result.prompt,
                 "negative_prompt": result.negative_prompt, "parameters": result.params, "other": result.details}
        label = f"Fill the {form.tab_id.capitalize()} tab with these" if form else ""
        read = f"Read **{result.source}** parameters for a **{result.task}** job."
        # Another tool's details (its sampler, its checkpoint) are named when the form is filled.
        details = result.details if result.source != "studio" else {}
        return {found_text: read, found_json: json.loads(json.dumps(shown, default=str)),
                found: {"task": result.task, "read": read, "params": values, "details": details},
                fill_tab: gr.update(visible=form is not None, value=label)}

    def on_fill(values, *models):
        """Fill the tab the PNG's job belongs to, for its model when this studio has it, else the tab's
        current one; the Read-parameters area (and a toast, seen from the tab) says what was adapted."""
        form = by_task.get(values.get("task", ""))
        if form is None:
            return {found_text: "Read a PNG first: nothing to fill a tab with."}
        fitted = fill_fitted(studio, form, values.get("params", {}), models[forms.index(form)],
                             values.get("details"))
        model = html.escape(fitted.card.title) if fitted.card else "its model"
        where = f"the {form.tab_id.capitalize()} tab"
        if fitted.notes:
            text = (f"Filled {where} for **{model}**, adapting what it cannot take as it was:\n\n"
                    + "\n".join(f"- {html.escape(note)}" for note in fitted.notes))
            # Seen from the tab it switches to (a toast's text is HTML, as the Markdown's is).
            short = html.escape(short_title(fitted.card)) if fitted.card else model
            gr.Info(f"Filled {where}; changed for {short}: " + " ".join(map(html.escape, fitted.notes)), duration=15)
        else:
            text = f"Filled {where} for **{model}** with these, as they were."
        return {tabs: gr.Tabs(selected=form.tab_id), found_text: f"{values.get('read', '')}\n\n{text}",
                **fitted.updates}

    private = {"api_visibility": "private"}
    all_form_outputs = list({c: None for f in forms for c in f.outputs})
    def first_page(*values):
        return show_page(1, *values)

    for trigger in (find.click, search.submit):
        trigger(first_page, filter_inputs, page_outputs, **private)
    for control in (task, model, status, favorites):
        control.input(first_page, filter_inputs, page_outputs, **private)
    def on_open(number, *values):
        """The tab opened: its page, and the model filter's choices (a new job may add a model)."""
        choices = any_value + gallery.model_choices()
        if values[2] and values[2] not in (value for _, value in choices):
            choices.append((values[2], values[2]))
        return (gr.update(choices=choices), *show_page(number, *values))

    # The status filter starts on what this browser chose last ("done" the first time); each choice is kept.
    restore = f"() => {{ const s = localStorage.getItem({json.dumps(STATUS_KEY)}); " \
              f"return [{json.dumps(['', *statuses])}.includes(s) ? s : {json.dumps(SHOWN_STATUS)}]; }}"
    tab.select(None, None, [status], js=restore, **private).then(
        on_open, [page_no, *filter_inputs], [model, *page_outputs], **private)
    status.input(None, [status], None, js=f"(s) => {{ localStorage.setItem({json.dumps(STATUS_KEY)}, s ?? ''); }}",
                 **private)
    newer.click(lambda n, *v: show_page(max(1, int(n or 1) - 1), *v), [page_no, *filter_inputs], page_outputs,
                **private)
    older.click(lambda n, *v: show_page(int(n or 1) + 1, *v), [page_no, *filter_inputs], page_outputs, **private)
    page_no.submit(lambda n, *v: show_page(n, *v), [page_no, *filter_inputs], page_outputs, **private)
    grid.select(on_select, page_ids, detail_outputs, **private)
    rerun.click(on_rerun, current, [message, *detail_outputs], **private, **GENERATE).then(
        lambda n, *v: show_page(1, *v), [page_no, *filter_inputs], page_outputs, **private)
    sent = send.click(on_send, current, [tabs, message, *all_form_outputs], **private)
    if editing is not None:
        to_edit.click(on_send_edit, current, [tabs, message, *editing.send_outputs], **private)
    star.click(on_star, current, [message, *detail_outputs], **private).then(
        lambda n, *v: show_page(n, *v), [page_no, *filter_inputs], page_outputs, **private)
    delete.click(on_delete, current, [confirm_row, confirm_text, message], **private)
    keep.click(lambda: gr.update(visible=False), None, confirm_row, **private)
    confirm.click(on_confirm, current, [message, *detail_outputs], **private).then(
        lambda n, *v: show_page(n, *v), [page_no, *filter_inputs], page_outputs, **private)
    pick.click(on_pick, [current, selection], [selection, selected_text], **private)
    pick_page.click(on_pick_page, [page_ids, selection], [selection, selected_text], **private)
    clear.click(lambda: ([], selected_label([])), None, [selection, selected_text], **private)
    export.click(on_export, selection, [export_file, selected_text], **private)
    png.change(on_png, png, [found_text, found_json, found, fill_tab], **private)
    filled = fill_tab.click(on_fill, [found, *(f.model for f in forms)], [tabs, found_text, *all_form_outputs],
                            **private)
    for form in forms:  # e.g. the compositional layout preview, redrawn from the filled form
        form.chain_after_fill(sent)
        form.chain_after_fill(filled)
