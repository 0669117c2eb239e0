"""Builds the studio's Gradio Blocks: header and one tab per capability."""

from __future__ import annotations

import gradio as gr

from ..services import Studio
from . import (anagram_tab, api, audio_tabs, compose_tab, gallery_tab, image_tab, models_tab, named_api,
               presets_tab, queue_tab, upscale_tab, video_tab)
from .appearance import TITLE, header_html

CACHE_SWEEP = (3600, 24 * 3600)  # (every N seconds, files older than M seconds)


def build_app(studio: Studio) -> gr.Blocks:
    # Gradio keeps a copy of every result and upload in its temp cache: swept every hour of what is over
    # a day old, so it stays bounded (the outputs themselves live in the outputs folder).
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=CACHE_SWEEP) as demo:
        gr.HTML(header_html())
        with gr.Tabs() as tabs:
            # Each generation tab returns its form, which presets, the Gallery and the Models tab fill.
            with gr.Tab("Image", id="image"):
                forms = [image_tab.build(studio)]
            with gr.Tab("Video", id="video"):
                forms.append(video_tab.build(studio))
            with gr.Tab("Audio", id="audio"):
                forms.append(audio_tabs.build_audio(studio))
            with gr.Tab("Music", id="music"):
                forms.append(audio_tabs.build_music(studio))
            with gr.Tab("Compositional", id="compositional"):
                forms.append(compose_tab.build(studio))
            with gr.Tab("Anagrams", id="anagrams"):
                forms.append(anagram_tab.build(studio))
            with gr.Tab("Upscale", id="upscale"):
                forms.append(upscale_tab.build(studio))
            with gr.Tab("Queue", id="queue") as queue:
                queue_tab.build(studio, tabs, queue)
            with gr.Tab("Gallery", id="gallery") as gallery:
                gallery_tab.build(studio, tabs, gallery, forms)
            with gr.Tab("Presets", id="presets") as presets:
                presets_tab.build(studio, presets, forms)
            with gr.Tab("Models", id="models"):
                models_tab.build(studio, tabs, forms)
        upscale_tab.wire_sends(tabs, next(f for f in forms if f.tab_id == "upscale"))  # the send buttons
        for form in forms:
            named_api.register(studio, form)
        api.register(studio)
    return demo
