"""The Models tab: every card with its status, one-click Download / Cancel / Delete / Use, live
progress, and "Add a model". Clicking a row picks that model; its details say what Download would
fetch. It only builds widgets; the work is the Studio's download manager."""

from __future__ import annotations

import html

import gradio as gr

from ..errors import StudioError
from ..history.installed import InstallStatus
from ..model_manager import human_bytes, progress_text, status_text
from ..runtime.quantize import estimate_gb, mode_for
from ..services import Studio
from ..zoo.downloads import disk_bytes
from ..zoo.user_cards import add_user_card
from .common import model_choices
from .forms import TabForm

COLUMNS = ["Model", "Status", "On disk", "Last used", "License"]
CELL_SEP = " · "
# How long picking a model waits for the hub's file listing before its details say "asking the hub…"
# (the timer then shows the answer when it comes).
SIZE_WAIT_S = 2.0


def model_cell(card) -> str:
    return CELL_SEP.join([card.title, card.id, ", ".join(card.tasks)])


def card_of_row(studio: Studio, row: list | None) -> str | None:
    """The card id in a table row's Model cell ("title · id · tasks"); a title may hold " · " itself,
    so the id is the last segment before the tasks that names a card."""
    if not row:
        return None
    parts = str(row[0]).split(CELL_SEP)
    return next((part for part in reversed(parts[:-1]) if part in studio.cards.cards), None)


def table_rows(studio: Studio) -> list[list[str]]:
    records = studio.installed.all()
    rows = []
    for card in sorted(studio.cards.cards.values(), key=lambda c: (not c.runnable, c.tiny, c.title)):
        size = disk_bytes(studio.settings, card)
        record = records.get(card.id)
        used = record.last_used_at.strftime("%Y-%m-%d %H:%M") if record and record.last_used_at else ""
        license_text = card.license + (" · gated" if card.gated else "")
        rows.append([model_cell(card), status_text(studio, card),
                     human_bytes(size) if size else "", used, license_text])
    return rows


MEMORY_COLUMNS = ["Model", "Where", "Placement", "Weights", "In use"]


def memory_rows(studio: Studio) -> list[list[str]]:
    return [[r.title, r.where, r.placement, human_bytes(r.bytes), "yes" if r.in_use else ""]
            for r in studio.scheduler.residents()]


def memory_summary(studio: Studio) -> str:
    scheduler = studio.scheduler
    budget = scheduler.device_budget()
    device = f"**{scheduler.device}**: {human_bytes(scheduler.device_used())} of weights"
    device += f" of a {human_bytes(budget)} budget" if budget is not None else " (no budget set)"
    ram = f"**parked in RAM**: {human_bytes(scheduler.ram_used())}"
    if scheduler.ram_budget is not None:
        ram += f" of {human_bytes(scheduler.ram_budget)}"
    return f"{device} · {ram}"


def size_line(studio: Studio, card_id: str, wait: float = 0.0) -> str | None:
    """What Download would fetch and how much of it is here; None for a built-in model."""
    size = studio.downloads.size(card_id, wait)
    if size is None:
        return None
    if size.pending:
        return "**Download size:** asking the hub…"
    if not size.known:
        here = f" · {human_bytes(size.present)} of its files are here" if size.present else ""
        # The reason's first sentence: what to do about it is said where a download fails.
        reason = (size.error or "the hub did not say").split(". ")[0].rstrip(".")
        return f"**Download size:** unknown: {html.escape(reason)}{here}"
    needs = f" (with {html.escape(', '.join(size.components))}, which it needs)" if size.components else ""
    if size.present >= size.total:
        here = "all of it is here"
    elif size.present:
        here = f"{human_bytes(size.present)} of it is already here"
    else:
        here = "none of it is here yet"
    return f"**Download size:** {human_bytes(size.total)}{needs} · {here}"


