"""The user's own presets and style templates: rows of `user_presets` in the history database.

The shipped presets live in presets/*.yaml (see `studio.presets`); these are the ones a user saved
or imported. A preset is checked against its tab's task exactly as a shipped one is before it is
written, names are unique per kind and tab, and each call is its own short transaction (an import
is one transaction, so it lands whole or not at all).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ..errors import InvalidInput
from ..preset_files import ImportResult
from ..presets import Preset, PresetCheck, PresetFields, Style, StyleFields, a_preset, check_preset, preset_problem
from .db import retry_when_locked, writer
from .tables import UserPreset, utcnow

PRESET = "preset"
STYLE = "style"
STYLE_MODALITY = ""  # styles are not tied to one tab; their data says which tabs they apply to


class NameTaken(InvalidInput, ValueError):
    """A preset or style with this name already exists where the new one would go."""


def _what(kind: str, modality: str) -> str:
    return a_preset(modality) if kind == PRESET else "a style"


def _preset_data(preset: PresetFields) -> dict[str, Any]:
    return {"prompt": preset.prompt, "negative_prompt": preset.negative_prompt, "params": dict(preset.params)}


def _style_data(style: StyleFields) -> dict[str, Any]:
    return {"prompt": style.prompt, "negative_prompt": style.negative_prompt, "modalities": list(style.modalities)}


def _preset(row: UserPreset) -> Preset:
    data = row.data
    return Preset(title=row.name, category=row.category, prompt=data.get("prompt", ""),
                  negative_prompt=data.get("negative_prompt", ""), params=data.get("params") or {},
                  source="user", id=row.id)


def _style(row: UserPreset) -> Style:
    data = row.data
    extra = {"modalities": data["modalities"]} if data.get("modalities") else {}
    return Style(name=row.name, prompt=data.get("prompt", ""), negative_prompt=data.get("negative_prompt", ""),
                 source="user", id=row.id, **extra)


class UserPresets:
    """Reads and writes the user's presets and styles; each call is its own short transaction.

    A preset is checked against its tab (presets.preset_problem) with `check` before it is written.
    """

    def __init__(self, engine: Engine, *, check: PresetCheck) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._check = check

    # -- writes -------------------------------------------------------------------------------

    @retry_when_locked
    def add_preset(self, modality: str, preset: PresetFields, replace: bool = False) -> int:
        """Save `preset` for the `modality` tab and return its id; a taken title raises NameTaken unless `replace`."""
        check_preset(modality, preset, check=self._check)
        with Session(self._writer) as s, s.begin():
            return self._put(s, PRESET, modality, preset.title, preset.category, _preset_data(preset), replace)

    @retry_when_locked
    def add_style(self, style: StyleFields, replace: bool = False) -> int:
        """Save `style` and return its id; a taken name raises NameTaken unless `replace`."""
        with Session(self._writer) as s, s.begin():
            return self._put(s, STYLE, STYLE_MODALITY, style.name, "", _style_data(style), replace)

    @retry_when_locked
    def update_preset(self, preset_id: int, preset: PresetFields) -> None:
        """Overwrite the preset `preset_id` (it stays in its tab); renaming onto a taken title raises NameTaken."""
        with Session(self._writer) as s, s.begin():
            row = self._row(s, preset_id, PRESET)
            check_preset(row.modality, preset, check=self._check)
            self._rename(s, row, preset.title)
            row.category, row.data, row.updated_at = preset.category, _preset_data(preset), utcnow()

    @retry_when_locked
    def update_style(self, style_id: int, style: StyleFields) -> None:
        """Overwrite the style `style_id`; renaming onto a taken name raises NameTaken."""
        with Session(self._writer) as s, s.begin():
            row = self._row(s, style_id, STYLE)
            self._rename(s, row, style.name)
            row.data, row.updated_at = _style_data(style), utcnow()

    @retry_when_locked
    def delete(self, item_id: int) -> bool:
        """Delete a preset or style by id; False if there was none."""
        with Session(self._writer) as s, s.begin():
            row = s.get(UserPreset, item_id)
            if row is None:
                return False
            s.delete(row)
            return True

    @retry_when_locked
    def import_result(self, result: ImportResult, replace: bool = False) -> tuple[int, list[str]]:
        """Write what `parse_import` read, in one transaction: (how many were written, what was skipped and why).

        A name that is already taken is skipped (or, with `replace`, overwritten and counted). The
        problems returned are this step's only; the parse's own are in `result.problems`.
        """
        written, problems = 0, []
        with Session(self._writer) as s, s.begin():
            for modality, preset in result.presets:
                problem = preset_problem(modality, preset, check=self._check)
                if problem:
                    problems.append(f"{modality} preset {preset.title!r}: {problem}; skipped")
                    continue
                written += self._put_or_note(s, problems, replace, PRESET, modality, preset.title, preset.category,
                                             _preset_data(preset))
            for style in result.styles:
                written += self._put_or_note(s, problems, replace, STYLE, STYLE_MODALITY, style.name, "",
                                             _style_data(style))
        return written, problems

    def _put_or_note(self, s: Session, problems: list[str], replace: bool, kind: str, modality: str, name: str,
                     category: str, data: dict[str, Any]) -> int:
        try:
            self._put(s, kind, modality, name, category, data, replace)
        except NameTaken:
            problems.append(f"{_what(kind, modality).capitalize()} {name!r} already exists; skipped "
                            "(import with replace to overwrite it)")
            return 0
        return 1

    def _put(self, s: Session, kind: str, modality: str, name: str, category: str, data: dict[str, Any],
             replace: bool) -> int:
        # The lookup runs inside the writer's BEGIN IMMEDIATE, so no other writer can take the name in between.
        row = self._find(s, kind, modality, name)
        if row is not None and not replace:
            raise NameTaken(f"There is already {_what(kind, modality)} named {name!r}: choose another name, "
                            "or replace it")
        now = utcnow()
        if row is None:
            row = UserPreset(kind=kind, modality=modality, name=name, created_at=now)
            s.add(row)
        row.category, row.data, row.updated_at = category, data, now
        s.flush()
        return row.id

    @staticmethod
    def _find(s: Session, kind: str, modality: str, name: str) -> UserPreset | None:
        return s.scalar(select(UserPreset).where(UserPreset.kind == kind, UserPreset.modality == modality,
                                                 UserPreset.name == name))

    def _rename(self, s: Session, row: UserPreset, name: str) -> None:
        if name != row.name and self._find(s, row.kind, row.modality, name) is not None:
            raise NameTaken(f"There is already {_what(row.kind, row.modality)} named {name!r}: choose another name")
        row.name = name

    @staticmethod
    def _row(s: Session, item_id: int, kind: str) -> UserPreset:
        row = s.get(UserPreset, item_id)
        if row is None or row.kind != kind:
            raise KeyError(f"no user {kind} with id {item_id}")
        return row

    # -- reads --------------------------------------------------------------------------------

    def presets(self, modality: str) -> list[Preset]:
        """The user's presets of one tab, by category then title."""
        with Session(self._engine) as s:
            rows = s.scalars(select(UserPreset).where(UserPreset.kind == PRESET, UserPreset.modality == modality))
            presets = [_preset(row) for row in rows]
        return sorted(presets, key=lambda p: (p.category.casefold(), p.title.casefold()))

    def all_presets(self) -> list[tuple[str, Preset]]:
        """Every user preset with its tab (what `export_user` takes)."""
        with Session(self._engine) as s:
            rows = s.scalars(select(UserPreset).where(UserPreset.kind == PRESET).order_by(UserPreset.id))
            return [(row.modality, _preset(row)) for row in rows]

    def styles(self, modality: str | None = None) -> list[Style]:
        """The user's styles (only those that apply to `modality`, if given), by name."""
        with Session(self._engine) as s:
            styles = [_style(row) for row in s.scalars(select(UserPreset).where(UserPreset.kind == STYLE))]
        styles = [st for st in styles if modality is None or modality in st.modalities]
        return sorted(styles, key=lambda st: st.name.casefold())
