"""Prompt libraries and style templates: what they hold, how they are checked, loaded, applied and exchanged.

A preset fills one tab's form: a title and category for the picker, the prompt, the negative prompt
and any TaskSpec parameters of that tab's task (never the model or the seed). The shipped ones live
in `presets/<modality>.yaml`; a user's own live in the history database (`history.user_presets`).
A style is a prompt template in the A1111 sense: `{prompt}` marks where the user's prompt goes, and
its negative prompt is added to the user's; the shipped ones live in `presets/styles.yaml`.

A malformed preset file is reported by file and reason (and the entry, where one entry is at fault)
while the other files still load. Exchanging presets as files (export, and imports from A1111,
Fooocus and InvokeAI) is in `preset_files`.

This module knows no tasks: what it checks itself is the form of a preset (a known tab, no reserved
params, a prompt where the tab takes one). Whether its params make a valid job of the tab's task is
a `PresetCheck` the caller passes in (the studio passes `preset_checks.task_problem`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidInput

log = logging.getLogger(__name__)

# Tab (and preset file name) -> the task its presets fill.
MODALITIES: dict[str, str] = {"image": "image", "video": "video", "audio": "audio", "music": "music",
                              "compositional": "compose", "anagrams": "anagram"}
# Tabs whose task builds the prompt from another field (the cell captions, the readings): their presets have none.
DERIVED_PROMPT: dict[str, str] = {"compositional": "captions", "anagrams": "prompts"}
# What a preset never sets: the model and seed are the user's choice, the prompts are fields of their own.
RESERVED_PARAMS = ("model", "seed", "prompt", "negative_prompt")

StyleModality = Literal["image", "video", "audio", "music"]
DEFAULT_STYLE_MODALITIES: list[StyleModality] = ["image", "video"]
PLACEHOLDER = "{prompt}"
STYLES_FILE = "styles.yaml"



class PresetFormatError(ValueError):
    """A preset or style file, or one entry of it, is not in the expected form; the message says how."""


class PresetFields(BaseModel):
    """A preset as a preset file (or an export) writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200)
    category: str = Field(default="", max_length=100)
    prompt: str = ""
    negative_prompt: str = ""
    params: dict[str, Any] = Field(default_factory=dict)


class Preset(PresetFields):
    """A preset plus where it came from: the shipped files, or the user's own (with its database id)."""

    source: Literal["builtin", "user"] = "user"
    id: int | None = None


class StyleFields(BaseModel):
    """A style template as styles.yaml (or an export) writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    prompt: str
    negative_prompt: str = ""
    modalities: list[StyleModality] = Field(default_factory=lambda: list(DEFAULT_STYLE_MODALITIES), min_length=1)

    @field_validator("prompt")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if PLACEHOLDER not in value:
            raise ValueError("a style's prompt needs {prompt} where the user's prompt goes, "
                             "e.g. 'an oil painting of {prompt}, thick brush strokes'")
        return value

    @field_validator("modalities")
    @classmethod
    def _once_each(cls, value: list[StyleModality]) -> list[StyleModality]:
        return list(dict.fromkeys(value))


class Style(StyleFields):
    """A style plus where it came from: the shipped styles.yaml, or the user's own (with its database id)."""

    source: Literal["builtin", "user"] = "user"
    id: int | None = None


# -- checking a preset against its tab's task ------------------------------------------------------


# Why a preset (already of the right form for its tab) cannot fill that tab's task, e.g. 'params.width: ...',
# or None if it can: (modality, preset) -> problem. The caller supplies it (see studio.preset_checks).
PresetCheck = Callable[[str, PresetFields], "str | None"]


def a_preset(modality: str) -> str:
    """"an image preset", "a video preset", "an anagrams preset": the article the modality needs."""
    return f"{'an' if modality[:1] in 'aeiou' else 'a'} {modality} preset"


def preset_problem(modality: str, preset: PresetFields, *, check: PresetCheck) -> str | None:
    """Why `preset` cannot fill the `modality` tab (e.g. 'params.width: ...'), or None if it can."""
    if modality not in MODALITIES:
        return f"unknown modality {modality!r}; presets exist for {', '.join(MODALITIES)}"
    reserved = [name for name in RESERVED_PARAMS if name in preset.params]
    if reserved:
        return (f"params: {', '.join(reserved)} cannot be set by a preset (the model and seed stay the user's "
                "choice; the prompt and negative prompt are fields of their own)")
    derived = modality in DERIVED_PROMPT
    if derived and preset.prompt:
        return f"prompt: {a_preset(modality)} has no prompt; the task builds it from params.{DERIVED_PROMPT[modality]}"
    if not derived and not preset.prompt:
        return f"prompt: {a_preset(modality)} needs a prompt"
    return check(modality, preset)


