"""The Anagrams tab: two to four readings (prompt + view), a style prefix and the sampling
controls; shows the refined picture, its viewed readings, the init phase's preview at the model's
training size and the animation. It only builds the TaskSpec; its defaults are the model's."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..engines.anagram import VIEWS
from ..errors import InvalidInput
from ..services import Studio
from ..tasks.anagram import AnagramSpec
from .common import (card_note, generate, model_header, only_taken, refuse_unrunnable,
                     sampling_controls, start_follows_model, stop_button, wire_generate)
from .family_controls import FamilyControls
from .results import job_summary, reuse_seed_button
from .forms import TabForm, preset_controls, size_text, wire_presets

VIEW_CHOICES = [(view.title, name) for name, view in VIEWS.items()]


def build(studio: Studio) -> TabForm:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, note, defaults = model_header(studio, "anagram", AnagramSpec, "anagram-model")
            controls = FamilyControls("anagram", "anagram", studio.cards.cards.get(model.value or ""))
            side = defaults.get("width", 1024)
            style = gr.Textbox(label="Style (put before every prompt that does not start with it)",
                               value=defaults.get("style", ""), elem_id="anagram-style")
            readings = []
            for i, (view, hint) in enumerate((("identity", "an old man"), ("rotate_180", "a snowy mountain"),
                                              (None, ""), (None, ""))):
                with gr.Row(visible=i < 2) as row:
                    text = gr.Textbox(label=f"Reading {i + 1}", placeholder=hint, scale=3,
                                      elem_id=f"anagram-prompt-{i}")
                    picked = gr.Dropdown(VIEW_CHOICES, value=view, label="seen", scale=2, elem_id=f"anagram-view-{i}")
                readings.append((row, text, picked))
            more = gr.Checkbox(label="More readings (up to four)", value=False)
            negative = gr.Textbox(label="Negative prompt", lines=1, value=defaults.get("negative_prompt", ""),
                                  elem_id="anagram-negative")
            presets = preset_controls(studio, "anagrams", with_style=False)
            size = gr.Dropdown([f"{s}x{s}" for s in (256, 512, 768, 1024)] + [f"{side}x{side}"],
                               value=f"{side}x{side}", label="Size", allow_custom_value=True)
            steps, cfg, seed = sampling_controls(defaults, "anagram", controls)
            with gr.Row(elem_classes=["studio-actions"]):
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="anagram-generate")
                stop_button(studio, "anagram")
        with gr.Column(scale=3, min_width=320):
            gallery = gr.Gallery(label="The picture, and as seen under each view", columns=2, height=420,
                                 elem_id="anagram-result")
            preview = gr.Image(label="Preview: the first phase, at the model's training size (refined above)",
                               type="filepath", height=240, elem_id="anagram-preview")
            animation = gr.Image(label="Animation", type="filepath", elem_id="anagram-animation")
            with gr.Row(equal_height=True):
                status = gr.Markdown(elem_id="anagram-status")
                reuse_seed_button("anagram", seed)

    more.change(lambda on: [gr.update(visible=on)] * 2, more, [readings[2][0], readings[3][0]],
                api_visibility="private")

    def read(model_id, style_text, negative_text, size_v, steps_v, cfg_v, seed_v, *values) -> dict:
        pairs, option_values = values[:len(readings) * 2], values[len(readings) * 2:]
        prompts, views = [], []
        for i in range(0, len(pairs), 2):
            text, view = pairs[i], pairs[i + 1]
            if i >= 4 and not (text or "").strip():
                continue  # optional third and fourth readings left empty
            prompts.append(text or "")
            views.append(view or "identity")
        try:
            width, height = (int(v) for v in str(size_v).lower().split("x"))
        except ValueError:
            raise InvalidInput(f"Size must look like WIDTHxHEIGHT, got {size_v!r}") from None
        params = {"model": model_id or "", "prompts": prompts, "views": views, "style": style_text or "",
                  "negative_prompt": negative_text or "", "width": width, "height": height, "steps": steps_v,
                  "cfg": cfg_v, "seed": -1 if seed_v is None else seed_v}
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return params
        return only_taken(AnagramSpec, card, {**params, **controls.params(card, list(option_values))})

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        try:
            params = read(*values)
            refuse_unrunnable(studio, params["model"])
        except InvalidInput as err:
            return [], None, None, f"❌ {err}"
        return generate(studio, "anagram", params, progress, request, present)

    def present(job: Any, seconds: float) -> tuple:
        images = [str(o.path) for o in job.outputs if o.kind == "image"]
        first = next((str(o.path) for o in job.outputs if o.kind == "preview"), None)
        gif = next((str(o.path) for o in job.outputs if o.kind == "animation"), None)
        return images, first, gif, job_summary(job, seconds)

    def model_updates(model_id: str) -> dict:
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return {}
        values = AnagramSpec.defaults_for(card)
        return {note: card_note(card), steps: values.get("steps"), cfg: values.get("cfg"),
                negative: values.get("negative_prompt", ""), **controls.updates(card)}

    def readings_fill(params: dict[str, Any], _model: str | None) -> dict:
        """Each reading's prompt and view in its row; the third and fourth rows shown when used."""
        updates: dict = {}
        if params.get("prompts"):
            prompts, views = list(params["prompts"]), list(params.get("views") or [])
            for i, (row, text, picked) in enumerate(readings):
                updates[text] = prompts[i] if i < len(prompts) else ""
                updates[picked] = views[i] if i < len(views) else None
                if i >= 2:
                    updates[row] = gr.update(visible=len(prompts) > 2)
            updates[more] = len(prompts) > 2
        if size_text(params):
            updates[size] = size_text(params)
        return updates

    pairs = [c for _, text, picked in readings for c in (text, picked)]
    inputs = [model, style, negative, size, steps, cfg, seed, *pairs, *controls.components]
    model_updates = start_follows_model(studio, run, model, model_updates)
    model_outputs = [note, run, steps, cfg, negative, *controls.outputs]
    form = TabForm(modality="anagrams", tab_id="anagrams", model=model, inputs=inputs, read=read,
                   fields={"style": style, "negative_prompt": negative, "steps": steps, "cfg": cfg, "seed": seed,
                           **controls.widgets},
                   model_updates=model_updates, extra_fill=readings_fill,
                   outputs=list(dict.fromkeys([*inputs, *model_outputs, more, *(row for row, _, _ in readings)])))
    model.input(model_updates, model, model_outputs, api_visibility="private")
    wire_generate(run, on_generate, inputs, [gallery, preview, animation, status])
    wire_presets(studio, form, presets)
    form.present = present
    form.results = [gallery, preview, animation, status]
    return form
