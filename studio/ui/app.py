"""Builds the studio's Gradio Blocks: header and one tab per capability."""

from __future__ import annotations

import gradio as gr

from ..services import Studio
from . import anagram_tab, audio_tabs, compose_tab, image_tab, models_tab, placeholder_tabs, video_tab

TITLE = "Studio"


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nLocal generation with Lumina and friends — everything runs on this machine.",
                    elem_id="header")
        with gr.Tabs() as tabs:
            with gr.Tab("Image", id="image"):
                image_model = image_tab.build(studio)
            with gr.Tab("Video", id="video"):
                video_tab.build(studio)
            with gr.Tab("Audio", id="audio"):
                audio_tabs.build_audio(studio)
            with gr.Tab("Music", id="music"):
                audio_tabs.build_music(studio)
            with gr.Tab("Compositional", id="compositional"):
                compose_tab.build(studio)
            with gr.Tab("Anagrams", id="anagrams"):
                anagram_tab.build(studio)
            with gr.Tab("Gallery", id="gallery"):
                placeholder_tabs.build("Gallery")
            with gr.Tab("Models", id="models"):
                models_tab.build(studio, tabs, image_model)
    return demo