def download_message(studio: Studio, card_id: str | None) -> str:
    """The message area while it follows a download: what that download is doing now, or how it ended."""
    card = studio.cards.cards.get(card_id or "")
    state = studio.downloads.state(card_id) if card is not None else None
    if state is None:
        return ""
    title = html.escape(card.title)
    if state.status is InstallStatus.QUEUED:
        return f"Queued {title}: it starts after the downloads before it."
    if state.status is InstallStatus.DOWNLOADING:
        return f"Downloading {title}: {progress_text(state).removeprefix('downloading ')}"
    if state.status is InstallStatus.READY:
        return f"✅ {title} is downloaded ({human_bytes(state.bytes_total)}): Use opens it in its tab."
    if state.status is InstallStatus.CANCELLED:
        return f"Cancelled {title}; Download resumes it."
    return f"❌ Download of {title} failed: {html.escape(state.error or 'no reason given')}"


def quantized_note(studio: Studio, card) -> str:
    """How the model's transformer is stored when that is not its plain dtype (the estimate follows it)."""
    if card.transformer_gguf is not None:
        return f" (transformer from the GGUF file {html.escape(card.transformer_gguf.file)})"
    mode = mode_for(card, studio.settings)
    return f" (transformer quantized to {mode}, weight-only)" if mode != "none" else ""


def details(studio: Studio, card_id: str | None, wait: float = 0.0) -> str:
    if not card_id or card_id not in studio.cards.cards:
        return "Pick a model to see its details."
    card = studio.cards.get(card_id)
    source = f"[{card.source.repo}]({card.homepage or '#'})" if card.source.repo else "built in, no download needed"
    lines = [f"### {html.escape(card.title)}", f"**Status:** {html.escape(status_text(studio, card, detailed=True))}",
             f"**Source:** {source} · loads with `{card.pipeline}` ({card.library})",
             f"**Needs about** {estimate_gb(card, studio.settings):.3g} GB of GPU memory{quantized_note(studio, card)}"
             f" · **license** {html.escape(card.license)}"]
    size = size_line(studio, card_id, wait)
    if size:
        lines.insert(2, size)
    if card.gated:
        lines.append("🔒 Gated: accept the license on the model's page and set `HF_TOKEN` before downloading.")
    if card.description:
        lines.append(html.escape(card.description.strip()))
    return "\n\n".join(lines)


