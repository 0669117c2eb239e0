"""The Presets tab: the user's own presets and styles — edit, delete, export, import (our YAML/JSON,
A1111 styles.csv, Fooocus and InvokeAI style files) — and any problem with the shipped library.
Every tab's pickers are refreshed after a change here."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import InvalidInput
from ..gallery import EXPORTS_DIR
from ..history.tables import utcnow
from ..preset_files import export_user, parse_import
from ..presets import MODALITIES, Preset, Style
from ..services import Studio
from .forms import TabForm, find_style, preset_choices, style_choices

STYLE_MODALITIES = ["image", "video", "audio", "music"]


def entry_choices(studio: Studio) -> list[tuple[str, str]]:
    """Every user preset and style, as (label, "preset:ID" / "style:ID")."""
    choices = [(f"{modality} preset · {p.title}", f"preset:{p.id}") for modality in MODALITIES
               for p in studio.user_presets.presets(modality)]
    choices += [(f"style · {s.name}", f"style:{s.id}") for s in studio.user_presets.styles()]
    return choices


def _find_preset(studio: Studio, preset_id: str) -> tuple[str, Preset] | None:
    return next(((m, p) for m, p in studio.user_presets.all_presets() if str(p.id) == preset_id), None)


def build(studio: Studio, tab: gr.Tab, forms: list[TabForm]) -> None:
    gr.Markdown("Your own presets (saved with **Save as preset** in any tab, or imported) and style templates. "
                "The shipped library is in the `presets/` folder.")
    if studio.presets.problems:
        listed = "\n".join(f"- {html.escape(str(p))}" for p in studio.presets.problems)
        gr.Markdown(f"⚠️ **Some shipped preset files have problems** (the rest loaded):\n{listed}",
                    elem_id="presets-problems")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            entry = gr.Dropdown(entry_choices(studio), value=None, label="Your presets and styles",
                                elem_id="presets-entry")
            name = gr.Textbox(label="Name", elem_id="presets-name")
            category = gr.Textbox(label="Category (presets)")
            prompt = gr.Textbox(label="Prompt (styles: put {prompt} where the user's prompt goes)", lines=3,
                                elem_id="presets-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=2)
            params = gr.Code(label="Parameters (presets, JSON)", language="json", lines=6, elem_id="presets-params")
            modalities = gr.CheckboxGroup(STYLE_MODALITIES, label="Tabs the style is offered in (styles)")
            with gr.Row():
                save = gr.Button("Save changes", variant="primary", elem_id="presets-save")
                new_style = gr.Button("Save as a new style", elem_id="presets-new-style")
                delete = gr.Button("Delete", variant="stop", elem_id="presets-delete")
            message = gr.Markdown(elem_id="presets-message")
        with gr.Column(scale=1):
            gr.Markdown("**Import** a file: a Studio export (YAML or JSON), A1111 `styles.csv`, or a Fooocus or "
                        "InvokeAI style file (JSON).")
            upload = gr.File(label="Preset or style file", file_types=[".yaml", ".yml", ".json", ".csv"],
                             type="filepath", elem_id="presets-import")
            replace = gr.Checkbox(label="Replace entries with the same name")
            imported = gr.Markdown(elem_id="presets-imported")
            export = gr.Button("Export all of mine (YAML)", elem_id="presets-export")
            export_file = gr.File(label="Export", elem_id="presets-export-file")

    pickers = [c for f in forms if f.controls for c in (f.controls.picker, f.controls.style) if c is not None]

    def refreshed(value: str | None = None) -> dict[Any, Any]:
        """New choices for this tab's list and for every tab's preset and style pickers."""
        updates: dict[Any, Any] = {entry: gr.update(choices=entry_choices(studio), value=value)}
        for form in forms:
            if form.controls is None:
                continue
            updates[form.controls.picker] = gr.update(choices=preset_choices(studio, form.modality))
            if form.controls.style is not None:
                updates[form.controls.style] = gr.update(choices=style_choices(studio, form.modality))
        return updates

    def on_entry(key: str | None):
        kind, _, item_id = (key or "").partition(":")
        if kind == "preset" and (found := _find_preset(studio, item_id)):
            _, preset = found
            return (preset.title, preset.category, preset.prompt, preset.negative_prompt,
                    json.dumps(preset.params, indent=2, ensure_ascii=False), [])
        if kind == "style" and (style := find_style(studio, f"user:{item_id}")):
            return style.name, "", style.prompt, style.negative_prompt, "", list(style.modalities)
        return "", "", "", "", "", []

    def on_save(key, name_v, category_v, prompt_v, negative_v, params_v, modalities_v):
        kind, _, item_id = (key or "").partition(":")
        try:
            if kind == "preset" and (found := _find_preset(studio, item_id)):
                try:
                    values = json.loads(params_v or "{}")
                except json.JSONDecodeError as err:
                    raise InvalidInput(f"Parameters are not valid JSON: {err}") from None
                modality, _ = found
                prompt_text = "" if modality in ("compositional", "anagrams") else prompt_v or ""
                studio.user_presets.update_preset(int(item_id), Preset(
                    title=name_v or "", category=category_v or "", prompt=prompt_text,
                    negative_prompt=negative_v or "", params=values if isinstance(values, dict) else {}))
            elif kind == "style":
                studio.user_presets.update_style(int(item_id), Style(
                    name=name_v or "", prompt=prompt_v or "", negative_prompt=negative_v or "",
                    modalities=modalities_v or ["image", "video"]))
            else:
                return {message: "Pick one of your presets or styles first."}
        except (InvalidInput, ValueError) as err:
            return {message: f"❌ {html.escape(str(err))}"}
        return {message: f"✅ Saved “{html.escape(name_v)}”.", **refreshed(key)}

    def on_new_style(name_v, prompt_v, negative_v, modalities_v):
        try:
            style_id = studio.user_presets.add_style(Style(name=name_v or "", prompt=prompt_v or "",
                                                           negative_prompt=negative_v or "",
                                                           modalities=modalities_v or ["image", "video"]))
        except (InvalidInput, ValueError) as err:
            return {message: f"❌ {html.escape(str(err))}"}
        return {message: f"✅ Added the style “{html.escape(name_v)}”.", **refreshed(f"style:{style_id}")}

    def on_delete(key):
        _, _, item_id = (key or "").partition(":")
        if not item_id or not studio.user_presets.delete(int(item_id)):
            return {message: "Pick one of your presets or styles first."}
        return {message: "Deleted.", **refreshed(None)}

    def on_import(path, replace_v):
        if not path:
            return {}
        try:
            result = parse_import(Path(path).name, Path(path).read_bytes(), check=studio.preset_check)
            written, skipped = studio.user_presets.import_result(result, replace=bool(replace_v))
        except InvalidInput as err:
            return {imported: f"❌ {html.escape(str(err))}"}
        problems = [*result.problems, *skipped]
        text = f"✅ Imported {written} entr{'y' if written == 1 else 'ies'} from {result.format or 'the file'}."
        if problems:
            text += "\n\nSkipped:\n" + "\n".join(f"- {html.escape(p)}" for p in problems[:50])
        return {imported: text, **refreshed(None)}

    def on_export():
        folder = studio.settings.outputs_dir / EXPORTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"studio-presets-{utcnow():%Y%m%d-%H%M%S}.yaml"
        target.write_text(export_user(studio.user_presets.all_presets(), studio.user_presets.styles()),
                          encoding="utf-8")
        return str(target)

    private = {"api_visibility": "private"}
    refresh_outputs = [entry, *pickers]
    tab.select(lambda: gr.update(choices=entry_choices(studio)), None, entry, **private)
    entry.input(on_entry, entry, [name, category, prompt, negative, params, modalities], **private)
    save.click(on_save, [entry, name, category, prompt, negative, params, modalities], [message, *refresh_outputs],
               **private)
    new_style.click(on_new_style, [name, prompt, negative, modalities], [message, *refresh_outputs], **private)
    delete.click(on_delete, entry, [message, *refresh_outputs], **private)
    upload.upload(on_import, [upload, replace], [imported, *refresh_outputs], **private)
    export.click(on_export, None, export_file, **private)
