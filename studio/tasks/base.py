"""What every task shares: the TaskSpec base, input validation messages, and the Task interface.

A TaskSpec is the validated, complete description of one job. Fields left as None take their
default from the model card (or, failing that, from the task's `FALLBACKS`) when the spec is
resolved against its card; the resolved spec is what the job row records, so a re-run is exact.
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
from ..media import SavedFile
from ..zoo.cards import ModelCard

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 10_000

# on_step(step_done, total_steps): progress from inside a pipeline run.
StepCallback = Callable[[int, int], None]


class TaskSpec(BaseModel):
    """Fields every task has. Subclasses add theirs and set `task`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: ClassVar[str]
    # Task-wide defaults, used when the card does not set one.
    FALLBACKS: ClassVar[dict[str, Any]] = {}

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

    @classmethod
    def fallbacks_for(cls, card: ModelCard) -> dict[str, Any]:
        """Task-wide defaults for this card's model family (the card's own defaults win over these)."""
        return cls.FALLBACKS

    @classmethod
    def defaults_for(cls, card: ModelCard) -> dict[str, Any]:
        """The value each optional field takes with this card when left unset (the form's initial values)."""
        fallbacks = cls.fallbacks_for(card)
        names = (fallbacks.keys() | card.defaults.keys()) & cls.model_fields.keys()
        return {name: card.defaults.get(name, fallbacks.get(name)) for name in names}

    def resolved(self, card: ModelCard) -> "TaskSpec":
        """This spec with every None filled from the card or the fallbacks, and a concrete seed."""
        defaults = self.defaults_for(card)
        filled = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        if self.seed == -1:
            filled["seed"] = random.SystemRandom().randint(0, MAX_SEED)
        try:
            spec = type(self).model_validate({**self.model_dump(), **filled})
        except ValidationError as err:
            raise InvalidInput(f"The card of {card.id} has a bad default — {describe_validation_error(err)}") from None
        spec.check_against(card)
        return spec

    def check_against(self, card: ModelCard) -> None:
        """Raise InvalidInput if this model cannot take these values. Subclasses extend."""
        if self.task not in card.tasks:
            raise InvalidInput(f"{card.title} cannot do {self.task} generation (it does: {', '.join(card.tasks)})")

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> "TaskSpec":
        """Validate raw parameters (from a form, flags or an API call) into a spec, or raise InvalidInput."""
        try:
            return cls.model_validate(dict(params))
        except ValidationError as err:
            raise InvalidInput(describe_validation_error(err)) from None


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