def check_preset(modality: str, preset: PresetFields, *, check: PresetCheck) -> None:
    """Raise InvalidInput, saying what to change, if `preset` cannot fill the `modality` tab."""
    problem = preset_problem(modality, preset, check=check)
    if problem:
        raise InvalidInput(f"The {modality} preset {preset.title!r} is not valid — {problem}")


# -- applying a style -------------------------------------------------------------------------------


def merge_prompt(template: str, text: str) -> str:
    """A1111's merge: `text` in place of {prompt}, or, in a template without one, `text, template`.

    With an empty `text` the separators left around the placeholder are tidied away, so that
    'film still of {prompt}, shallow focus' gives 'film still of, shallow focus', not 'of , ...'.
    """
    text = text.strip()
    if PLACEHOLDER not in template:
        return ", ".join(part for part in (text, template.strip()) if part)
    merged = template.replace(PLACEHOLDER, text)
    return merged.strip() if text else _tidy(merged)


def _tidy(text: str) -> str:
    text = re.sub(r"\(\s*\)|\[\s*\]|\{\s*\}", "", text)  # brackets that only held the prompt
    text = re.sub(r"\s*,(?:\s*,)+", ",", text)  # ', ,' -> ','
    text = re.sub(r"[ \t]+([,.;:])", r"\1", text)  # 'of , x' -> 'of, x'
    text = re.sub(r"[ \t]{2,}", " ", text)
    return text.strip(" \t\r\n,;")


def apply_style(style: StyleFields, prompt: str, negative_prompt: str) -> tuple[str, str]:
    """(prompt, negative prompt) with `style` applied the way A1111 does it.

    The style's prompt is a template for the user's prompt; its negative prompt is joined after the
    user's with ', ' (or, if it has a {prompt} itself, takes the user's negative there).
    """
    return merge_prompt(style.prompt, prompt), merge_prompt(style.negative_prompt, negative_prompt)


