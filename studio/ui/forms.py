"""What every generation tab shares beyond its own widgets: filling the form from parameters (a
preset, a past job sent from the Gallery, a PNG's metadata) and the preset and style pickers.

A tab describes itself once as a `TabForm`: which component shows which TaskSpec field, what its
model picker changes, and how its widgets' values become parameters. Presets, "Send to tab" and
"Read parameters" then all fill a form the same way, through `TabForm.fill`; for a PNG's parameters
`fill_fitted` also says what the model they will run on made of each value (a size snapped to one it
makes, a field it does not take, another tool's sampler), since the form alone would not show it.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from ..errors import InvalidInput
from ..families import FAMILIES
from ..presets import MODALITIES, Preset, Style, apply_style
from ..services import Studio
from ..tasks import TASKS, get_task
from ..tasks.base import FIELD_LABELS, is_set
from ..zoo.cards import ModelCard
from .family_controls import picker as search_picker

NO_STYLE = ""
# Parameters that name files on this machine: a preset never stores them (they would not exist elsewhere).
# Every field some task takes as a file (TaskSpec.FILES): uploads only, never a path a client names; shown by name.
FILE_PARAMS = tuple(dict.fromkeys(name for task in TASKS.values() for name in task.spec_type.FILES))
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
    # Tabs that edit a picture (the Image tab): a file path -> updates that make it the start image.
    send_image: Callable[[str], Updates] | None = None
    send_outputs: list[Any] = field(default_factory=list)  # what `send_image` changes

    def chain_after_fill(self, event: Any) -> Any:
        """`event`, followed by this form's after-fill step when it has one."""
        if self.after_fill is None:
            return event
        fn, inputs, outputs = self.after_fill
        return event.then(fn, inputs, outputs, api_visibility="private")

    @property
    def task(self) -> str:
        return MODALITIES.get(self.modality, self.modality)  # a tab without presets (Upscale): its own task

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


# -- filling from parameters written elsewhere: what had to change for the model, and why ------

_SIZE = re.compile(r"\d+x\d+")
# Values Studio reads into a field; one still among the details could not be read (a 64-bit seed, a size
# like "auto"), so the note says so rather than calling it something Studio has no field for.
_UNREADABLE = {"Size", "Steps", "CFG scale", "CFG", "Guidance scale", "Seed", "Width", "Height", "Resolution"}


@dataclass
class Fitted:
    """`TabForm.fill`'s updates for parameters from a PNG, and a note for each value that the model
    they will run on could not take as it was (adapted, or not used), saying why."""

    updates: Updates
    card: ModelCard | None
    notes: list[str]


def short_title(card: ModelCard) -> str:
    return card.title.split(" — ")[0]  # "Tiny Lumina-Next", not "Tiny Lumina-Next — test model"


def _label(component: Any, name: str) -> str:
    label = getattr(component, "label", None)
    return (label if isinstance(label, str) and label else name.replace("_", " ").capitalize()).split(" (")[0]


def fill_fitted(studio: Studio, form: TabForm, params: dict[str, Any], current_model: str | None,
                details: dict[str, str] | None = None) -> Fitted:
    """Fill `form` from a PNG's parameters (`details`: what another tool wrote that has no field here)
    for the model they name when this studio has it, else the form's current one; and say what that
    model made of each value: a size it does not make, a value outside a control's range, a choice
    it does not offer, a field it does not take, another tool's sampler or checkpoint."""
    params, notes = dict(params), []
    model_id = params.get("model")
    card = studio.cards.cards.get(model_id) if model_id else None
    if model_id and (card is None or form.task not in card.tasks):
        params.pop("model")
        card = None
    card = card or studio.cards.cards.get(current_model or "")
    if model_id and params.get("model") is None:
        notes.append(f"Model {model_id!r} is not one of this studio's {form.task} models: the values are "
                     f"filled for {short_title(card) if card else 'the chosen model'}.")
    if card is None:
        return Fitted(form.fill(params, current_model), None, notes)
    title, spec_type, family = short_title(card), get_task(form.task).spec_type, FAMILIES.of(card)
    takes = spec_type.takes(card)
    look = form.model_updates(card.id)  # the ranges and choices the controls have for this model
    for name, component in form.fields.items():
        value = params.get(name)
        if not is_set(value):
            continue
        label = _label(component, name)
        known = name in spec_type.model_fields and name not in spec_type.OPTIONAL
        if not known and name not in takes:
            why = family.unused.get(name) if family is not None else None
            taken = "no " + FIELD_LABELS.get(name, label.lower()) if name in spec_type.OPTIONAL else f"no {label}"
            notes.append(f"{label} {value!r} not used: {title} takes {taken}" + (f": {why}." if why else "."))
            continue
        change = look.get(component)
        change = change if isinstance(change, dict) else {}  # a plain value changes no range or choices
        choices = change.get("choices", getattr(component, "choices", None))
        if isinstance(component, (gr.Dropdown, gr.Radio)) and choices:
            values = [c[1] if isinstance(c, (tuple, list)) else c for c in choices]
            if value not in values:
                params.pop(name)
                notes.append(f"{label} {value!r} not used: {title} offers {', '.join(map(str, values[:8]))}.")
            continue
        low = change.get("minimum", getattr(component, "minimum", None))
        high = change.get("maximum", getattr(component, "maximum", None))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            fitted = min(max(value, low if low is not None else value), high if high is not None else value)
            if fitted != value:
                params[name] = fitted
                bounds = (f"from {low:g} to {high:g}" if low is not None and high is not None
                          else f"up to {high:g}" if high is not None else f"from {low:g}")
                notes.append(f"{label} {value:g} → {fitted:g}: {title}'s {label} goes {bounds}.")
    prompt_option = family.prompt_from if family is not None and family.prompt_from in takes else None
    if prompt_option and is_set(params.get("prompt")) and not is_set(params.get(prompt_option)):
        what = _label(form.fields.get(prompt_option), prompt_option)
        notes.append(f"Prompt not used: {title} draws what its {what} picker names, not a prompt: pick one there.")
    updates = form.fill(params, current_model=card.id)
    notes += _size_notes(params, updates, card, title, spec_type)
    notes += _detail_notes(details or {}, title, "solver" in takes)
    return Fitted(updates, card, notes)


