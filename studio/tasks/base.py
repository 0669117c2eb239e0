"""What every task shares: the TaskSpec base, input validation messages, and the Task interface.

A TaskSpec is the validated, complete description of one job. It holds the task's common fields
(prompt, size, seed, steps…) and, by name beside them, the options of the chosen model's family
(Lumina-Next's solver, LlamaGen's temperature…), which that family declares and validates (see
studio.families). Fields left unset take their default from the model card, else the family, else
the task's `FALLBACKS`, when the spec is resolved against its card; the resolved spec is what the
job row records, so a re-run is exact.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InvalidInput
from ..families import FAMILIES, Family
from ..media import SavedFile
from ..zoo.cards import ModelCard

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 10_000

# on_step(step_done, total_steps): progress from inside a pipeline run.
StepCallback = Callable[[int, int], None]

# How a refusal names a task field a family has no use for.
FIELD_LABELS = {"negative_prompt": "negative prompt", "steps": "denoising steps", "loras": "LoRA adapters",
                "image": "start image", "mask": "inpainting mask"}


def batch_seeds(seed: int, count: int) -> list[int]:
    """The seed of each output of a batch: seed, seed+1, … (wrapping at MAX_SEED), as A1111 numbers
    them, so output k made alone from its own seed is the same picture."""
    return [(seed + k) % (MAX_SEED + 1) for k in range(count)]


def is_set(value: Any) -> bool:
    """Whether a field was given: not None, and not blank text (a form's empty negative prompt)."""
    return value is not None and not (isinstance(value, str) and not value.strip())


class TaskSpec(BaseModel):
    """Fields every task has. Subclasses add theirs and set `task`; family options ride along as extras."""

    model_config = ConfigDict(extra="allow", frozen=True)

    task: ClassVar[str]
    # Task-wide defaults, used when neither the card nor the family sets one.
    FALLBACKS: ClassVar[dict[str, Any]] = {}
    # Common fields some families have no use for: refused when set for those, hidden in their tab.
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt",)
    # How to refuse an optional field a model does not take, when the task can say more than the
    # family ("{title}" is the card's title).
    REFUSALS: ClassVar[dict[str, str]] = {}
    # Optional fields that are things a user brings (a start image, a control clip, a melody) rather than settings,
    # and of those, the ones a model that takes them cannot do without.
    INPUTS: ClassVar[tuple[str, ...]] = ()
    NEEDS: ClassVar[tuple[str, ...]] = ()
    # Optional fields a family takes only when its declaration lists them in `Family.inputs` (image
    # editing), so a family written before them, or outside the repository, never takes them unawares.
    OPT_IN: ClassVar[tuple[str, ...]] = ()
    # Fields that name a file the user brings: JobQueue.submit keeps a content-addressed copy of each
    # under the outputs folder and records that path, so a re-run still has its inputs.
    FILES: ClassVar[tuple[str, ...]] = ()

    model: str = Field(min_length=1)
    prompt: str
    negative_prompt: str = ""
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED)

    @field_validator("prompt")
    @classmethod
    def _prompt_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty: describe what you want to generate")
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
        return value

    # -- what a card takes, and its defaults ----------------------------------------------------

    @classmethod
    def takes(cls, card: ModelCard) -> set[str]:
        """The optional fields and family options this card's model takes for this task."""
        family = FAMILIES.of(card)
        if family is None:  # a listed-only card whose family is still to come
            return set(cls.OPTIONAL)
        hook = family.hook("takes")
        if hook is not None:
            return set(hook(card, cls.task))
        return ({name for name in cls.OPTIONAL if name not in family.unused
                 and (name not in cls.OPT_IN or name in family.inputs)}
                | {option.name for option in family.options_for(cls.task)})

    @classmethod
    def needs_only_a_prompt(cls, card: ModelCard) -> bool:
        """Whether the card runs from a prompt alone and takes every setting of the task's form (what a
        new user offline is first shown): no class picker instead of the prompt, no input it must be
        given, no setting it has no use for."""
        family = FAMILIES.of(card)
        takes = cls.takes(card)
        if family is not None and family.prompt_from in takes:
            return False
        settings = set(cls.OPTIONAL) - set(cls.INPUTS)
        return not (takes & set(cls.NEEDS)) and settings <= takes

    @classmethod
    def fixed_shape(cls, card: ModelCard) -> bool:
        """Whether the card's model makes one shape of output only where the task's form offers a range
        (one clip length): such a model is not what a new user is first shown."""
        return False

    @classmethod
    def defaults_for(cls, card: ModelCard) -> dict[str, Any]:
        """The value each field the card takes gets when left unset (also the form's initial values):
        the card's own, else its family's (for this task, else for all), else the task's."""
        family = FAMILIES.of(card)
        takes = cls.takes(card)
        merged: dict[str, Any] = dict(cls.FALLBACKS)
        if family is not None:
            merged.update(family.defaults)
            merged.update({o.name: o.default for o in family.options_for(cls.task) if o.default is not None})
            merged.update(family.task_defaults.get(cls.task, {}))
        if {"width", "height"} <= cls.model_fields.keys() and card.min_size == card.max_size:
            # A checkpoint that makes one size (LlamaGen's): that size, unless the card says otherwise.
            merged.update(width=card.max_size, height=card.max_size)
        merged.update(card.defaults)
        common = cls.model_fields.keys() - set(cls.OPTIONAL)
        return {name: value for name, value in merged.items() if name in common or name in takes}

    # -- validation -----------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> set[str]:
        """Every option some registered family declares for this task."""
        return {o.name for family in FAMILIES.for_task(cls.task) for o in family.options_for(cls.task)}

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> "TaskSpec":
        """Validate raw parameters (from a form, flags or an API call) into a spec, or raise InvalidInput.
        Family options are only known by name here; their values are checked in `resolved`."""
        unknown = [str(k)[:64] for k in params if k not in cls.model_fields and k not in cls.option_names()]
        if unknown:
            named = "; ".join(f"{k}: not a parameter of this task" for k in sorted(unknown)[:10])
            more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
            raise InvalidInput(f"Invalid input — {named}{more}")
        try:
            return cls.model_validate(cls._prompt_from_stand_in(params))
        except ValidationError as err:
            raise InvalidInput(describe_validation_error(err)) from None

    @classmethod
    def _prompt_from_stand_in(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """`params`, with no prompt given but an option that stands in for it (a family's `prompt_from`:
        LlamaGen's class_id), prompted by that choice's label, as the Image tab sends it; the family's
        `prepare` then settles it for the card (or refuses it for a model that draws from text). With
        neither, the prompt is empty, and refused as such."""
        params = dict(params)
        if not cls.model_fields["prompt"].is_required() or is_set(params.get("prompt")):
            return params
        for family in FAMILIES.for_task(cls.task):
            option = family.option(family.prompt_from) if family.prompt_from else None
            value = params.get(option.name) if option is not None else None
            if value is not None:
                label = next((text for text, choice in option.choices if choice == value), None)
                return {**params, "prompt": label or str(value)}
        if params.get("prompt") is None:
            params["prompt"] = ""
        return params

    @classmethod
    def replayable(cls, params: Mapping[str, Any], card: ModelCard | None) -> dict[str, Any]:
        """A recorded job's parameters as a re-run sends them: less the options its model never took,
        which older versions recorded for every model of a task (a temperature on AudioLDM 2 music, a
        shift on CogVideoX): they changed nothing then, so leaving them out keeps the re-run exact."""
        if card is None or not card.runnable or FAMILIES.of(card) is None:
            return dict(params)
        takes = cls.takes(card)
        common = cls.model_fields.keys() - set(cls.OPTIONAL)  # e.g. steps: 100 on an old MusicGen job
        return {k: v for k, v in params.items() if k in common or k in takes}

    def resolved(self, card: ModelCard) -> "TaskSpec":
        """This spec checked against the card's family, every unset field filled from the card, the
        family or the task, and a concrete seed."""
        if not card.runnable:
            raise InvalidInput(f"{card.title} is listed but the studio cannot run it yet: pick another model")
        if self.task not in card.tasks:
            raise InvalidInput(f"{card.title} cannot do {self.task} generation (it does: {', '.join(card.tasks)})")
        family = FAMILIES.for_card(card)
        params = self.model_dump()
        prepare = family.hook("prepare")
        if prepare is not None:
            params = prepare(card, self.task, params)
        takes = self.takes(card)
        refuse_what_is_not_taken(params, takes, family, card, type(self))
        # What is left of other families' options is unset: the job records only its own family's.
        params = {k: v for k, v in params.items() if k in type(self).model_fields or k in takes}
        for name, value in self.defaults_for(card).items():
            if params.get(name) is None:
                params[name] = value
        for option in family.options_for(self.task):  # given or from the card: within the declared bounds
            if option.name in takes and params.get(option.name) is not None:
                params[option.name] = option.check(params[option.name], family.title)
        if params.get("seed", -1) == -1:
            params["seed"] = random.SystemRandom().randint(0, MAX_SEED)
        try:
            spec = type(self).model_validate(params)
        except ValidationError as err:
            raise InvalidInput(f"The card of {card.id} has a bad default — {describe_validation_error(err)}") from None
        spec.check_against(card)
        return spec

    def check_against(self, card: ModelCard) -> None:
        """Raise InvalidInput if this model cannot take these values. Subclasses extend."""

    def option(self, name: str, default: Any = None) -> Any:
        """A family option's value (extras are the family's options)."""
        return (self.model_extra or {}).get(name, default)


def refuse_what_is_not_taken(params: dict[str, Any], takes: set[str], family: Family, card: ModelCard,
                             spec_type: type[TaskSpec]) -> None:
    """InvalidInput naming the family and the field for anything set that this card does not take."""
    for name in spec_type.OPTIONAL:
        if name not in takes and is_set(params.get(name)):
            if name in spec_type.REFUSALS and not (name in spec_type.OPT_IN and name in family.unused):
                raise InvalidInput(spec_type.REFUSALS[name].format(title=card.title))
            label = FIELD_LABELS.get(name, name.replace("_", " "))
            why = family.unused.get(name)
            raise InvalidInput(f"{name}: {card.title} ({family.title}) takes no {label}"
                               + (f": {why}" if why else ""))
    foreign = sorted(name for name in params if name not in spec_type.model_fields and name not in takes
                     and is_set(params[name]))
    if not foreign:
        return
    owners = [f for f in FAMILIES.for_task(spec_type.task) if f is not family
              and any(o.name in foreign for o in f.options_for(spec_type.task))]
    names = ", ".join(foreign)
    if family.option(foreign[0]) is not None or not owners:
        taken = ", ".join(sorted(n for n in takes if n not in spec_type.OPTIONAL)) or "none"
        raise InvalidInput(f"{names}: not an option of {card.title} ({family.title}; its options: {taken})")
    if len(owners) == 1:
        owner = owners[0].title
        raise InvalidInput(f"{names}: {owner}'s options apply to {owner} models only, not to {card.title} "
                           f"({family.title})")
    titles = " and ".join(sorted(f.title for f in owners))
    raise InvalidInput(f"{names}: an option of {titles} models, which {card.title} ({family.title}) does not take")


def describe_validation_error(err: ValidationError) -> str:
    """pydantic's errors as one line a person can act on, e.g. 'steps: Input should be ... (got 0)'."""
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "input"
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            parts.append(f"{field}: not a parameter of this task")
        elif isinstance(got, (int, float, str)) and e["type"] != "value_error":
            parts.append(f"{field}: {msg} (got {got!r})")
        else:
            parts.append(f"{field}: {msg}")
    return "Invalid input — " + "; ".join(parts)


def run_family(task: str, pipeline: Any, spec: TaskSpec, card: ModelCard, on_step: StepCallback) -> "TaskOutput":
    """Run one job the way the card's family runs it (its declared `run` hook)."""
    family = FAMILIES.for_card(card)
    runner = family.hook("run")
    if runner is None:
        raise InvalidInput(f"{card.title}: the {family.title} family declares no way to run a job")
    return runner(task, pipeline, spec, card, on_step)


def family_lines(task: str, spec: TaskSpec, card: ModelCard) -> dict[str, Any]:
    """The infotext `Key: value` pairs of the family options this job used (as the family names them)."""
    family = FAMILIES.of(card)
    if family is None:
        return {}
    return {o.infotext: spec.option(o.name) for o in family.options_for(task) if o.infotext}


@dataclass(frozen=True)
class TaskOutput:
    """What a run produced, plus facts about how it ran that the spec does not hold (e.g. the sampler)."""

    items: list[Any]
    used: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobContext:
    """What a task needs to know about the job it runs in, to name and tag its outputs."""

    job_id: str
    outputs_dir: Path
    created_at: datetime


def job_json(task: str, index: int, spec: TaskSpec, card: ModelCard, ctx: JobContext, used: dict[str, Any]
             ) -> dict[str, Any]:
    """The full job as every output file carries it, so any single file can be re-run exactly."""
    from .. import __version__

    return {"job_id": ctx.job_id, "task": task, "index": index, "params": spec.model_dump(mode="json"),
            "used": used, "model_title": card.title, "studio_version": __version__}


def png_writer(task: str, image: Any, spec: TaskSpec, card: ModelCard, ctx: JobContext, used: dict[str, Any],
               infotext: str, kind: str = "image") -> Callable[[int], SavedFile]:
    """A writer (for save_all) of one PNG output with the A1111 infotext and the job; `kind` names its role."""
    from ..media import output_relpath, save_png

    def write(index: int) -> SavedFile:
        saved = save_png(image, ctx.outputs_dir, output_relpath(task, ctx.job_id, index, "png", ctx.created_at),
                         infotext=infotext, job=job_json(task, index, spec, card, ctx, used))
        return saved if kind == "image" else dataclasses.replace(saved, kind=kind)

    return write


def save_all(writers: list[Callable[[int], SavedFile]]) -> list[SavedFile]:
    """Run each writer (given its output index); all or nothing: a job never leaves part of its set behind."""
    saved: list[SavedFile] = []
    try:
        for index, write in enumerate(writers):
            saved.append(write(index))
    except Exception:
        for done in saved:
            done.path.unlink(missing_ok=True)
        raise
    return saved


class Task(Protocol):
    """One modality: its spec type, how to run it on a loaded pipeline, and how to save the result."""

    name: str
    spec_type: type[TaskSpec]

    def working_bytes(self, spec: Any, card: ModelCard) -> int: ...

    def run(self, pipeline: Any, spec: Any, card: ModelCard, on_step: StepCallback) -> TaskOutput: ...

    def save(self, output: TaskOutput, spec: Any, card: ModelCard, ctx: JobContext) -> list[SavedFile]: ...
