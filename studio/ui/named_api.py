"""The `/generate_*` endpoints by name: one per tab, with a parameter per TaskSpec field and per option
any family of the task declares, so a client writes

    client.predict(prompt="a kite", model="tiny-lumina-next", seed=7, api_name="/generate_image")

Everything but the prompt (the captions, the readings) may be left out: the model then is the tab's
default model and every other value the card's default, exactly as for a job submitted with those
fields unset. The endpoints are separate from the tabs' own Generate buttons (private), so widget
order is not the public API, and they run through the same queue and return what the tab shows.

They are built over hidden components whose value is None: Gradio reads a parameter's client-side
default from its component, and None is what makes "left out" mean "the card's default".
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr

from ..errors import InvalidInput
from ..families import FAMILIES, Option
from ..services import Studio
from ..tasks import get_task
from .common import GENERATE, default_model, generate, styled_job
from .forms import TabForm, style_key

# Fields a client sends as uploads (gradio_client.handle_file), never as paths on this machine.
IMAGE_FILES = ("image", "end_image", "reference_image", "mask")
VIDEO_FILES = ("video", "control_video")
AUDIO_FILES = ("melody",)
TEXT_FILES = ("camera",)  # a camera trajectory (.txt): its path as uploaded, read and checked by the job
# What a client must send per task; everything else may be left out.
REQUIRED = {"compose": ("captions",), "anagram": ("prompts",), "upscale": ("image",)}
# Fields the studio derives itself (compositional and anagram jobs make their prompt from the cells).
DERIVED = {"compose": ("prompt",), "anagram": ("prompt",), "upscale": ("prompt",)}
# Endpoints not named `/generate_<task>`: upscaling makes nothing new, it enlarges an upload.
API_NAMES = {"upscale": "upscale_image"}
# The Anagrams tab's first two views, for a client that sends two readings and no views.
DEFAULT_VIEWS = ["identity", "rotate_180"]


@dataclass(frozen=True)
class Parameter:
    name: str
    component: Any
    python_type: Any
    required: bool


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int; Literal and list types as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _strict(component: Any, kinds: tuple[type, ...], what: str) -> Any:
    """`component`, refusing by name any value that is not of `kinds` (a Textbox would run a list as
    the text "['a', 'b']"). Set on the instance: a subclass would make Gradio write stub files."""
    def preprocess(payload: Any) -> Any:
        if payload is not None and (isinstance(payload, bool) or not isinstance(payload, kinds)):
            raise gr.Error(f"{component.label}: must be {what}, got {type(payload).__name__} {str(payload)[:60]!r}")
        return payload

    component.preprocess = preprocess
    return component


def _component(name: str, annotation: Any, label: str) -> tuple[Any, Any]:
    """A hidden input component for a field, and the Python type the endpoint declares for it."""
    hidden = {"visible": False, "label": label}
    kind = _base_type(annotation)
    if name in IMAGE_FILES:
        # A mask keeps its alpha (a brush layer); the others are read as RGB by the job anyway.
        return gr.Image(type="filepath", value=None, image_mode=None if name == "mask" else "RGB", **hidden), str
    if name in VIDEO_FILES:
        return gr.Video(value=None, **hidden), str
    if name in AUDIO_FILES:  # the upload's path as it is: nothing decoded before the job checks its size
        return gr.Audio(type="filepath", value=None, **hidden), str
    if name in TEXT_FILES:
        return gr.File(type="filepath", value=None, **hidden), str
    if typing.get_origin(kind) is Literal:
        return gr.Dropdown(list(typing.get_args(kind)), value=None, **hidden), str
    if typing.get_origin(kind) is list:
        return gr.Dropdown([], value=None, multiselect=True, allow_custom_value=True, **hidden), list[str]
    if kind is bool:
        # Not a Checkbox: its value is never None, so "left out" would read as False.
        return gr.Radio([True, False], value=None, **hidden), bool
    if kind in (int, float):
        # No rounding here: a whole number is checked by the spec (7.5 steps is refused, not made 8).
        return _strict(gr.Number(value=None, **hidden), (int, float), "a number"), kind
    return _strict(gr.Textbox(value=None, **hidden), (str,), "text"), str


def _option_annotation(option: Option) -> Any:
    if option.choices and option.type is str:
        return Literal[tuple(option.values)]  # type: ignore[valid-type]
    return option.type


# The name of a style template (presets/styles.yaml or the user's own), for tabs that offer styles.
STYLE = "style"


def parameters(task: str, with_style: bool = False) -> list[Parameter]:
    """The endpoint's parameters: the required ones first, then every optional field and option, and
    the style template's name where the tab has a Style picker."""
    spec_type = get_task(task).spec_type
    required = ("prompt",) if task not in REQUIRED else REQUIRED[task]
    fields: dict[str, Any] = {}
    for name, info in spec_type.model_fields.items():
        if name not in DERIVED.get(task, ()):
            fields[name] = info.annotation
    for family in FAMILIES.for_task(task):
        for option in family.options_for(task):
            fields.setdefault(option.name, _option_annotation(option))
    if with_style and STYLE not in fields:
        fields[STYLE] = str
    ordered = [*required, "model", *(n for n in fields if n not in required and n != "model")]
    built = []
    for name in ordered:
        component, python_type = _component(name, fields[name], name)
        built.append(Parameter(name, component, python_type, name in required))
    return built


