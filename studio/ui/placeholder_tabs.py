"""Tabs whose features are not built yet: each says plainly what it will do and that it is not here."""

from __future__ import annotations

import gradio as gr

PLANNED = {
    "Gallery": "Every past output, searchable and filterable, with exact re-runs. Until then, outputs are in "
               "the outputs folder and every job is recorded in the history database.",
}


def build(name: str) -> None:
    gr.Markdown(f"### Not available yet\n{PLANNED[name]}\n\nThis tab arrives in a later version of the studio; "
                "the Image tab works today.", elem_classes=["placeholder"])
