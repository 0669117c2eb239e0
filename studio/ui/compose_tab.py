"""The Compositional tab: a caption box per grid cell laid out as the grid, a live layout preview,
and the usual sampling controls; it turns the form into a compose TaskSpec and nothing else."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from ..errors import InvalidInput
from ..services import Studio
from ..tasks.compose import MAX_GRID, ComposeSpec
from .common import (card_note, generate, model_header, only_taken, refuse_unrunnable,
                     sampling_controls, start_follows_model, stop_button, wire_generate)
from .family_controls import FamilyControls
from .results import job_summary, reuse_seed_button
from .forms import TabForm, preset_controls, wire_presets

CELL_SIZES = [64, 128, 256, 384, 512, 768, 1024]  # 64: the mini model's native size


def layout_preview(rows: int, cols: int, captions: list[str], cell_w: int, cell_h: int) -> str:
    """The grid as the image will be laid out: cell numbers and the start of each caption."""
    cells = []
    for k in range(rows * cols):
        text = (captions[k] if k < len(captions) else "").strip()
        shown = html.escape(text[:60]) if text else "<em>empty: drawn from no caption (the empty prompt)</em>"
        cells.append(f'<div class="cell" style="border:1px dashed #8888;padding:4px;overflow:hidden;'
                     f'font-size:12px"><b>{k + 1}</b> {shown}</div>')
    return (f'<div class="compose-preview" style="display:grid;grid-template-columns:repeat({cols},1fr);'
            f'aspect-ratio:{cols * cell_w}/{rows * cell_h};max-width:320px;max-height:320px;gap:2px">'
            f'{"".join(cells)}</div><small>canvas {cols * cell_w}x{rows * cell_h}</small>')


def build(studio: Studio) -> TabForm:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, note, defaults = model_header(studio, "compose", ComposeSpec, "compose-model")
            controls = FamilyControls("compose", "compose", studio.cards.cards.get(model.value or ""))
            cell = defaults.get("cell_width", 512)
            with gr.Row():
                rows = gr.Slider(1, MAX_GRID, value=2, step=1, label="Rows", elem_id="compose-rows")
                cols = gr.Slider(1, MAX_GRID, value=2, step=1, label="Columns", elem_id="compose-cols")
            boxes = []
            for r in range(MAX_GRID):
                with gr.Row():
                    for c in range(MAX_GRID):
                        k = r * MAX_GRID + c
                        boxes.append(gr.Textbox(label=f"Cell {r * 2 + c + 1}", lines=2, visible=r < 2 and c < 2,
                                                elem_id=f"compose-cell-{k}"))
            negative = gr.Textbox(label="Negative caption", lines=1, elem_id="compose-negative")
            presets = preset_controls(studio, "compositional", with_style=False)
            cell_size = gr.Dropdown([(f"{s} px", s) for s in CELL_SIZES], value=cell, label="Cell size")
            steps, cfg, seed = sampling_controls(defaults, "compose", controls)
            with gr.Row(elem_classes=["studio-actions"]):
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="compose-generate")
                stop_button(studio, "compose")
        with gr.Column(scale=3, min_width=320):
            preview = gr.HTML(layout_preview(2, 2, [], cell, cell), elem_id="compose-preview")
            result = gr.Image(label="Result", type="filepath", height=560, elem_id="compose-result")
            with gr.Row(equal_height=True):
                status = gr.Markdown(elem_id="compose-status")
                reuse_seed_button("compose", seed)

    def grid_captions(r: int, c: int, values: list[str]) -> list[str]:
        """The captions of the visible cells, in reading order (cell k = row * cols + col)."""
        return [values[i * MAX_GRID + j] or "" for i in range(int(r)) for j in range(int(c))]

    def on_grid(r, c, size, *values):
        r, c = int(r), int(c)
        updates = []
        for i in range(MAX_GRID):
            for j in range(MAX_GRID):
                updates.append(gr.update(visible=i < r and j < c, label=f"Cell {i * c + j + 1}"))
        return [layout_preview(r, c, grid_captions(r, c, list(values)), int(size), int(size)), *updates]

    def on_text(r, c, size, *values):
        return layout_preview(int(r), int(c), grid_captions(r, c, list(values)), int(size), int(size))

    def read(model_id, r, c, size, negative_text, steps_v, cfg_v, seed_v, *values) -> dict[str, Any]:
        boxed, option_values = values[:len(boxes)], values[len(boxes):]
        params = {"model": model_id or "", "grid_rows": int(r), "grid_cols": int(c),
                  "captions": grid_captions(r, c, list(boxed)), "negative_prompt": negative_text or "",
                  "cell_width": int(size), "cell_height": int(size), "steps": steps_v, "cfg": cfg_v,
                  "seed": -1 if seed_v is None else seed_v}
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return params
        return only_taken(ComposeSpec, card, {**params, **controls.params(card, list(option_values))})

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        try:
            params = read(*values)
            refuse_unrunnable(studio, params["model"])
        except InvalidInput as err:
            return None, f"❌ {err}"
        return generate(studio, "compose", params, progress, request, present)

    def present(job: Any, seconds: float) -> tuple:
        return (str(job.outputs[0].path) if job.outputs else None), job_summary(job, seconds)

    def model_updates(model_id: str) -> dict:
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return {}
        values = ComposeSpec.defaults_for(card)
        return {note: card_note(card), steps: values.get("steps"), cfg: values.get("cfg"),
                cell_size: values.get("cell_width", cell), **controls.updates(card)}

    def grid_fill(params: dict[str, Any], _model: str | None) -> dict:
        """Rows, columns and each caption in its box (box k of the form = row * MAX_GRID + col)."""
        if not params.get("captions"):
            return {}
        try:  # a refused job's parameters may be anything
            r, c = int(params.get("grid_rows", 1)), int(params.get("grid_cols", 1))
            captions = [str(text) for text in params["captions"]]
        except (TypeError, ValueError):
            return {}
        if not (1 <= r <= MAX_GRID and 1 <= c <= MAX_GRID):
            return {}
        updates: dict = {rows: r, cols: c}
        for i in range(MAX_GRID):
            for j in range(MAX_GRID):
                k = i * c + j
                text = captions[k] if i < r and j < c and k < len(captions) else ""
                updates[boxes[i * MAX_GRID + j]] = gr.update(value=text, visible=i < r and j < c, label=f"Cell {k + 1}")
        if params.get("cell_width") in CELL_SIZES:
            updates[cell_size] = params["cell_width"]
        return updates  # the preview is redrawn from the form once this has landed (after_fill)

    private = {"api_visibility": "private"}
    for control in (rows, cols, cell_size):
        control.input(on_grid, [rows, cols, cell_size, *boxes], [preview, *boxes], **private)
    for box in boxes:
        box.input(on_text, [rows, cols, cell_size, *boxes], preview, **private)
    inputs = [model, rows, cols, cell_size, negative, steps, cfg, seed, *boxes, *controls.components]
    model_updates = start_follows_model(studio, run, model, model_updates)
    model_outputs = [note, run, steps, cfg, cell_size, *controls.outputs]
    form = TabForm(modality="compositional", tab_id="compositional", model=model, inputs=inputs, read=read,
                   fields={"negative_prompt": negative, "steps": steps, "cfg": cfg, "seed": seed, **controls.widgets},
                   model_updates=model_updates, extra_fill=grid_fill,
                   outputs=list(dict.fromkeys([*inputs, *model_outputs])),
                   after_fill=(on_text, [rows, cols, cell_size, *boxes], [preview]))
    model.input(model_updates, model, model_outputs, **private)
    wire_generate(run, on_generate, inputs, [result, status])
    wire_presets(studio, form, presets)
    form.present = present
    form.results = [result, status]
    return form
