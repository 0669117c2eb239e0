"""The web UI: the app builds with every tab, and its Image handler makes an image over HTTP."""

import socket

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from studio.history import JobStatus
from studio.ui.app import build_app

from helpers import FAST_STEPS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(studio):
    demo = build_app(studio)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(studio.settings.outputs_dir)])
    try:
        yield demo, Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def tab_labels(demo: gr.Blocks) -> list[str]:
    return [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]


def test_every_tab_exists(studio):
    demo = build_app(studio)
    assert tab_labels(demo) == ["Image", "Video", "Audio", "Music", "Compositional", "Anagrams", "Queue", "Gallery",
                                "Presets", "Models"]
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str)]
    assert not any("Not available yet" in t for t in texts)


def test_image_form_starts_from_the_models_card(studio):
    demo = build_app(studio)
    dropdowns = {b.elem_id or b.label: b for b in demo.blocks.values() if isinstance(b, gr.Dropdown)}
    # No real model is downloaded here, so the built-in tiny one is preselected and labelled as such.
    model = dropdowns["image-model"]
    assert model.value in {"tiny-lumina-next", "tiny-lumina2"}
    labels = dict((value, label) for label, value in model.choices)
    assert "(not downloaded)" in labels["lumina-next-sft"] and "random weights" in labels[model.value]
    card = studio.cards.get(model.value)
    assert dropdowns["image-size"].value == f"{card.defaults['width']}x{card.defaults['height']}"


def test_generate_over_http_returns_the_image_and_records_the_job(served, studio):
    _, client = served
    gallery, status = client.predict("tiny-lumina-next", "a tin robot", "", "256x256", FAST_STEPS, 4.0, 4.0, 11, 1,
                                     api_name="/generate_image")
    assert "Done" in status and "seed `11`" in status
    [item] = gallery
    image = np.asarray(Image.open(item["image"]))
    assert image.shape[:2] == (256, 256)
    [record] = studio.history.list_jobs()
    assert record.status is JobStatus.DONE and record.id in status
    on_disk = np.asarray(Image.open(studio.settings.outputs_dir / record.assets[0].path))
    assert np.array_equal(image, on_disk)


def test_bad_input_shows_its_message_and_the_app_keeps_serving(served, studio):
    _, client = served
    gallery, status = client.predict("tiny-lumina-next", "", "", "256x256", FAST_STEPS, 4.0, 4.0, 1, 1,
                                     api_name="/generate_image")
    assert gallery == [] and "Failed" in status and "prompt is empty" in status
    gallery, status = client.predict("tiny-lumina-next", "x", "", "250x256", FAST_STEPS, 4.0, 4.0, 1, 1,
                                     api_name="/generate_image")
    assert "multiples of 16" in status
    gallery, status = client.predict("tiny-lumina-next", "a kite", "", "256x256", FAST_STEPS, 4.0, 4.0, 1, 1,
                                     api_name="/generate_image")
    assert len(gallery) == 1 and "Done" in status
    assert [r.status for r in studio.history.list_jobs()] == [JobStatus.DONE, JobStatus.FAILED, JobStatus.FAILED]


def test_lumina_next_controls_and_extrapolation_sizes_reach_the_job(served, studio):
    _, client = served
    gallery, status = client.predict("tiny-lumina-next", "a kite", "", "512x512", FAST_STEPS, 4.0, 6.0, 3, 1,
                                     "rk4", "none", 0.5, False, "plain", api_name="/generate_image")
    assert "Done" in status
    [record] = studio.history.list_jobs()
    assert {k: record.params[k] for k in ("solver", "rope_scaling", "watershed", "proportional_attn", "cfg_mode",
                                         "shift")} == {"solver": "rk4", "rope_scaling": "none", "watershed": 0.5,
                                                       "proportional_attn": False, "cfg_mode": "plain", "shift": 6.0}
    # The same form on Lumina-Image 2.0 sends none of Lumina-Next's options (its card has no such defaults).
    gallery, status = client.predict("tiny-lumina2", "a kite", "", "256x256", FAST_STEPS, 4.0, 6.0, 3, 1,
                                     "rk4", "none", 0.5, False, "plain", api_name="/generate_image")
    assert "Done" in status, status
    lumina2_job = studio.history.list_jobs()[0]
    assert lumina2_job.model_id == "tiny-lumina2" and lumina2_job.params["solver"] is None


