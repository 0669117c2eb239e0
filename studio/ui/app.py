"""Builds the studio's Gradio Blocks: header and one tab per capability."""

from __future__ import annotations

import gradio as gr

from ..services import Studio
from . import anagram_tab, compose_tab, image_tab, models_tab, placeholder_tabs

TITLE = "Studio"


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nLocal generation with Lumina and friends — everything runs on this machine.",
                    elem_id="header")
        with gr.Tabs() as tabs:
            with gr.Tab("Image", id="image"):
                image_model = image_tab.build(studio)
            for name in ("Video", "Audio", "Music"):
                with gr.Tab(name, id=name.lower()):
                    placeholder_tabs.build(name)
            with gr.Tab("Compositional", id="compositional"):
                compose_tab.build(studio)
            with gr.Tab("Anagrams", id="anagrams"):
                anagram_tab.build(studio)
            with gr.Tab("Gallery", id="gallery"):
                placeholder_tabs.build("Gallery")
            with gr.Tab("Models", id="models"):
                models_tab.build(studio, tabs, image_model)
    return demo
