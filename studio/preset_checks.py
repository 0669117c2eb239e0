"""Checking a preset against its tab's task: the `PresetCheck` the studio hands to `presets`.

`presets` is a data library and knows no tasks; it checks a preset's form (a known tab, no reserved
params, a prompt where the tab takes one) and leaves the rest to the check it is given. `task_problem`
is that check: the preset's params, with its prompts, must make a valid spec of the tab's task, and an
anagram preset's views must be ones the engine knows. The composition root (`services.Studio`)
passes it to the shipped library, the user's presets and imports alike.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails

from .engines.anagram import check_views
from .errors import InvalidInput
from .families import FAMILIES
from .presets import DERIVED_PROMPT, MODALITIES, PresetFields
from .tasks import get_task
from .tasks.anagram import AnagramSpec
from .tasks.base import describe_validation_error


def task_problem(modality: str, preset: PresetFields) -> str | None:
    """Why `preset` (of the right form for the `modality` tab, see presets.preset_problem) is not a valid
    job of that tab's task, e.g. 'params.width: ...', or None if it is."""
    spec_type = get_task(MODALITIES[modality]).spec_type
    unknown = [k for k in preset.params if k not in spec_type.model_fields and k not in spec_type.option_names()]
    if unknown:
        return "; ".join(f"params.{k}: not a parameter of this task" for k in unknown)
    problem = _option_problem(spec_type.task, preset.params)
    if problem:
        return problem
    raw = {"model": "preset", "negative_prompt": preset.negative_prompt, **preset.params}
    if modality not in DERIVED_PROMPT:
        raw["prompt"] = preset.prompt
    try:
        spec = spec_type.model_validate(raw)
    except ValidationError as err:
        return _describe_spec_error(err, preset.params)
    return _views_problem(spec) if isinstance(spec, AnagramSpec) else None


def _option_problem(task: str, params: dict[str, Any]) -> str | None:
    """A family option's value that no family declaring that option takes (its models are not known yet)."""
    for name, value in params.items():
        declared = [(f, o) for f in FAMILIES.for_task(task) for o in f.options_for(task) if o.name == name]
        errors = []
        for family, option in declared:
            try:
                option.check(value, family.title)
            except InvalidInput as err:
                errors.append(str(err).removeprefix("Invalid input — "))
            else:
                break
        else:
            if errors:
                return f"params.{errors[0]}"
    return None


def _describe_spec_error(err: ValidationError, params: dict[str, Any]) -> str:
    """The task's own message, naming each parameter as the preset writes it (params.width)."""
    def where(loc: tuple[Any, ...]) -> tuple[Any, ...]:
        # Whole-spec errors (a grid without enough captions) are about the params too.
        return ("params", *loc) if not loc or loc[0] in params else loc

    try:
        err = ValidationError.from_exception_data(err.title, [
            InitErrorDetails(type=e["type"], loc=where(e["loc"]), input=e["input"], ctx=e.get("ctx", {}))
            for e in err.errors()])
    except (KeyError, TypeError):
        pass  # an error type pydantic cannot rebuild: keep the task's own field names
    return describe_validation_error(err).removeprefix("Invalid input — ")


def _views_problem(spec: AnagramSpec) -> str | None:
    """Anagram views are checked against the engine's list only when a job runs; a preset names them now."""
    width, height = spec.width, spec.height
    if not (width and height):
        width = height = 1  # the model's default size decides: only the view names can be checked now
    try:
        check_views(spec.views, width, height)
    except InvalidInput as err:
        return f"params.views: {err}"
    return None