def test_extrapolation_sizes_are_marked_in_the_size_picker(studio):
    from studio.ui.image_tab import _form_values

    values = _form_values(studio, "tiny-lumina-next")
    labels = dict((value, label) for label, value in values["sizes"])
    assert labels["256x256"] == "256x256" and labels["512x512"] == "512x512 (extrapolation)"
    assert labels["1024x256"].endswith("(extrapolation)")


def test_compose_tab_generates_from_the_grid(served, studio):
    _, client = served
    boxes = [""] * 16
    boxes[0], boxes[1], boxes[4], boxes[5] = "a moon", "a river", "a house", "a tree"  # row-major 4x4 form
    image, status = client.predict("tiny-lumina-next", 2, 2, 128, "", FAST_STEPS, 4.0, 4.0, 5, *boxes,
                                   api_name="/generate_compose")
    assert "Done" in status, status
    assert Image.open(image).size == (256, 256)
    [record] = studio.history.list_jobs()
    assert record.task == "compose" and record.params["captions"] == ["a moon", "a river", "a house", "a tree"]


def test_compose_layout_preview_numbers_the_cells_in_reading_order():
    from studio.ui.compose_tab import layout_preview

    html_text = layout_preview(2, 3, ["sky", "sun", "", "sea", "boat", "<b>x</b>"], 128, 128)
    assert [html_text.index(f"<b>{k}</b>") for k in range(1, 7)] == sorted(html_text.index(f"<b>{k}</b>")
                                                                          for k in range(1, 7))
    assert "repeat(3,1fr)" in html_text and "canvas 384x256" in html_text
    assert "empty" in html_text and "&lt;b&gt;x" in html_text  # captions are escaped


def test_anagram_tab_shows_the_picture_its_reading_and_the_animation(served, studio):
    _, client = served
    gallery, gif, status = client.predict("tiny-lumina-next", "an oil painting of", "", "256x256", FAST_STEPS, 4.0,
                                          4.0, 9, "an old man", "identity", "a waterfall", "rotate_180", "", None,
                                          "", None, api_name="/generate_anagram")
    assert "Done" in status, status
    assert len(gallery) == 2 and gif.endswith(".gif")
    [record] = studio.history.list_jobs()
    assert record.params["views"] == ["identity", "rotate_180"] and record.params["style"] == "an oil painting of"


def test_video_audio_and_music_tabs_generate(served, studio):
    _, client = served
    clip, status = client.predict("tiny-wan", "waves at dusk", "", None, "64x48", 9, 16, 2, 6.0, 3.0, 4,
                                  api_name="/generate_video")
    assert "Done" in status, status
    assert str(clip["video"] if isinstance(clip, dict) else clip).endswith(".mp4")
    player, picture, files, status = client.predict("tiny-stable-audio", "a door creaks", "Low quality.", 1.5, 3,
                                                    7.0, 1, "flac", 4, api_name="/generate_audio")
    assert "Done" in status, status
    assert player.endswith(".flac") and picture.endswith(".png") and len(files) == 1
    player, picture, files, status = client.predict("tiny-musicgen", "lo-fi piano", "", 1.5, 3.0, 1.0, 250, 10,
                                                    "wav", 4, api_name="/generate_music")
    assert "Done" in status, status
    assert player.endswith(".wav")
    assert [r.task for r in studio.history.list_jobs()] == ["music", "audio", "video"]
