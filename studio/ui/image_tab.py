"""The Image tab: builds the form and turns it into an image TaskSpec; nothing else."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..engines.flow import SOLVERS
from ..errors import InvalidInput
from ..services import Studio
from ..tasks.image import LUMINA_NEXT_ONLY, ImageSpec
from ..tasks.llamagen_options import DEFAULT_CLASS, class_label, is_llamagen, takes_class
from ..zoo.cards import parse_size
from .common import GENERATE, Timer, card_note, default_model, job_summary, model_choices, run_job, stop_button
from .forms import TabForm, nearest_shape, preset_controls, size_text, styled, wire_presets


def _form_values(studio: Studio, model_id: str | None) -> dict[str, Any]:
    """The form's values for a model: its card's defaults (the one place defaults live)."""
    if not model_id or model_id not in studio.cards.cards:
        return {}
    card = studio.cards.get(model_id)
    values = ImageSpec.defaults_for(card)
    size = f"{values['width']}x{values['height']}"
    sizes = [(s, s) for s in dict.fromkeys([size, *card.resolutions])]
    sizes += [(f"{s} (extrapolation)", s) for s in card.extrapolation if s != size]
    return {"card": card, "size": size, "sizes": sizes, **values}


def _visibility(card: Any) -> dict[str, bool]:
    """Which controls a model takes: LlamaGen draws token by token (no steps, no negative prompt), and
    its class-conditional models take an ImageNet class instead of a prompt."""
    llamagen = card is not None and is_llamagen(card)
    by_class = card is not None and takes_class(card)
    return {"prompt": not by_class, "negative": not llamagen, "class": by_class, "steps": not llamagen,
            "tokens": llamagen}


def _class_choices() -> list[tuple[str, int]]:
    from ..engines.llamagen.classes import class_names

    return [(class_label(i), i) for i in range(len(class_names()))]


def build(studio: Studio) -> TabForm:
    """Build the tab; returns its form (presets, the Gallery and the Models tab's "Use" fill it)."""
    # Offline, a diffusion model comes up first; LlamaGen's are a pick away.
    model_id = default_model(studio, "image", plain=lambda card: not is_llamagen(card))
    initial = _form_values(studio, model_id)
    lumina_next = all(name in initial for name in LUMINA_NEXT_ONLY)
    shown = _visibility(initial.get("card"))
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model = gr.Dropdown(model_choices(studio, "image"), value=model_id, label="Model", elem_id="image-model")
            note = gr.Markdown(card_note(initial["card"]) if initial else "No image model is installed.")
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the picture…", elem_id="image-prompt",
                                visible=shown["prompt"])
            negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="image-negative", visible=shown["negative"])
            class_id = gr.Dropdown(_class_choices(), value=DEFAULT_CLASS, label="ImageNet class (type to search)",
                                   filterable=True, visible=shown["class"], elem_id="image-class")
            presets = preset_controls(studio, "image")
            size = gr.Dropdown(initial.get("sizes", []), value=initial.get("size"), label="Size (width x height)",
                               allow_custom_value=True, elem_id="image-size")
            with gr.Row():
                steps = gr.Slider(1, 200, value=initial.get("steps", 30), step=1, label="Steps", elem_id="image-steps",
                                  visible=shown["steps"])
                cfg = gr.Slider(1.0, 20.0, value=initial.get("cfg", 4.0), step=0.5, label="CFG scale")
            with gr.Row(visible=shown["tokens"]) as token_group:
                temperature = gr.Slider(0.05, 2.0, value=initial.get("temperature", 1.0), step=0.05,
                                        label="Temperature", elem_id="image-temperature")
                top_k = gr.Number(value=initial.get("top_k", 0), precision=0, minimum=0, label="Top-k (0 = off)",
                                  elem_id="image-top-k")
                top_p = gr.Slider(0.05, 1.0, value=initial.get("top_p", 1.0), step=0.05, label="Top-p (1 = off)",
                                  elem_id="image-top-p")
            with gr.Accordion("Advanced", open=False):
                shift = gr.Slider(1.0, 20.0, value=initial.get("shift") or 1.0, step=0.5, label="Time shift",
                                  visible="shift" in initial)
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                    num_images = gr.Slider(1, 8, value=1, step=1, label="Images")
                with gr.Group(visible=lumina_next) as lumina_group:
                    gr.Markdown("**Lumina-Next sampling** — its authors' solver, RoPE scaling for resolution "
                                "extrapolation, and attention settings")
                    solver = gr.Dropdown(list(SOLVERS), value=initial.get("solver", "midpoint"), label="Solver")
                    rope = gr.Radio([("Time-aware", "time_aware"), ("None", "none")],
                                    value=initial.get("rope_scaling", "time_aware"), label="RoPE scaling")
                    watershed = gr.Slider(0.0, 1.0, value=initial.get("watershed", 0.3), step=0.05,
                                          label="Linear/NTK watershed")
                    proportional = gr.Checkbox(value=initial.get("proportional_attn", True),
                                               label="Proportional attention")
                    cfg_mode = gr.Radio([("Lumina-Next (first 3 channels)", "lumina"), ("Plain", "plain")],
                                        value=initial.get("cfg_mode", "lumina"), label="CFG form")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="image-generate")
                stop_button(studio, "image")
        with gr.Column(scale=3, min_width=320):
            gallery = gr.Gallery(label="Result", columns=2, height=560, elem_id="image-result")
            status = gr.Markdown(elem_id="image-status")

    options = {"solver": solver, "rope_scaling": rope, "watershed": watershed, "proportional_attn": proportional,
               "cfg_mode": cfg_mode}
    tokens = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    model_outputs = [note, size, steps, cfg, shift, seed, lumina_group, *options.values(), prompt, negative,
                     class_id, token_group, *tokens.values()]

    def model_updates(model_id: str) -> dict:
        values = _form_values(studio, model_id)
        if not values:
            return {}
        is_next = all(name in values for name in LUMINA_NEXT_ONLY)
        visible = _visibility(values["card"])
        updates = {note: card_note(values["card"]), size: gr.update(choices=values["sizes"], value=values["size"]),
                   cfg: values["cfg"], seed: -1, lumina_group: gr.update(visible=is_next),
                   shift: gr.update(value=values.get("shift") or 1.0, visible="shift" in values),
                   steps: gr.update(value=values.get("steps", 30), visible=visible["steps"]),
                   prompt: gr.update(visible=visible["prompt"]), negative: gr.update(visible=visible["negative"]),
                   class_id: gr.update(visible=visible["class"]), token_group: gr.update(visible=visible["tokens"])}
        updates.update({component: values[name] for name, component in options.items() if name in values})
        updates.update({component: values[name] for name, component in tokens.items() if name in values})
        return updates

    def read(model_id, prompt_text, negative_text, size_v, steps_v, cfg_v, shift_v, seed_v, count,
             solver_v="midpoint", rope_v="time_aware", watershed_v=0.3, proportional_v=True, cfg_mode_v="lumina",
             class_v=None, temperature_v=1.0, top_k_v=0, top_p_v=1.0) -> dict[str, Any]:
        """The form as image TaskSpec parameters; only what the chosen model takes."""
        try:
            width, height = parse_size(size_v or "")
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        card = studio.cards.cards.get(model_id or "")
        takes = set(ImageSpec.defaults_for(card)) if card else set()
        params = {"model": model_id or "", "prompt": prompt_text or "", "negative_prompt": negative_text or "",
                  "width": width, "height": height, "cfg": cfg_v, "seed": -1 if seed_v is None else seed_v,
                  "num_images": count}
        if card is not None and takes_class(card):
            if class_v is None:
                raise InvalidInput("Pick an ImageNet class: this model draws one of the 1000 classes.")
            params.update(class_id=int(class_v), prompt=class_label(int(class_v)))
        if card is not None and is_llamagen(card):
            del params["negative_prompt"]  # it has none (a style's negative prompt is not sent either)
        # Only what this model takes: a Lumina-Next control left over on the form is not sent to Lumina 2.
        chosen = {"steps": steps_v, "shift": shift_v, "solver": solver_v, "rope_scaling": rope_v,
                  "watershed": watershed_v, "proportional_attn": proportional_v, "cfg_mode": cfg_mode_v,
                  "temperature": temperature_v, "top_k": top_k_v, "top_p": top_p_v}
        params.update({name: value for name, value in chosen.items() if name in takes})
        return params

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        *form_values, style_key = values
        try:
            params = styled(studio, style_key, read(*form_values))
            card = studio.cards.cards.get(params["model"])
            if card is not None and is_llamagen(card):
                params.pop("negative_prompt", None)  # LlamaGen has none: a style's is dropped
        except InvalidInput as err:
            gr.Warning(str(err))
            return [], f"❌ {err}"
        with Timer() as timer:
            job = run_job(studio, "image", params, progress, request)
        if job.error:
            gr.Warning(job.error)
        return [str(saved.path) for saved in job.outputs], job_summary(job, timer.seconds)

    inputs = [model, prompt, negative, size, steps, cfg, shift, seed, num_images, *options.values(), class_id,
              *tokens.values()]
    form = TabForm(modality="image", tab_id="image", model=model, inputs=inputs, read=read,
                   fields={"prompt": prompt, "negative_prompt": negative, "steps": steps, "cfg": cfg, "shift": shift,
                           "seed": seed, "num_images": num_images, **options, "class_id": class_id, **tokens},
                   model_updates=model_updates,
                   extra_fill=lambda params, model_id: _size_fill(studio, size, params, model_id),
                   outputs=[model, num_images, *model_outputs])
    model.input(model_updates, model, model_outputs, api_visibility="private")
    run.click(on_generate, [*inputs, presets.style], [gallery, status], api_name="generate_image", **GENERATE)
    wire_presets(studio, form, presets)
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