def _size_notes(params: dict[str, Any], updates: Updates, card: ModelCard, title: str, spec_type: Any) -> list[str]:
    wanted = size_text(params)
    shown = [u.get("value") for u in updates.values() if isinstance(u, dict) and isinstance(u.get("value"), str)
             and _SIZE.fullmatch(u["value"])]
    if wanted is None or not shown or wanted in shown:
        return []
    defaults = spec_type.defaults_for(card)
    listed = list(dict.fromkeys([f"{defaults.get('width')}x{defaults.get('height')}", *card.resolutions]))
    if len(listed) == 1:
        why = f"{title} makes {listed[0]} only."
    else:
        more = ", …" if len(listed) > 8 else ""
        why = f"{title} makes {', '.join(listed[:8])}{more}; {shown[0]} is the nearest of those in shape."
    if wanted in card.extrapolation:
        why += f" It can try {wanted} beyond what it was trained at: pick “{wanted} (extrapolation)” under Size."
    return [f"Size {wanted} → {shown[0]}: {why}"]


def _detail_notes(details: dict[str, str], title: str, has_solver: bool) -> list[str]:
    """Notes on what another tool recorded that Studio has no field for."""
    notes, rest = [], []
    for key, value in details.items():
        if key == "Sampler":
            notes.append(f"Sampler {value!r} has no equivalent here: {title} uses its own sampler"
                         + (": see its Solver setting." if has_solver else "."))
        elif key == "Model":
            notes.append(f"Model {value!r} is another tool's checkpoint: the values are filled for {title}.")
        elif key in _UNREADABLE:
            notes.append(f"{key} {value!r} could not be used: not a value Studio takes.")
        else:
            rest.append(key)
    if rest:
        notes.append(f"Not used (nothing like them here): {', '.join(rest)}.")
    return notes


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
        picker = search_picker(preset_choices(studio, modality), value=None, label="Preset (type to search)",
                               scale=3, elem_id=f"{modality}-preset")
        style = (search_picker(style_choices(studio, modality), value=NO_STYLE, label="Style", scale=2,
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

    # The preset now on the form. Gradio's dropdown sends its value again on every blur (clicked into
    # and left, or left with typed text that matched nothing): that must not fill the form over what
    # the user has changed since.
    applied = gr.State(None)

    def on_pick(key: str | None, last: str | None, model_id: str | None) -> Updates:
        preset = find_preset(studio, form.modality, key)
        # Gradio needs a value for every output, even when nothing changes.
        unchanged: Updates = {component: gr.update() for component in [controls.picker, applied, *form.outputs]}
        if preset is None:  # nothing picked, or a preset since deleted: the picker shows nothing picked
            return {**unchanged, controls.picker: gr.update(value=None), applied: None}
        if key == last:
            return unchanged
        return {**unchanged, **form.fill(preset_params(preset), current_model=model_id), applied: key}

    def on_save(name: str, *values: Any) -> tuple[Any, Any, str]:
        name = (name or "").strip()
        if not name:
            return gr.update(), gr.update(), "❌ Give the preset a name first."
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
            return gr.update(), gr.update(), f"❌ {html.escape(str(err))}"
        key = f"user:{preset_id}"
        return (gr.update(choices=preset_choices(studio, form.modality), value=key), key,
                f"✅ Saved “{html.escape(name)}” — it is in the preset list (★), and in the Presets tab.")

    # always_last: typing then clicking an option sends the blur's value and then the option's; the
    # default ("once") would drop the second while the first is still running.
    picked = controls.picker.input(on_pick, [controls.picker, applied, form.model],
                                   [controls.picker, applied, *form.outputs], trigger_mode="always_last", **private)
    form.chain_after_fill(picked)
    controls.save.click(on_save, [controls.name, *form.inputs], [controls.picker, applied, controls.message],
                        **private)
