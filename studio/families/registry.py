"""The family registry: what each model family declares, in one place, and how the rest finds it.

A *family* is a set of models that load and run the same way (Lumina-Next, LlamaGen, Wan, MusicGen…).
Its declaration (`Family`) says which tasks it serves, the options it takes beyond its task's common
fields (with their defaults, bounds, labels and infotext keys: the one place a default lives; a card
may override it in its `defaults:`), the common fields it has no use for, and the hooks that load
and run it. A card names its family (`family:` in the YAML); tasks, tabs, the loader and the API all
ask the registry, so none of them names a family.

Declarations are data and import nothing heavy: hooks are "module:function" strings imported on
first use, so reading cards never imports torch. This module sits at the bottom of the studio's
layers (it imports only `errors`); the built-in families register when `studio.families` is
first looked up (see `studio/families/builtin.py`).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from ..errors import InvalidInput

log = logging.getLogger(__name__)

# The family of a diffusers card whose `family:` names none registered (a repo added by hand).
GENERIC_DIFFUSERS = "diffusers"

# "package.module:attribute": a hook imported on first use.
Hook = str
Widget = Literal["slider", "number", "dropdown", "radio", "checkbox", "text"]


@dataclass(frozen=True)
class Option:
    """One option a family takes beyond its task's common fields: its type, default, bounds and look."""

    name: str
    type: type  # int, float, bool or str
    default: Any = None  # None: the model's own (e.g. its scheduler's shift); a card may set one
    label: str = ""
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False  # the minimum itself is not allowed (e.g. a temperature > 0)
    choices: tuple[tuple[str, Any], ...] = ()  # (label, value); the value must be one of them
    widget: Widget | None = None  # how a tab shows it; None: from the type
    step: float | None = None  # a slider's step
    slider: tuple[float, float] | None = None  # a slider's range, when narrower than what is allowed
    group: str = ""  # options sharing a group are shown together under this title
    initial: Any = None  # the widget's first value when the option has no default (e.g. a class to start from)
    tasks: tuple[str, ...] = ()  # the tasks it applies to; empty: every task of the family
    infotext: str | None = None  # its key in the A1111 `parameters` text (None: not written there)
    advanced: bool = False  # shown in the tab's Advanced fold

    def for_task(self, task: str) -> bool:
        return not self.tasks or task in self.tasks

    @property
    def values(self) -> tuple[Any, ...]:
        return tuple(value for _, value in self.choices)

    def check(self, value: Any, family: str) -> Any:
        """The value as this option takes it, or InvalidInput saying what is wrong with it."""
        where = f"{self.name} ({family})"
        if value is None:
            return None
        if self.type is bool:
            if not isinstance(value, bool):
                raise InvalidInput(f"Invalid input — {where}: must be true or false (got {value!r})")
        elif self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                    or value in (float("inf"), float("-inf")):
                raise InvalidInput(f"Invalid input — {where}: must be a number (got {value!r})")
            if self.type is int:
                if value != int(value):
                    raise InvalidInput(f"Invalid input — {where}: must be a whole number (got {value!r})")
                value = int(value)
            else:
                value = float(value)
            low, high = self.minimum, self.maximum
            if low is not None and (value < low or (self.above_minimum and value == low)):
                relation = "greater than" if self.above_minimum else "at least"
                raise InvalidInput(f"Invalid input — {where}: must be {relation} {low:g} (got {value!r})")
            if high is not None and value > high:
                raise InvalidInput(f"Invalid input — {where}: must be at most {high:g} (got {value!r})")
        elif self.type is str:
            if not isinstance(value, str):
                raise InvalidInput(f"Invalid input — {where}: must be text (got {value!r})")
        if self.choices and value not in self.values:
            allowed = ", ".join(repr(v) for v in self.values)
            raise InvalidInput(f"Invalid input — {where}: must be one of {allowed} (got {value!r})")
        return value