def _signature(params: list[Parameter]) -> inspect.Signature:
    """What Gradio reads the endpoint's parameter names, types and optionality from."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    listed = [inspect.Parameter(p.name, kind, annotation=p.python_type,
                                **({} if p.required else {"default": None})) for p in params]
    listed += [inspect.Parameter("request", kind, default=None, annotation=gr.Request),
               inspect.Parameter("progress", kind, default=gr.Progress())]
    return inspect.Signature(listed)


def register(studio: Studio, form: TabForm) -> None:
    """Add `/generate_<task>` for a tab (inside the Blocks being built, after the tab)."""
    task = form.task
    spec_type = get_task(task).spec_type
    with_style = form.controls is not None and form.controls.style is not None and STYLE not in spec_type.model_fields
    with gr.Group(visible=False):
        params = parameters(task, with_style)
        trigger = gr.Button(visible=False)

    def endpoint(*values: Any) -> tuple:
        *given, request, progress = values
        job_params = {p.name: v for p, v in zip(params, given) if v is not None and v != []}
        job_params.setdefault("model", default_model(studio, task) or "")
        if task == "compose" and "grid_rows" not in job_params and isinstance(job_params.get("captions"), list):
            job_params.update(grid_rows=1, grid_cols=max(1, len(job_params["captions"])))  # one row of cells
        if task == "anagram" and "views" not in job_params:
            job_params["views"] = DEFAULT_VIEWS
        style = job_params.pop(STYLE, None) if with_style else None
        if style:
            try:  # the template applied, then only what the model takes (a style's negative prompt)
                job_params = styled_job(studio, spec_type, style_key(studio, form.modality, style), job_params)
            except InvalidInput as err:  # an unknown style: nothing to record, the client is told why
                raise gr.Error(str(err)) from None
        return generate(studio, task, job_params, progress, request, form.present)

    endpoint.__signature__ = _signature(params)  # type: ignore[attr-defined]
    endpoint.__annotations__ = {p.name: p.python_type for p in params} | {"request": gr.Request}
    endpoint.__doc__ = (f"Generate ({task}) and wait for the outputs. Parameters are the job's fields by name; "
                        "any left out takes the model card's default (model: the tab's default model).")
    trigger.click(endpoint, [p.component for p in params], form.results,
                  api_name=API_NAMES.get(task, f"generate_{task}"), **GENERATE)