# -- the shipped library -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PresetProblem:
    """A preset file, or one entry of it, that did not load, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path.name}: {self.reason}"


def describe_error(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in err.errors())


def entry_label(kind: str, number: int, entry: Any, key: str) -> str:
    """'preset 3 'Lighthouse'' — how a problem names the entry at fault (numbered from 1, as people count)."""
    name = entry.get(key) if isinstance(entry, dict) else None
    return f"{kind} {number} {name.strip()!r}" if isinstance(name, str) and name.strip() else f"{kind} {number}"


def parse_preset(modality: str, entry: Any, source: Literal["builtin", "user"] = "user", *,
                 check: PresetCheck) -> Preset:
    """One preset entry of a file or an import, checked against its tab; ValueError says what is wrong."""
    if not isinstance(entry, dict):
        raise PresetFormatError("must be a mapping with title, category, prompt, negative_prompt and params")
    try:
        fields = PresetFields.model_validate(entry)
    except ValidationError as err:
        raise ValueError(describe_error(err)) from None
    problem = preset_problem(modality, fields, check=check)
    if problem:
        raise ValueError(problem)
    return Preset(**fields.model_dump(), source=source)


def parse_style(entry: Any, source: Literal["builtin", "user"] = "user") -> Style:
    """One style entry of styles.yaml or an export; ValueError says what is wrong."""
    if not isinstance(entry, dict):
        raise PresetFormatError("must be a mapping with name, prompt, negative_prompt and modalities")
    try:
        return Style(**StyleFields.model_validate(entry).model_dump(), source=source)
    except ValidationError as err:
        raise ValueError(describe_error(err)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML ({err})") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except OSError as err:
        raise ValueError(f"cannot be read ({err})") from None
    if data is None:
        raise ValueError("the file is empty")
    if not isinstance(data, dict):
        raise PresetFormatError("a preset file must be a YAML mapping")
    return data


@dataclass
class PresetLibrary:
    """The shipped presets (per modality) and styles, plus what could not be loaded.

    Within a file, one bad entry is reported and skipped and the file's other entries still load: a
    typo in one preset should not hide thirty good ones. A file whose whole shape is wrong (not
    YAML, no `presets` list, a `modality` other than its name) is skipped whole. Each preset is
    checked against its tab with preset_problem and the `check` given to `load`.
    """

    by_modality: dict[str, list[Preset]] = field(default_factory=dict)
    all_styles: list[Style] = field(default_factory=list)
    problems: list[PresetProblem] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path, *, check: PresetCheck) -> PresetLibrary:
        library = cls()
        folder = Path(folder)
        if not folder.is_dir():
            library.problems.append(PresetProblem(folder, "the presets folder does not exist"))
        else:
            for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
                library._load_file(path, check)
        for problem in library.problems:
            log.warning("preset file problem: %s", problem)
        return library

    def _problem(self, path: Path, reason: str) -> None:
        self.problems.append(PresetProblem(path, reason))

    def _load_file(self, path: Path, check: PresetCheck) -> None:
        # Unknown YAML files are reported rather than ignored: 'imgae.yaml' or 'image.yml' would
        # otherwise silently ship an empty tab.
        if path.suffix != ".yaml" or (path.stem not in MODALITIES and path.name != STYLES_FILE):
            names = ", ".join([*(f"{m}.yaml" for m in MODALITIES), STYLES_FILE])
            self._problem(path, f"not a preset file, so not loaded (preset files are named {names})")
            return
        try:
            data = _read_yaml(path)
        except ValueError as err:
            self._problem(path, str(err))
            return
        if path.name == STYLES_FILE:
            self._load_styles(path, data)
        else:
            self._load_presets(path, path.stem, data, check)

    def _unknown_keys(self, path: Path, data: dict[str, Any], known: set[str]) -> None:
        unknown = sorted(str(k) for k in data.keys() - known)
        if unknown:
            self._problem(path, f"unknown top-level key(s) {', '.join(unknown)} ignored "
                                f"(expected {', '.join(sorted(known))})")

    def _load_presets(self, path: Path, modality: str, data: dict[str, Any], check: PresetCheck) -> None:
        if data.get("modality") != modality:
            self._problem(path, f"modality is {data.get('modality')!r}, but this file holds the {modality!r} "
                                f"presets (a preset file is named after its tab); file not loaded")
            return
        self._unknown_keys(path, data, {"modality", "presets"})
        entries = data.get("presets")
        if not isinstance(entries, list):
            self._problem(path, "presets: must be a list of presets; file not loaded")
            return
        loaded: dict[str, Preset] = {}
        for number, entry in enumerate(entries, 1):
            label = entry_label("preset", number, entry, "title")
            try:
                preset = parse_preset(modality, entry, source="builtin", check=check)
            except ValueError as err:
                self._problem(path, f"{label}: {err}")
                continue
            if preset.title in loaded:
                self._problem(path, f"{label}: the title is already used by an earlier preset in this file")
                continue
            loaded[preset.title] = preset
        self.by_modality[modality] = list(loaded.values())

    def _load_styles(self, path: Path, data: dict[str, Any]) -> None:
        self._unknown_keys(path, data, {"styles"})
        entries = data.get("styles")
        if not isinstance(entries, list):
            self._problem(path, "styles: must be a list of styles; file not loaded")
            return
        loaded: dict[str, Style] = {}
        for number, entry in enumerate(entries, 1):
            label = entry_label("style", number, entry, "name")
            try:
                style = parse_style(entry, source="builtin")
            except ValueError as err:
                self._problem(path, f"{label}: {err}")
                continue
            if style.name in loaded:
                self._problem(path, f"{label}: the name is already used by an earlier style in this file")
                continue
            loaded[style.name] = style
        self.all_styles = list(loaded.values())

    def presets(self, modality: str) -> list[Preset]:
        """The shipped presets of a tab, in file order."""
        if modality not in MODALITIES:
            raise KeyError(f"unknown modality {modality!r}; presets exist for {', '.join(MODALITIES)}")
        return list(self.by_modality.get(modality, []))

    def styles(self, modality: str | None = None) -> list[Style]:
        """The shipped styles that apply to a tab (all of them for None), in file order."""
        return [s for s in self.all_styles if modality is None or modality in s.modalities]

    def preset(self, modality: str, title: str) -> Preset | None:
        return next((p for p in self.presets(modality) if p.title == title), None)

    def style(self, name: str) -> Style | None:
        return next((s for s in self.all_styles if s.name == name), None)
