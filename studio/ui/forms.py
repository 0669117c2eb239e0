"""What every generation tab shares beyond its own widgets: filling the form from parameters (a
preset, a past job sent from the Gallery, a PNG's metadata) and the preset and style pickers.

A tab describes itself once as a `TabForm`: which component shows which TaskSpec field, what its
model picker changes, and how its widgets' values become parameters. Presets, "Send to tab" and
"Read parameters" then all fill a form the same way, through `TabForm.fill`.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from ..errors import InvalidInput
from ..presets import MODALITIES, Preset, Style, apply_style
from ..services import Studio

NO_STYLE = ""
# Parameters that name files on this machine: a preset never stores them (they would not exist elsewhere).
FILE_PARAMS = ("image", "video", "control_video", "reference_image")
USER_CATEGORY = "My presets"

Updates = dict[gr.components.Component, Any]


def merge(updates: Updates, component: Any, value: Any) -> None:
    """Put a value (or a gr.update) for `component` in `updates`, keeping what an update already there
    sets and the new one doesn't (e.g. the choices a model brought)."""
    change = dict(value) if isinstance(value, dict) else {"value": value}
    current = updates.get(component)
    if isinstance(current, dict):
        current.update({k: v for k, v in change.items() if k != "__type__"})
    else:
        updates[component] = gr.update(**{k: v for k, v in change.items() if k != "__type__"})


@dataclass
class TabForm:
    """One generation tab, as the rest of the app sees it."""

    modality: str  # presets/<modality>.yaml; also the user presets' key
    tab_id: str  # the gr.Tab id, for switching to it
    model: gr.Dropdown
    inputs: list[Any]  # what its Generate handler takes, in order
    read: Callable[..., dict[str, Any]]  # values of `inputs` -> TaskSpec parameters (InvalidInput if unreadable)
    fields: dict[str, Any]  # parameter name -> the component that shows it as is
    model_updates: Callable[[str], Updates]  # what picking this model changes (card defaults, visibility)
    # Fields shown differently (a size, a grid): (params, the model they will run on) -> updates.
    extra_fill: Callable[[dict[str, Any], str | None], Updates] | None = None
    outputs: list[Any] = field(default_factory=list)  # every component `fill` may change
    controls: PresetControls | None = None  # its preset and style pickers, set by wire_presets
    # A step to run once a fill has landed in the browser: (fn, inputs, outputs), e.g. redraw a preview
    # from the form's values as they now are.
    after_fill: tuple[Callable[..., Any], list[Any], list[Any]] | None = None
    results: list[Any] = field(default_factory=list)  # what its Generate shows (the named API returns them too)
    present: Callable[[Any, float], tuple] | None = None  # (finished job, seconds) -> values for `results`

    def chain_after_fill(self, event: Any) -> Any:
        """`event`, followed by this form's after-fill step when it has one."""
        if self.after_fill is None:
            return event
        fn, inputs, outputs = self.after_fill
        return event.then(fn, inputs, outputs, api_visibility="private")

    @property
    def task(self) -> str:
        return MODALITIES[self.modality]

    def fill(self, params: dict[str, Any], current_model: str | None = None) -> Updates:
        """Updates that put `params` on the form. A model in `params` is selected first and its card's
        defaults applied; every value in `params` then wins over them. Without one, the form keeps
        `current_model`."""
        updates: Updates = {}
        model_id = params.get("model")
        if model_id:
            updates[self.model] = gr.update(value=model_id)
            updates.update(self.model_updates(model_id))
        for name, component in self.fields.items():
            if params.get(name) is not None:
                merge(updates, component, params[name])
        if self.extra_fill is not None:
            for component, value in self.extra_fill(params, model_id or current_model).items():
                merge(updates, component, value)
        return updates


def size_text(params: dict[str, Any]) -> str | None:
    """The size pickers' "WxH" for parameters that have both as whole numbers (a refused job's may not)."""
    width, height = params.get("width"), params.get("height")
    if isinstance(width, bool) or isinstance(height, bool) or not isinstance(width, (int, float)) \
            or not isinstance(height, (int, float)) or not width or not height:
        return None
    return f"{int(width)}x{int(height)}"


def nearest_shape(wanted: str, sizes: list[str]) -> str:
    """Of `sizes` ("WxH"), the one closest in aspect ratio to `wanted`, then in area; `wanted` if none."""
    def shape(text: str) -> tuple[float, float]:
        width, height = (int(v) for v in text.lower().split("x"))
        return math.log(width / height), math.log(width * height)

    if wanted in sizes or not sizes:
        return wanted
    ratio, area = shape(wanted)
    return min(sizes, key=lambda s: (round(abs(shape(s)[0] - ratio), 3), abs(shape(s)[1] - area)))


# -- presets and styles: built-in and the user's own, one list ---------------------------------


def preset_choices(studio: Studio, modality: str) -> list[tuple[str, str]]:
    """(label, key) for the picker: the user's presets first, then the shipped library by category."""
    choices = [(f"★ {p.category or USER_CATEGORY} · {p.title}", f"user:{p.id}")
               for p in studio.user_presets.presets(modality)]
    choices += [(f"{p.category} · {p.title}" if p.category else p.title, f"builtin:{p.title}")
                for p in studio.presets.presets(modality)]
    return choices


