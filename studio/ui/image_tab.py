"""The Image tab: builds the form and turns it into an image TaskSpec; nothing else.

The common fields (prompt, negative prompt, size, steps, CFG, seed, count) are the tab's own; every
other control comes from the chosen model's family (FamilyControls), and the tab shows only what
that model takes.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..errors import InvalidInput
from ..services import Studio
from ..tasks.image import ImageSpec
from ..zoo.cards import parse_size
from .common import (card_note, default_model, generate_live, model_choices, only_taken, stop_button, styled_job,
                     wire_generate)
from .family_controls import FamilyControls
from .lora_controls import LoraControls
from .image_edit_panel import EditPanel
from .results import captioned, job_summary, picked_path, reuse_seed_button
from .upscale_tab import send_button as send_to_upscale
from .forms import TabForm, nearest_shape, preset_controls, size_text, wire_presets


def _form_values(studio: Studio, model_id: str | None) -> dict[str, Any]:
    """The form's values for a model: its card's defaults (the one place defaults live)."""
    if not model_id or model_id not in studio.cards.cards:
        return {}
    card = studio.cards.get(model_id)
    values = ImageSpec.defaults_for(card)
    size = f"{values['width']}x{values['height']}"
    sizes = [(s, s) for s in dict.fromkeys([size, *card.resolutions])]
    sizes += [(f"{s} (extrapolation)", s) for s in card.extrapolation if s != size]
    return {"card": card, "size": size, "sizes": sizes, "takes": ImageSpec.takes(card), **values}


def build(studio: Studio) -> TabForm:
    """Build the tab; returns its form (presets, the Gallery and the Models tab's "Use" fill it)."""
    model_id = default_model(studio, "image")
    initial = _form_values(studio, model_id)
    card = initial.get("card")
    controls = FamilyControls("image", "image", card)
    takes = initial.get("takes", set())
    by_option = controls.prompt_option(card)
    edits = EditPanel(card)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model = gr.Dropdown(model_choices(studio, "image"), value=model_id, label="Model", elem_id="image-model")
            note = gr.Markdown(card_note(card) if card else "No image model is installed.", elem_id="image-note")
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the picture…", elem_id="image-prompt",
                                visible=by_option is None)
            negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="image-negative",
                                  visible="negative_prompt" in takes)
            controls.place_prompt_options()
            loras = LoraControls(studio, ImageSpec, card, "image")
            presets = preset_controls(studio, "image")
            size = gr.Dropdown(initial.get("sizes", []), value=initial.get("size"), label="Size (width x height)",
                               allow_custom_value=True, elem_id="image-size")
            with gr.Row():
                steps = gr.Slider(1, 200, value=initial.get("steps", 30), step=1, label="Steps", elem_id="image-steps",
                                  visible="steps" in takes)
                cfg = gr.Slider(1.0, 20.0, value=initial.get("cfg", 4.0), step=0.5, label="CFG scale")
            with gr.Row():
                controls.place(advanced=False)
            edits.place()
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="image-seed")
                    num_images = gr.Slider(1, 8, value=1, step=1, label="Images", elem_id="image-num-images")
                controls.place(advanced=True)
            with gr.Row(elem_classes=["studio-actions"]):
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="image-generate",
                                interactive=card is None or card.runnable)
                stop_button(studio, "image")
        with gr.Column(scale=3, min_width=320):
            gallery = gr.Gallery(label="Result", columns=2, height=560, elem_id="image-result")
            with gr.Row(equal_height=True):
                status = gr.Markdown(elem_id="image-status")
                reuse_seed_button("image", seed, gallery)
            with gr.Row():
                to_img2img = gr.Button("Send to img2img", size="sm", elem_id="image-send-img2img",
                                       visible=edits.taken)
                to_inpaint = gr.Button("Send to inpaint", size="sm", elem_id="image-send-inpaint",
                                       visible=edits.taken)
                send_to_upscale("image", gallery)

    model_outputs = [note, size, steps, cfg, seed, prompt, negative, run, to_img2img, to_inpaint, *controls.outputs,
                     *edits.outputs, *loras.outputs]

    def model_updates(model_id: str) -> dict:
        values = _form_values(studio, model_id)
        if not values:
            return {}
        card = values["card"]
        updates = {note: card_note(card), size: gr.update(choices=values["sizes"], value=values["size"]),
                   cfg: values["cfg"], seed: -1,
                   steps: gr.update(value=values.get("steps", 30), visible="steps" in values["takes"]),
                   prompt: gr.update(visible=controls.prompt_option(card) is None),
                   negative: gr.update(visible="negative_prompt" in values["takes"]),
                   run: gr.update(interactive=card.runnable)}
        updates.update(controls.updates(card))
        updates.update(loras.updates(card))
        updates.update(edits.updates(card))
        taken = "image" in values["takes"]
        updates.update({to_img2img: gr.update(visible=taken), to_inpaint: gr.update(visible=taken)})
        return updates

    def read(model_id, prompt_text, negative_text, size_v, steps_v, cfg_v, seed_v, count, *rest
             ) -> dict[str, Any]:
        """The form as image TaskSpec parameters; only what the chosen model takes."""
        try:
            width, height = parse_size(size_v or "")
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        card = studio.cards.cards.get(model_id or "")
        params = {"model": model_id or "", "prompt": prompt_text or "", "negative_prompt": negative_text or "",
                  "width": width, "height": height, "steps": steps_v, "cfg": cfg_v,
                  "seed": -1 if seed_v is None else seed_v, "num_images": count}
        *option_values, lora_text = rest
        if card is None:
            return params
        count_options = len(controls.components)
        params.update(controls.params(card, list(option_values[:count_options])))
        params.update(edits.params(list(option_values[count_options:])))
        params.update(loras.params(card, lora_text))
        replaced = controls.prompt_option(card)
        if replaced is not None:  # the picked choice (e.g. "207 · golden retriever") is the prompt
            option = controls.options[replaced]
            if params.get(replaced) is None:
                raise InvalidInput(f"Pick the {option.label.split(' (')[0]}: this model draws one of its choices.")
            params["prompt"] = next(label for label, value in option.choices if value == params[replaced])
        return only_taken(ImageSpec, card, params)

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        *form_values, style_key = values
        try:
            params = styled_job(studio, ImageSpec, style_key, read(*form_values))
        except InvalidInput as err:
            gr.Warning(str(err))
            yield [], f"❌ {err}"
            return
        # Live previews while it samples (docs/preview.md), then the images.
        yield from generate_live(studio, "image", params, progress, request, present, shown)

    def present(job: Any, seconds: float) -> tuple:
        return captioned(job), job_summary(job, seconds)

    def shown(live: Any) -> tuple:
        return [(image, f"preview · step {live.step}/{live.total}") for image in live.images], gr.skip()

    inputs = [model, prompt, negative, size, steps, cfg, seed, num_images, *controls.components, *edits.components,
              *loras.components]
    form = TabForm(modality="image", tab_id="image", model=model, inputs=inputs, read=read,
                   fields={"prompt": prompt, "negative_prompt": negative, "steps": steps, "cfg": cfg,
                           "seed": seed, "num_images": num_images, **controls.widgets, **edits.fields,
                           "loras": loras.text},
                   model_updates=model_updates,
                   extra_fill=lambda params, model_id: _size_fill(studio, size, params, model_id),
                   outputs=[model, num_images, *model_outputs])
    model.input(model_updates, model, model_outputs, api_visibility="private")
    edits.wire(size, model, lambda model_id: studio.cards.cards.get(model_id or ""))
    picked = gr.State(0)

    def pick(event: gr.SelectData) -> int:
        return int(event.index) if isinstance(event.index, int) else 0

    gallery.select(pick, None, picked, api_visibility="private", show_progress="hidden")

    def send(shown: Any, index: int) -> dict:
        path = picked_path(shown, index)
        if path is None:
            gr.Info("No picture to send yet: generate one first.")
            return {}
        return edits.send(path)

    for button in (to_img2img, to_inpaint):
        button.click(send, [gallery, picked], [edits.image, edits.section, edits.hires_scale],
                     api_visibility="private")
    form.send_image = edits.send
    form.send_outputs = [edits.image, edits.section, edits.hires_scale]
    wire_generate(run, on_generate, [*inputs, presets.style], [gallery, status])
    wire_presets(studio, form, presets)
    form.present = present
    form.results = [gallery, status]
    return form


def _size_fill(studio: Studio, size: gr.Dropdown, params: dict[str, Any], model_id: str | None) -> dict:
    """A size from parameters: as is when it came with a model (a past job); for a preset, the current
    model's listed size closest in shape, since presets are written for the full-size models."""
    text = size_text(params)
    if text is None:
        return {}
    if params.get("model"):
        return {size: text}
    # Only the sizes the model was trained at: a preset should not land on an extrapolation size.
    choices = [value for label, value in _form_values(studio, model_id).get("sizes", []) if label == value]
    return {size: nearest_shape(text, choices)}
