"""Exchanging presets and styles as files: our own export (YAML, or the same as JSON), and the style
files of A1111 (styles.csv), Fooocus (sdxl_styles JSON) and InvokeAI (style preset JSON or CSV).

`parse_import` is a pure function of an uploaded file's bytes (and of the check its presets must pass,
a presets.PresetCheck); the history store writes what it returns
(`history.user_presets.UserPresets.import_result`). A file that cannot be read at all is an
InvalidInput; a bad entry in a readable one is listed in `problems` and the others still import.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import InvalidInput
from .presets import (MODALITIES, PLACEHOLDER, Preset, PresetCheck, PresetFields, PresetFormatError, Style,
                      StyleFields, a_preset, describe_error, entry_label, parse_preset, parse_style)

MAX_IMPORT_BYTES = 5 * 1024 * 1024
EXPORT_VERSION = 1  # the `studio_presets` key of an export names its format version


@dataclass
class ImportResult:
    """What an uploaded file holds: presets (with their tab), styles, and the entries that were skipped."""

    presets: list[tuple[str, Preset]] = field(default_factory=list)
    styles: list[Style] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    format: str = ""  # what the file was read as, e.g. "A1111 styles.csv", for the message the user sees

    def add_style(self, label: str, style: Style) -> None:
        if any(s.name == style.name for s in self.styles):
            self.problems.append(f"{label}: a style named {style.name!r} came earlier in the file; skipped")
        else:
            self.styles.append(style)


def export_user(presets: Iterable[tuple[str, PresetFields]], styles: Iterable[StyleFields]) -> str:
    """The user's presets and styles as one YAML document that `parse_import` reads back.

    studio_presets: 1          # format version
    presets:
      image:
        - {title, category, prompt, negative_prompt, params}   (fields at their default are left out)
    styles:
      - {name, prompt, negative_prompt, modalities}
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for modality, preset in presets:
        entry = preset.model_dump(include=set(PresetFields.model_fields), exclude_defaults=True)
        grouped.setdefault(modality, []).append(entry)
    order = list(MODALITIES)
    grouped = dict(sorted(grouped.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    document = {"studio_presets": EXPORT_VERSION, "presets": grouped,
                "styles": [s.model_dump(include=set(StyleFields.model_fields), exclude_defaults=True) for s in styles]}
    header = "# Studio presets and styles, exported; importing this file into Studio restores them\n"
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)


def parse_import(filename: str, data: bytes, *, check: PresetCheck) -> ImportResult:
    """Read an uploaded preset/style file: our export (YAML/JSON), A1111 styles.csv, Fooocus or InvokeAI styles.

    A file that cannot be read at all raises InvalidInput; a bad entry in a readable file is listed
    in `problems` and the others still import. Presets are checked against their tab with `check`.
    """
    if len(data) > MAX_IMPORT_BYTES:
        raise InvalidInput(f"{filename} is {len(data) / 2**20:.1f} MB; preset and style files can be at most "
                           f"{MAX_IMPORT_BYTES // 2**20} MB")
    try:
        text = data.decode("utf-8-sig")  # A1111 writes its styles.csv with a BOM
    except UnicodeDecodeError:
        raise InvalidInput(f"{filename} is not UTF-8 text; save it as UTF-8 and import it again") from None
    suffix = Path(filename).suffix.lower()
    stripped = text.lstrip()
    if suffix == ".csv" or (suffix not in (".json", ".yaml", ".yml") and _looks_like_csv(stripped)):
        return _parse_styles_csv(filename, text)
    if suffix == ".json" or (suffix not in (".yaml", ".yml") and stripped.startswith(("[", "{"))):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidInput(f"{filename} is not valid JSON ({err})") from None
    else:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InvalidInput(f"{filename} is not valid YAML ({err})") from None
    return _parse_document(filename, document, check)


def _looks_like_csv(text: str) -> bool:
    header = text.split("\n", 1)[0].lower()
    return "," in header and "name" in header and ":" not in header


def _parse_document(filename: str, document: Any, check: PresetCheck) -> ImportResult:
    if isinstance(document, dict) and ("presets" in document or "styles" in document):
        return _parse_studio_export(filename, document, check)
    if isinstance(document, list):
        invoke = "invoke" in filename.lower() or any(
            isinstance(e, dict) and ("positive_prompt" in e or "preset_data" in e) for e in document)
        return _parse_invokeai_json(document) if invoke else _parse_fooocus_json(document)
    raise InvalidInput(f"{filename} is not a preset or style file: expected a Studio export (with 'presets' "
                       "and/or 'styles'), an A1111 styles.csv, or a Fooocus/InvokeAI list of styles")


def _parse_studio_export(filename: str, document: dict[str, Any], check: PresetCheck) -> ImportResult:
    version = document.get("studio_presets", EXPORT_VERSION)
    if version != EXPORT_VERSION:
        raise InvalidInput(f"{filename} was written in preset format {version!r}; this version of the studio "
                           f"reads format {EXPORT_VERSION}")
    result = ImportResult(format="Studio export")
    unknown = sorted(str(k) for k in document.keys() - {"studio_presets", "presets", "styles"})
    if unknown:
        result.problems.append(f"unknown top-level key(s) {', '.join(unknown)} ignored")
    presets = document.get("presets") or {}
    if not isinstance(presets, dict):
        result.problems.append("presets: must map each tab (image, video, ...) to a list of presets; none imported")
        presets = {}
    for modality, entries in presets.items():
        _read_export_presets(result, str(modality), entries, check)
    styles = document.get("styles") or []
    if not isinstance(styles, list):
        result.problems.append("styles: must be a list of styles; none imported")
        styles = []
    for number, entry in enumerate(styles, 1):
        label = entry_label("style", number, entry, "name")
        try:
            result.add_style(label, parse_style(entry))
        except ValueError as err:
            result.problems.append(f"{label}: {err}")
    return result


def _read_export_presets(result: ImportResult, modality: str, entries: Any, check: PresetCheck) -> None:
    if modality not in MODALITIES:
        result.problems.append(f"presets.{modality}: unknown tab; presets exist for {', '.join(MODALITIES)}")
        return
    if not isinstance(entries, list):
        result.problems.append(f"presets.{modality}: must be a list of presets")
        return
    titles: set[str] = set()
    for number, entry in enumerate(entries, 1):
        label = entry_label(f"{modality} preset", number, entry, "title")
        try:
            preset = parse_preset(modality, entry, check=check)
        except ValueError as err:
            result.problems.append(f"{label}: {err}")
            continue
        if preset.title in titles:
            result.problems.append(f"{label}: {a_preset(modality)} with this title came earlier in the file; skipped")
            continue
        titles.add(preset.title)
        result.presets.append((modality, preset))


def _imported_style(name: Any, prompt: Any, negative: Any, joiner: str) -> Style:
    """A style from another app's fields; a template without {prompt} gets one where that app puts the prompt.

    A1111 and Fooocus append such a template after the user's prompt with ', ', InvokeAI with ' ';
    writing the placeholder in keeps the result the same and shows the user where their prompt goes.
    """
    if not all(isinstance(v, str) for v in (name, prompt, negative)):
        raise ValueError("name, prompt and negative_prompt must be text")
    prompt, negative = prompt.strip(), negative.strip()
    if not prompt and not negative:
        raise ValueError("has neither a prompt nor a negative prompt, so it would change nothing")
    if PLACEHOLDER not in prompt:
        prompt = f"{PLACEHOLDER}{joiner}{prompt}" if prompt else PLACEHOLDER
    try:
        return Style(name=name, prompt=prompt, negative_prompt=negative)
    except ValidationError as err:
        raise ValueError(describe_error(err)) from None


def fooocus_name(name: str) -> str:
    """A style name as Fooocus shows it (modules/sdxl_styles.py normalize_key): 'sai-3d-model' -> 'SAI 3D Model'."""
    words = name.replace("-", " ").split(" ")
    name = " ".join(w[:1].upper() + w[1:].lower() for w in words)
    for before, after in (("3d", "3D"), ("Sai", "SAI"), ("Mre", "MRE"), ("(s", "(S")):
        name = name.replace(before, after)
    return name


def _parse_fooocus_json(entries: list[Any]) -> ImportResult:
    result = ImportResult(format="Fooocus styles")
    for number, entry in enumerate(entries, 1):
        label = entry_label("entry", number, entry, "name")
        try:
            if not isinstance(entry, dict):
                raise PresetFormatError("must be an object with name, prompt and negative_prompt")
            if not isinstance(entry.get("name"), str) or not entry["name"].strip():
                raise ValueError("needs a name")
            # Fooocus reads a missing prompt as the user's prompt unchanged.
            style = _imported_style(fooocus_name(entry["name"].strip()), entry.get("prompt") or PLACEHOLDER,
                                    entry.get("negative_prompt") or "", ", ")
        except ValueError as err:
            result.problems.append(f"{label}: {err}")
            continue
        result.add_style(label, style)
    return result


def _invokeai_fields(entry: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(name, prompt, negative) of an InvokeAI import row, or of a preset record with nested preset_data."""
    data = entry.get("preset_data") if isinstance(entry.get("preset_data"), dict) else entry
    prompt = data.get("positive_prompt", data.get("prompt", ""))
    return entry.get("name", ""), prompt or "", data.get("negative_prompt") or ""


def _parse_invokeai_json(entries: list[Any]) -> ImportResult:
    result = ImportResult(format="InvokeAI style presets")
    for number, entry in enumerate(entries, 1):
        label = entry_label("entry", number, entry, "name")
        try:
            if not isinstance(entry, dict):
                raise PresetFormatError("must be an object with name, prompt and negative_prompt")
            name, prompt, negative = _invokeai_fields(entry)
            if not isinstance(name, str) or not name.strip():
                raise ValueError("needs a name")
            style = _imported_style(name.strip(), prompt, negative, " ")
        except ValueError as err:
            result.problems.append(f"{label}: {err}")
            continue
        result.add_style(label, style)
    return result


def _parse_styles_csv(filename: str, text: str) -> ImportResult:
    """A1111 styles.csv (name, prompt or the legacy text, negative_prompt) or InvokeAI's CSV.

    InvokeAI exports the same three columns as A1111 and imports positive_prompt too; only a
    positive_prompt column tells them apart, and then only the joiner of a placeholder-less template differs.
    """
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [column.strip().lower() for column in next(rows, [])]
    except csv.Error as err:
        raise InvalidInput(f"{filename} is not a readable CSV file ({err})") from None
    prompt_column = next((c for c in ("prompt", "positive_prompt", "text") if c in header), None)
    if "name" not in header or (prompt_column is None and "negative_prompt" not in header):
        raise InvalidInput(f"{filename} is not a styles CSV: its header needs name, prompt and negative_prompt "
                           f"(found: {', '.join(header) or 'nothing'})")
    invoke = prompt_column == "positive_prompt"
    result = ImportResult(format="InvokeAI style presets (CSV)" if invoke else "A1111 styles.csv")
    try:
        for number, row in enumerate(rows, 1):
            _read_csv_row(result, number, dict(zip(header, row)), prompt_column, " " if invoke else ", ")
    except csv.Error as err:
        result.problems.append(f"line {rows.line_num}: {err}; the rest of the file was not read")
    return result


def _read_csv_row(result: ImportResult, number: int, record: dict[str, str], prompt_column: str | None,
                  joiner: str) -> None:
    name = record.get("name", "").strip()
    prompt = record.get(prompt_column, "") if prompt_column else ""
    negative = record.get("negative_prompt", "")
    if not name:
        # A1111 skips these rows (blank lines, the "None" placeholder row); say so only if it held a template.
        if prompt.strip() or negative.strip():
            result.problems.append(f"row {number}: no name; skipped")
        return
    if name.startswith("#"):
        return  # A1111 reads a name starting with '#' as a comment row
    label = f"row {number} {name!r}"
    try:
        result.add_style(label, _imported_style(name, prompt, negative, joiner))
    except ValueError as err:
        result.problems.append(f"{label}: {err}")