@dataclass(frozen=True)
class Family:
    """A model family's declaration. Hooks take the card (and the task) and are imported on first use:

    - `run(task, pipeline, spec, card, on_step) -> TaskOutput`: one job on a loaded pipeline.
    - `load(card, folder, required_folders, dtype)`: a `native` card's pipeline (diffusers and
      transformers cards load through their library, by the card's `pipeline` class).
    - `check_card(card)`: ValueError when the family cannot run the card as written (read time).
    - `needed_files(card) -> [names]`: the files whose presence means a native card is downloaded.
    - `takes(card, task) -> [field names]`: the optional task fields and options this card takes,
      when that depends on the card (e.g. which video inputs a pipeline has); by default every
      option of the task and every optional field not in `unused`.
    - `prepare(card, task, params) -> params`: settle parameters before validation (e.g. an ImageNet
      class typed as the prompt).
    - `processor(card, repo_id, **where)`: a transformers card's processor, where the library's own
      cannot serve here (MusicGen Melody's feature extractor needs torchaudio); by default
      `AutoProcessor.from_pretrained(repo_id, **where)`. `where`: revision, cache_dir, local_files_only.
    """

    name: str  # what cards write in `family:`
    title: str
    tasks: tuple[str, ...]
    aliases: tuple[str, ...] = ()  # older names cards may still carry
    options: tuple[Option, ...] = ()
    # Values for the task's common fields (steps, cfg, size…) that suit the whole family; a card's win.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Per task, values of its fields and options that suit the family for that task alone (a published
    # recipe: Lumina-Next's anagrams); they win over `defaults` and the options' own; a card's still win.
    task_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The task's optional fields this family has no use for, with why (refused when set, hidden in the tab).
    unused: Mapping[str, str] = field(default_factory=dict)
    # The task's opt-in fields (TaskSpec.OPT_IN: image editing's start image, strength, mask, hires fix…) it
    # takes; a family that lists none takes none of them (refused by name, hidden in the tab).
    inputs: tuple[str, ...] = ()
    run: Hook | None = None
    load: Hook | None = None
    check_card: Hook | None = None
    needed_files: Hook | None = None
    takes: Hook | None = None
    prepare: Hook | None = None
    processor: Hook | None = None
    # Built-in tiny models: builder name (a card's `source: builtin:`) -> hook returning an object
    # with `save_pretrained(folder)`.
    builders: Mapping[str, Hook] = field(default_factory=dict)
    # The option that stands in for the prompt on cards that take it (an ImageNet class picker): the
    # tab hides the prompt box for those.
    prompt_from: str | None = None
    # What one step of its progress is: a denoising step, or a token step for autoregressive models.
    step_unit: str = "steps"

    def options_for(self, task: str) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.for_task(task))

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def hook(self, name: str) -> Callable[..., Any] | None:
        target = getattr(self, name)
        return resolve(target) if target else None


def resolve(target: Hook) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class FamilyRegistry:
    """Every registered family by name. `register` is the one line a new family adds."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._lock = threading.RLock()
        self._builtins_loaded = False

    def register(self, family: Family) -> Family:
        with self._lock:
            known = self._families.get(family.name)
            if known is not None and known != family:
                raise ValueError(f"a model family named {family.name!r} is already registered")
            self._families[family.name] = family
        return family

    def unregister(self, name: str) -> None:
        with self._lock:
            self._families.pop(name, None)

    def _ensure_builtins(self) -> None:
        if self._builtins_loaded:
            return
        with self._lock:
            if not self._builtins_loaded:
                self._builtins_loaded = True
                importlib.import_module("studio.families.builtin")
                for module in plugin_modules():
                    try:
                        importlib.import_module(module)
                    except Exception:  # a broken plug-in costs its own families, not the studio
                        log.exception("model family plug-in %r could not be loaded; its models are skipped",
                                      module)

    def get(self, name: str) -> Family | None:
        self._ensure_builtins()
        found = self._families.get(name)
        if found is None:
            found = next((f for f in self._families.values() if name in f.aliases), None)
        return found

    def all(self) -> list[Family]:
        self._ensure_builtins()
        return list(self._families.values())

    def of(self, card: Any) -> Family | None:
        """The family that runs `card`: the one it names (or an older name of it); for a diffusers card
        naming no registered family, the plain diffusers family, which calls its pipeline as it is."""
        family = self.get(card.family)
        if family is None and card.library == "diffusers":
            family = self.get(GENERIC_DIFFUSERS)
        return family

    def for_card(self, card: Any) -> Family:
        """The family that runs `card`, or InvalidInput saying none is registered."""
        family = self.of(card)
        if family is None:
            raise InvalidInput(f"{card.title}: no model family {card.family!r} is registered in this studio, so it "
                               "cannot run")
        return family

    def for_task(self, task: str) -> list[Family]:
        return [f for f in self.all() if task in f.tasks]

    def builder(self, name: str) -> Callable[[], Any] | None:
        for family in self.all():
            if name in family.builders:
                return resolve(family.builders[name])
        return None

    def builder_names(self) -> list[str]:
        return [name for family in self.all() for name in family.builders]


def plugin_modules() -> list[str]:
    """Families installed beside the studio: modules named in STUDIO_FAMILIES (comma-separated), and
    packages that declare a `studio.families` entry point; importing one registers its families."""
    from importlib.metadata import entry_points

    named = [m.strip() for m in os.environ.get("STUDIO_FAMILIES", "").split(",") if m.strip()]
    return named + [ep.value.partition(":")[0] for ep in entry_points(group="studio.families")]


FAMILIES = FamilyRegistry()
register = FAMILIES.register


def check_card(card: Any) -> None:
    """ValueError when a runnable card's family is unknown, or its family refuses the card as written.
    Listed-only cards (`runnable: false`) are not checked: their family may still be to come."""
    if not card.runnable:
        return
    family = FAMILIES.of(card)
    if family is None:
        known = ", ".join(sorted(f.name for f in FAMILIES.all()))
        raise ValueError(f"family: {card.family!r} is not a registered model family; known: {known}")
    unserved = [task for task in card.tasks if task not in family.tasks and task != "component"]
    if unserved:
        raise ValueError(f"tasks: the {family.title} family does not run {', '.join(unserved)}")
    if card.library == "native" and family.load is None:
        raise ValueError(f"library: native, but the {family.title} family has no native loader")
    checker = family.hook("check_card")
    if checker is not None:
        checker(card)
