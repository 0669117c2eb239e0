"""The Upscale tab: an image, an upscaler and the output scale (tile size and overlap under Advanced),
turned into upscale TaskSpec parameters; and the "Send to upscale" button other tabs put under a
result (the Image tab's, the Gallery's detail view), which puts the picked picture in this tab's image
box and switches to it. Builds widgets only: the job runs through the queue like every other.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import InvalidInput
from ..services import Studio
from ..tasks.upscale import MAX_SCALE, UpscaleSpec
from .common import card_note, generate, model_header, only_taken, start_follows_model, stop_button, wire_generate
from .forms import TabForm
from .results import job_summary, picked_path

TAB_ID = "upscale"
# Send buttons placed by tabs built before this one, by the Blocks being built: (button, the gallery it
# sends from, its picked index); wired to this tab's image box by `wire_sends` once every tab exists.
# (A tab built on its own, outside an app, leaves its buttons unwired: they are dropped with it.)
_pending: dict[int, list[tuple[gr.Button, gr.Gallery, gr.State]]] = {}


def _blocks_id() -> int:
    from gradio.context import Context

    return id(Context.root_block)


def send_button(prefix: str, source: gr.Gallery) -> gr.Button:
    """"Send to upscale" under a gallery of results: sends the picture picked there (the first if none)."""
    button = gr.Button("⤢ Send to upscale", size="sm", scale=0, min_width=150, elem_id=f"{prefix}-send-upscale")
    picked = gr.State(0)

    def pick(event: gr.SelectData) -> int:
        return int(event.index) if isinstance(event.index, int) else 0

    source.select(pick, None, picked, api_visibility="private", show_progress="hidden")
    _pending.setdefault(_blocks_id(), []).append((button, source, picked))
    return button


def _values(studio: Studio, model_id: str | None) -> dict[str, Any]:
    card = studio.cards.cards.get(model_id or "")
    return UpscaleSpec.defaults_for(card) if card is not None else {}


def build(studio: Studio) -> TabForm:
    """Build the tab; returns its form (the Gallery's "Send to tab" and the Models tab's "Use" fill it)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, note, initial = model_header(studio, TAB_ID, UpscaleSpec, "upscale-model")
            image = gr.Image(type="filepath", label="Image to upscale", sources=["upload", "clipboard"],
                             height=320, elem_id="upscale-image")
            scale = gr.Slider(1, MAX_SCALE, value=initial.get("scale", 4), step=0.5, label="Scale (x)",
                              info="the model's own scale by default; any other is a final Lanczos resize",
                              elem_id="upscale-scale")
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    tile = gr.Number(value=initial.get("tile"), precision=0, minimum=0, label="Tile (px, 0 = none)",
                                     elem_id="upscale-tile")
                    overlap = gr.Number(value=initial.get("tile_overlap"), precision=0, minimum=0,
                                        label="Tile overlap (px)", elem_id="upscale-overlap")
            with gr.Row(elem_classes=["studio-actions"]):
                run = gr.Button("Upscale", variant="primary", scale=3, elem_id="upscale-generate")
                stop_button(studio, TAB_ID)
        with gr.Column(scale=3, min_width=320):
            result = gr.Gallery(label="Result", columns=1, height=560, elem_id="upscale-result")
            status = gr.Markdown(elem_id="upscale-status")

    def model_updates(model_id: str) -> dict:
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return {}
        values = _values(studio, model_id)
        return {note: card_note(card), scale: values.get("scale"), tile: values.get("tile"),
                overlap: values.get("tile_overlap")}

    def read(model_id, image_path, scale_v, tile_v, overlap_v) -> dict[str, Any]:
        """The form as upscale TaskSpec parameters."""
        if not image_path:
            raise InvalidInput("Add an image to upscale (upload one, or send one from the Image tab or the Gallery).")
        params = {"model": model_id or "", "image": str(image_path), "scale": scale_v, "tile": tile_v,
                  "tile_overlap": overlap_v}
        params = {k: v for k, v in params.items() if v is not None}
        card = studio.cards.cards.get(model_id or "")
        return only_taken(UpscaleSpec, card, params) if card is not None else params

    def present(job: Any, seconds: float) -> tuple:
        pictures = [saved for saved in job.outputs if saved.kind == "image"]
        items = [(str(p.path), f"{p.width}x{p.height}") for p in pictures]
        if job.error or not pictures:
            return items, job_summary(job, seconds)
        made = pictures[0]
        return items, (f"✅ **Done** — {made.width}x{made.height} (x{job.spec.scale:g}) in {seconds:.1f} s · "
                       f"job `{html.escape(job.id)}`")

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        try:
            params = read(*values)
        except InvalidInput as err:
            gr.Warning(str(err))
            return [], f"❌ {err}"
        return generate(studio, TAB_ID, params, progress, request, present)

    inputs = [model, image, scale, tile, overlap]
    updates = start_follows_model(studio, run, model, model_updates)
    form = TabForm(modality="upscale", tab_id=TAB_ID, model=model, inputs=inputs, read=read,
                   fields={"image": image, "scale": scale, "tile": tile, "tile_overlap": overlap},
                   model_updates=updates, outputs=[model, note, scale, tile, overlap, image, run])
    model.input(updates, model, [note, scale, tile, overlap, run], api_visibility="private")
    wire_generate(run, on_generate, inputs, [result, status])
    form.present = present
    form.results = [result, status]
    return form


def wire_sends(tabs: gr.Tabs, form: TabForm) -> None:
    """Connect every send button placed so far to this tab's image box (inside the Blocks, after all tabs)."""
    image = form.fields["image"]

    def send(items: Any, index: int) -> dict:
        path = picked_path(items, index)
        if path is None or not Path(path).is_file():
            gr.Info("No picture to send yet: make or pick one first.")
            return {}
        return {tabs: gr.Tabs(selected=TAB_ID), image: path}

    for button, source, picked in _pending.pop(_blocks_id(), []):
        button.click(send, [source, picked], [tabs, image], api_visibility="private")
    _pending.clear()  # what other builds left (a tab built alone in a test) would never be wired
