"""The Models tab: every card with its status, one-click Download / Cancel / Delete / Use, live
progress, and "Add a model". It only builds widgets; the work is the Studio's download manager."""

from __future__ import annotations

import html

import gradio as gr

from ..errors import StudioError
from ..model_manager import human_bytes, status_text
from ..services import Studio
from ..zoo.downloads import disk_bytes
from ..zoo.user_cards import add_user_card
from .common import model_choices
from .forms import TabForm

COLUMNS = ["Model", "Status", "On disk", "Last used", "License"]


def table_rows(studio: Studio) -> list[list[str]]:
    records = studio.installed.all()
    rows = []
    for card in sorted(studio.cards.cards.values(), key=lambda c: (not c.runnable, c.tiny, c.title)):
        size = disk_bytes(studio.settings, card)
        record = records.get(card.id)
        used = record.last_used_at.strftime("%Y-%m-%d %H:%M") if record and record.last_used_at else ""
        license_text = card.license + (" · gated" if card.gated else "")
        rows.append([f"{card.title} · {card.id} · {', '.join(card.tasks)}", status_text(studio, card),
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


def details(studio: Studio, card_id: str | None) -> str:
    if not card_id or card_id not in studio.cards.cards:
        return "Pick a model to see its details."
    card = studio.cards.get(card_id)
    source = f"[{card.source.repo}]({card.homepage or '#'})" if card.source.repo else "built in, no download needed"
    lines = [f"### {html.escape(card.title)}", f"**Status:** {html.escape(status_text(studio, card, detailed=True))}",
             f"**Source:** {source} · loads with `{card.pipeline}` ({card.library})",
             f"**Needs about** {card.memory_gb:g} GB of GPU memory · **license** {html.escape(card.license)}"]
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

    def refresh(card_id):
        return table_rows(studio), details(studio, card_id)

    def refresh_memory():
        return memory_summary(studio), memory_rows(studio)

    def do_free():
        freed = studio.scheduler.free_all()
        return f"Freed {human_bytes(freed)} of model weights (models in use stay)."

    def act(action, card_id):
        if not card_id:
            return "Pick a model first."
        try:
            card = studio.cards.get(card_id)
            if action == "download":
                studio.downloads.enqueue(card_id)
                return f"Downloading {card.title}…"
            if action == "cancel":
                done = studio.downloads.cancel(card_id)
                return f"Cancelled {card.title}; Download resumes it." if done else "Nothing to cancel."
        except StudioError as err:
            return f"❌ {err}"
        return ""

    def ask_delete(card_id):
        if not card_id:
            return gr.update(visible=False), "", "Pick a model first."
        card = studio.cards.get(card_id)
        size = human_bytes(disk_bytes(studio.settings, card))
        return gr.update(visible=True), f"Delete the files of **{html.escape(card.title)}** ({size})?", ""

    def do_delete(card_id):
        try:
            freed = studio.downloads.remove(card_id)
        except StudioError as err:
            return gr.update(visible=False), f"❌ {err}"
        return gr.update(visible=False), f"Deleted {card_id} ({human_bytes(freed)} freed)."

    def do_use(card_id):
        card = studio.cards.cards.get(card_id or "")
        if card is None:
            return {message: "Pick a model first."}
        form = next((f for f in forms if f.task in card.tasks), None)
        if form is None or not card.runnable:
            return {message: f"{card.title} has no tab that can run it yet."}
        # The tab's form as this model starts it: its card's defaults, like picking it there.
        return {tabs: gr.Tabs(selected=form.tab_id), message: "", **form.model_updates(card.id),
                form.model: gr.update(choices=model_choices(studio, form.task), value=card.id)}

    def do_add(repo_id):
        try:
            card = add_user_card(repo_id or "", studio.settings, studio.cards)
        except StudioError as err:
            return gr.update(), f"❌ {err}"
        updated = [(f"{c.title} ({c.id})", c.id) for c in sorted(studio.cards.cards.values(), key=lambda c: c.title)]
        return gr.update(choices=updated, value=card.id), f"Added {card.title}: press Download to fetch it."

    private = {"api_visibility": "private"}
    timer.tick(refresh, picked, [table, info], show_progress="hidden", **private)
    timer.tick(refresh_memory, None, [memory, residents], show_progress="hidden", **private)
    free.click(do_free, None, message, **private).then(refresh_memory, None, [memory, residents], **private)
    picked.change(refresh, picked, [table, info], **private)
    download.click(lambda c: act("download", c), picked, message, **private).then(refresh, picked, [table, info],
                                                                                  **private)
    cancel.click(lambda c: act("cancel", c), picked, message, **private).then(refresh, picked, [table, info], **private)
    delete.click(ask_delete, picked, [confirm_row, confirm_text, message], **private)
    keep.click(lambda: gr.update(visible=False), None, confirm_row, **private)
    confirm.click(do_delete, picked, [confirm_row, message], **private).then(refresh, picked, [table, info], **private)
    use.click(do_use, picked, [tabs, message, *{c: None for f in forms for c in f.outputs}], **private)
    add.click(do_add, repo, [picked, message], **private)