def find_preset(studio: Studio, modality: str, key: str | None) -> Preset | None:
    source, _, name = (key or "").partition(":")
    if source == "user":
        return next((p for p in studio.user_presets.presets(modality) if str(p.id) == name), None)
    if source == "builtin":
        return studio.presets.preset(modality, name)
    return None


def style_choices(studio: Studio, modality: str) -> list[tuple[str, str]]:
    choices = [("No style", NO_STYLE)]
    choices += [(f"★ {s.name}", f"user:{s.id}") for s in studio.user_presets.styles(modality)]
    choices += [(s.name, f"builtin:{s.name}") for s in studio.presets.styles(modality)]
    return choices


def find_style(studio: Studio, key: str | None) -> Style | None:
    source, _, name = (key or "").partition(":")
    if source == "user":
        return next((s for s in studio.user_presets.styles() if str(s.id) == name), None)
    if source == "builtin":
        return studio.presets.style(name)
    return None


def style_key(studio: Studio, modality: str, name: str) -> str:
    """The picker key of a style given by its name (the user's own first), or InvalidInput listing them."""
    for style in studio.user_presets.styles(modality):
        if style.name == name:
            return f"user:{style.id}"
    for style in studio.presets.styles(modality):
        if style.name == name:
            return f"builtin:{style.name}"
    names = [s.name for s in [*studio.user_presets.styles(modality), *studio.presets.styles(modality)]]
    raise InvalidInput(f"no style named {name!r}; the {modality} styles are: {', '.join(names) or 'none'}")


def styled(studio: Studio, style_key: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the chosen style applied to the prompt and negative prompt (the job records the result)."""
    style = find_style(studio, style_key)
    if style is None:
        return params
    prompt, negative = apply_style(style, params.get("prompt", ""), params.get("negative_prompt", ""))
    return {**params, "prompt": prompt, "negative_prompt": negative}


def preset_params(preset: Preset) -> dict[str, Any]:
    """A preset as form parameters."""
    params = dict(preset.params)
    if preset.prompt:
        params["prompt"] = preset.prompt
    params["negative_prompt"] = preset.negative_prompt
    return params


@dataclass
class PresetControls:
    picker: gr.Dropdown
    style: gr.Dropdown | None
    name: gr.Textbox
    save: gr.Button
    message: gr.Markdown


def preset_controls(studio: Studio, modality: str, with_style: bool = True) -> PresetControls:
    """The preset picker (type to search), the style picker, and "Save as preset"."""
    with gr.Row():
        picker = gr.Dropdown(preset_choices(studio, modality), value=None, label="Preset (type to search)",
                             filterable=True, scale=3, elem_id=f"{modality}-preset")
        style = (gr.Dropdown(style_choices(studio, modality), value=NO_STYLE, label="Style", scale=2,
                             elem_id=f"{modality}-style") if with_style else None)
    with gr.Accordion("Save as preset", open=False):
        with gr.Row():
            name = gr.Textbox(label="Preset name", scale=3, elem_id=f"{modality}-preset-name")
            save = gr.Button("Save", scale=1, elem_id=f"{modality}-preset-save")
        message = gr.Markdown()
    return PresetControls(picker, style, name, save, message)


def wire_presets(studio: Studio, form: TabForm, controls: PresetControls) -> None:
    """Picking a preset fills the form; Save stores the form's current values as a user preset."""
    form.controls = controls
    private = {"api_visibility": "private"}

    def on_pick(key: str | None, model_id: str | None) -> Updates:
        preset = find_preset(studio, form.modality, key)
        return form.fill(preset_params(preset), current_model=model_id) if preset else {}

    def on_save(name: str, *values: Any) -> tuple[Any, str]:
        name = (name or "").strip()
        if not name:
            return gr.update(), "❌ Give the preset a name first."
        try:
            params = {k: v for k, v in form.read(*values).items()
                      if v is not None and k not in ("model", "seed", *FILE_PARAMS)}
            prompt = params.pop("prompt", "") if form.modality not in ("compositional", "anagrams") else ""
            params.pop("prompt", None)
            negative = params.pop("negative_prompt", "")
            preset = Preset(title=name, category=USER_CATEGORY, prompt=prompt, negative_prompt=negative,
                            params=params)
            preset_id = studio.user_presets.add_preset(form.modality, preset)
        except (InvalidInput, ValueError) as err:
            return gr.update(), f"❌ {html.escape(str(err))}"
        return (gr.update(choices=preset_choices(studio, form.modality), value=f"user:{preset_id}"),
                f"✅ Saved “{html.escape(name)}” — it is in the preset list (★), and in the Presets tab.")

    form.chain_after_fill(controls.picker.input(on_pick, [controls.picker, form.model], form.outputs, **private))
    controls.save.click(on_save, [controls.name, *form.inputs], [controls.picker, controls.message], **private)