def build(studio: Studio, tabs: gr.Tabs, forms: list[TabForm]) -> None:
    choices = [(f"{c.title} ({c.id})", c.id) for c in sorted(studio.cards.cards.values(), key=lambda c: c.title)]
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            table = gr.Dataframe(value=table_rows(studio), headers=COLUMNS, interactive=False, wrap=True,
                                 column_widths=["40%", "24%", "10%", "12%", "14%"], max_height=640,
                                 elem_id="models-table")
        with gr.Column(scale=2, min_width=320):
            picked = gr.Dropdown(choices, value=None, label="Model", elem_id="models-pick")
            info = gr.Markdown(details(studio, None), elem_id="models-details")
            with gr.Row():
                download = gr.Button("Download", variant="primary", elem_id="models-download")
                cancel = gr.Button("Cancel", elem_id="models-cancel")
                use = gr.Button("Use", elem_id="models-use")
                delete = gr.Button("Delete", variant="stop", elem_id="models-delete")
            with gr.Row(visible=False) as confirm_row:
                confirm_text = gr.Markdown()
                confirm = gr.Button("Yes, delete its files", variant="stop", elem_id="models-confirm-delete")
                keep = gr.Button("Keep")
            message = gr.Markdown(elem_id="models-message")
            with gr.Accordion("Memory", open=False):
                memory = gr.Markdown(memory_summary(studio), elem_id="models-memory")
                residents = gr.Dataframe(value=memory_rows(studio), headers=MEMORY_COLUMNS, interactive=False,
                                         elem_id="models-residents")
                free = gr.Button("Free memory", elem_id="models-free")
            with gr.Accordion("Add a model", open=False):
                repo = gr.Textbox(label="Hugging Face repo id", placeholder="owner/name of a diffusers text-to-image "
                                  "or text-to-video repo", elem_id="models-add-repo")
                add = gr.Button("Add")
    timer = gr.Timer(1.0)
    # The card whose download the message area follows (None: it shows another action's message).
    watching = gr.State(None)

    def refresh(card_id):
        return table_rows(studio), details(studio, card_id)

    def refresh_picked(card_id):
        # A model just picked: give the hub a moment to say its size, so it shows at once.
        return table_rows(studio), details(studio, card_id, wait=SIZE_WAIT_S)

    def follow(card_id):
        return download_message(studio, card_id) if card_id else gr.skip()

    def pick_row(evt: gr.SelectData):
        # The row's own cell, not its index: the index could point at another row once sorted or refreshed.
        card_id = card_of_row(studio, evt.row_value)
        if card_id is None and isinstance(evt.index, (list, tuple)) and evt.index:
            rows = table_rows(studio)
            card_id = card_of_row(studio, rows[evt.index[0]]) if 0 <= evt.index[0] < len(rows) else None
        return gr.update(value=card_id) if card_id else gr.skip()

    def refresh_memory():
        return memory_summary(studio), memory_rows(studio)

    def do_free():
        freed = studio.scheduler.free_all()
        return f"Freed {human_bytes(freed)} of model weights (models in use stay).", None

    def act(action, card_id):
        """The message and the download it should follow from now on."""
        if not card_id:
            return "Pick a model first.", None
        try:
            card = studio.cards.get(card_id)
            if action == "download":
                studio.downloads.enqueue(card_id)
                return download_message(studio, card_id), card_id
            if studio.downloads.cancel(card_id):
                return download_message(studio, card_id), card_id  # "Cancelled" once the worker has stopped
            return f"Nothing to cancel for {html.escape(card.title)}.", None
        except StudioError as err:
            return f"❌ {err}", None

    def ask_delete(card_id):
        if not card_id:
            return gr.update(visible=False), "", "Pick a model first.", None
        card = studio.cards.get(card_id)
        size = human_bytes(disk_bytes(studio.settings, card))
        return gr.update(visible=True), f"Delete the files of **{html.escape(card.title)}** ({size})?", "", None

    def do_delete(card_id):
        try:
            freed = studio.downloads.remove(card_id)
        except StudioError as err:
            return gr.update(visible=False), f"❌ {err}", None
        return gr.update(visible=False), f"Deleted {card_id} ({human_bytes(freed)} freed).", None

    def do_use(card_id):
        card = studio.cards.cards.get(card_id or "")
        if card is None:
            return {message: "Pick a model first.", watching: None}
        form = next((f for f in forms if f.task in card.tasks), None)
        if form is None or not card.runnable:
            return {message: f"{card.title} has no tab that can run it yet.", watching: None}
        # The tab's form as this model starts it: its card's defaults, like picking it there.
        return {tabs: gr.Tabs(selected=form.tab_id), message: "", watching: None, **form.model_updates(card.id),
                form.model: gr.update(choices=model_choices(studio, form.task), value=card.id)}

    def do_add(repo_id):
        try:
            card = add_user_card(repo_id or "", studio.settings, studio.cards)
        except StudioError as err:
            return gr.update(), f"❌ {err}", None
        updated = [(f"{c.title} ({c.id})", c.id) for c in sorted(studio.cards.cards.values(), key=lambda c: c.title)]
        return gr.update(choices=updated, value=card.id), f"Added {card.title}: press Download to fetch it.", None

    private = {"api_visibility": "private"}
    said = [message, watching]
    timer.tick(refresh, picked, [table, info], show_progress="hidden", **private)
    timer.tick(follow, watching, message, show_progress="hidden", **private)
    timer.tick(refresh_memory, None, [memory, residents], show_progress="hidden", **private)
    free.click(do_free, None, said, **private).then(refresh_memory, None, [memory, residents], **private)
    picked.change(refresh_picked, picked, [table, info], **private)
    table.select(pick_row, None, picked, **private)
    download.click(lambda c: act("download", c), picked, said, **private).then(refresh, picked, [table, info],
                                                                               **private)
    cancel.click(lambda c: act("cancel", c), picked, said, **private).then(refresh, picked, [table, info], **private)
    delete.click(ask_delete, picked, [confirm_row, confirm_text, *said], **private)
    keep.click(lambda: gr.update(visible=False), None, confirm_row, **private)
    confirm.click(do_delete, picked, [confirm_row, *said], **private).then(refresh, picked, [table, info], **private)
    use.click(do_use, picked, [tabs, *said, *{c: None for f in forms for c in f.outputs}], **private)
    add.click(do_add, repo, [picked, *said], **private)
