"""The web UI: the app builds with every tab, and its Image handler makes an image over HTTP."""


import gradio as gr
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from studio.history import JobStatus
from studio.ui.app import build_app

from helpers import FAST_STEPS, LISTED_ONLY, free_port, write_listed_only_card


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
    assert tab_labels(demo) == ["Image", "Video", "Audio", "Music", "Compositional", "Anagrams", "Upscale", "Queue",
                                "Gallery", "Presets", "Models"]
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str)]
    assert not any("Not available yet" in t for t in texts)


def test_gradios_temp_cache_is_swept(studio):
    """Every result and upload is copied into Gradio's cache: without a sweep it grows without bound."""
    every, older_than = build_app(studio).delete_cache
    assert every <= 3600 and older_than <= 24 * 3600


def test_image_form_starts_from_the_models_card(studio):
    demo = build_app(studio)
    dropdowns = {b.elem_id or b.label: b for b in demo.blocks.values() if isinstance(b, gr.Dropdown)}
    # No real model is downloaded here, so the built-in mini one (trained on simple shapes) is preselected.
    model = dropdowns["image-model"]
    assert model.value == "mini-lumina-next"
    labels = dict((value, label) for label, value in model.choices)
    assert "(not downloaded)" in labels["lumina-next-sft"] and "trained on simple shapes" in labels[model.value]
    assert "test model" in labels["tiny-lumina-next"]
    card = studio.cards.get(model.value)
    assert dropdowns["image-size"].value == f"{card.defaults['width']}x{card.defaults['height']}"


def test_generate_over_http_returns_the_image_and_records_the_job(served, studio):
    _, client = served
    gallery, status = client.predict(prompt="a tin robot", model="tiny-lumina-next", width=256, height=256,
                                     steps=FAST_STEPS, seed=11, api_name="/generate_image")
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
    gallery, status = client.predict(prompt="", model="tiny-lumina-next", steps=FAST_STEPS, api_name="/generate_image")
    assert gallery == [] and "Failed" in status and "prompt is empty" in status
    gallery, status = client.predict(prompt="x", width=250, height=256, steps=FAST_STEPS, api_name="/generate_image")
    assert "multiples of 16" in status
    gallery, status = client.predict(prompt="x", model="tiny-lumina2", watershed=0.5, api_name="/generate_image")
    assert "watershed: Lumina-Next&#x27;s options apply to Lumina-Next models only" in status
    gallery, status = client.predict(prompt="a kite", steps=FAST_STEPS, api_name="/generate_image")
    assert len(gallery) == 1 and "Done" in status
    assert [r.status for r in studio.history.list_jobs()] == [JobStatus.DONE, JobStatus.FAILED, JobStatus.FAILED,
                                                             JobStatus.FAILED]


def test_lumina_next_controls_and_extrapolation_sizes_reach_the_job(served, studio):
    _, client = served
    gallery, status = client.predict(prompt="a kite", model="tiny-lumina-next", width=512, height=512,
                                     steps=FAST_STEPS, shift=6.0, seed=3, solver="rk4", rope_scaling="none",
                                     watershed=0.5, proportional_attn=False, cfg_mode="plain",
                                     api_name="/generate_image")
    assert "Done" in status
    [record] = studio.history.list_jobs()
    assert {k: record.params[k] for k in ("solver", "rope_scaling", "watershed", "proportional_attn", "cfg_mode",
                                         "shift")} == {"solver": "rk4", "rope_scaling": "none", "watershed": 0.5,
                                                       "proportional_attn": False, "cfg_mode": "plain", "shift": 6.0}


def test_every_generate_endpoint_takes_named_parameters_and_card_defaults_for_the_rest(served, studio):
    demo, client = served
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    generate = sorted(name for name in named if name.startswith("/generate_"))
    assert generate == ["/generate_anagram", "/generate_audio", "/generate_compose", "/generate_image",
                        "/generate_music", "/generate_video"]
    for name in generate:
        params = named[name]["parameters"]
        assert not any(p["parameter_name"].startswith("param_") for p in params), name
        assert [p["parameter_name"] for p in params if not p["parameter_has_default"]] in (["prompt"], ["captions"],
                                                                                           ["prompts"]), name
    # Internal plumbing (model pickers, timers, refreshes) is not part of the API.
    # Upscaling makes nothing new: /upscale_image (tests/test_upscale.py), the image its one required field.
    assert [p["parameter_name"] for p in named["/upscale_image"]["parameters"] if not p["parameter_has_default"]] == [
        "image"]
    assert set(named) - set(generate) == {"/submit_job", "/job_status", "/cancel_job", "/queue_status",
                                          "/pause_queue", "/resume_queue", "/list_history", "/upscale_image"}
    assert "shift" in [p["parameter_name"] for p in named["/generate_video"]["parameters"]]
    assert {"temperature", "top_k"} <= {p["parameter_name"] for p in named["/generate_music"]["parameters"]}

    # Only the prompt: the tab's default model, and every value its card's default.
    gallery, status = client.predict(prompt="a lighthouse", seed=5, api_name="/generate_image")
    assert "Done" in status, status
    job = studio.history.list_jobs()[0]
    card = studio.cards.get(job.model_id)
    assert job.model_id == demo_default(studio) and card.runnable
    assert {k: job.params[k] for k in ("width", "height", "steps", "cfg")} == {
        k: card.defaults[k] for k in ("width", "height", "steps", "cfg")}
    # A Lumina-Next model: what its card leaves out, its family's defaults (the authors' demo).
    gallery, status = client.predict(prompt="a lighthouse", model="tiny-lumina-next", seed=5,
                                     api_name="/generate_image")
    job = studio.history.list_jobs()[0]
    assert {k: job.params[k] for k in ("solver", "watershed", "rope_scaling", "proportional_attn", "cfg_mode")} == {
        "solver": "midpoint", "watershed": 0.3, "rope_scaling": "time_aware", "proportional_attn": True,
        "cfg_mode": "lumina"}


def test_the_api_applies_a_style_by_name_and_checks_whole_numbers(served, studio):
    _, client = served
    style = studio.presets.styles("image")[0]
    gallery, status = client.predict(prompt="a kite", model="tiny-lumina-next", steps=FAST_STEPS, style=style.name,
                                     api_name="/generate_image")
    assert "Done" in status, status
    job = studio.history.list_jobs()[0]
    assert job.prompt != "a kite" and "a kite" in job.prompt  # the template was applied around the prompt
    with pytest.raises(Exception, match="no style named"):
        client.predict(prompt="a kite", style="No Such Style", api_name="/generate_image")
    gallery, status = client.predict(prompt="a kite", model="tiny-lumina-next", steps=2.5, api_name="/generate_image")
    assert "Failed" in status and "steps" in status  # refused, not rounded to 2 or 3
    gallery, status = client.predict(prompt="x", model="tiny-llamagen-c2i", class_id=207.0, top_k=10,
                                     api_name="/generate_image")
    assert "Done" in status, status
    assert studio.history.list_jobs()[0].params["class_id"] == 207


def demo_default(studio) -> str:
    from studio.ui.common import default_model

    return default_model(studio, "image")


def test_the_use_via_api_example_for_generate_image_runs_when_pasted(served, studio):
    import httpx

    demo, _ = served
    info = httpx.get(f"{demo.local_url}gradio_api/info").json()
    snippet = info["named_endpoints"]["/generate_image"]["code_snippets"]["python"]
    assert "predict(" in snippet and "param_0" not in snippet
    namespace: dict = {}
    exec(compile(snippet, "use-via-api", "exec"), namespace)  # the page's Python example, as a user pastes it
    gallery, status = namespace["result"]
    assert "Done" in status, status
    assert studio.history.list_jobs()[0].status is JobStatus.DONE


def test_a_not_yet_runnable_model_is_listed_as_such_and_cannot_start(tmp_path, model_cache):
    from studio.services import Studio
    from studio.settings import Settings
    from studio.ui.common import model_choices

    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache)
    write_listed_only_card(settings)
    with Studio(settings) as studio:
        labels = dict((value, label) for label, value in model_choices(studio, "image"))
        assert labels[LISTED_ONLY].endswith("(not yet runnable)")
        demo = build_app(studio)
        demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
        try:
            client = Client(demo.local_url, verbose=False)
            gallery, status = client.predict(prompt="a kite", model=LISTED_ONLY, api_name="/generate_image")
        finally:
            demo.close()
    assert "Failed" in status and "cannot run it yet" in status and "LlamaGen" not in status


def test_extrapolation_sizes_are_marked_in_the_size_picker(studio):
    from studio.ui.image_tab import _form_values

    values = _form_values(studio, "tiny-lumina-next")
    labels = dict((value, label) for label, value in values["sizes"])
    assert labels["256x256"] == "256x256" and labels["512x512"] == "512x512 (extrapolation)"
    assert labels["1024x256"].endswith("(extrapolation)")


def test_compose_tab_generates_from_the_grid(served, studio):
    _, client = served
    image, status = client.predict(captions=["a moon", "a river", "a house", "a tree"], grid_rows=2, grid_cols=2,
                                   cell_width=128, cell_height=128, steps=FAST_STEPS, seed=5,
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


def test_anagram_tab_shows_the_picture_its_reading_the_preview_and_the_animation(served, studio):
    _, client = served
    gallery, preview, gif, status = client.predict(prompts=["an old man", "a waterfall"], style="an oil painting of",
                                          width=256, height=256, steps=FAST_STEPS, seed=9,
                                          api_name="/generate_anagram")
    assert "Done" in status, status
    assert len(gallery) == 2 and preview.endswith(".png") and gif.endswith(".gif")
    [record] = studio.history.list_jobs()
    assert record.params["views"] == ["identity", "rotate_180"] and record.params["style"] == "an oil painting of"


def test_video_audio_and_music_tabs_generate(served, studio):
    _, client = served
    clip, status = client.predict(prompt="waves at dusk", model="tiny-wan", steps=2, shift=3.0, seed=4,
                                  api_name="/generate_video")
    assert "Done" in status, status
    assert str(clip["video"] if isinstance(clip, dict) else clip).endswith(".mp4")
    player, picture, files, status = client.predict(prompt="a door creaks", model="tiny-stable-audio", seconds=1.5,
                                                    steps=3, format="flac", seed=4, api_name="/generate_audio")
    assert "Done" in status, status
    assert player.endswith(".flac") and picture.endswith(".png") and len(files) == 1
    player, picture, files, status = client.predict(prompt="lo-fi piano", model="tiny-musicgen", seconds=1.5,
                                                    top_k=100, seed=4, api_name="/generate_music")
    assert "Done" in status, status
    assert player.endswith(".wav")
    jobs = studio.history.list_jobs()
    assert [r.task for r in jobs] == ["music", "audio", "video"]
    assert jobs[0].params["temperature"] == 1.0 and jobs[0].params["top_k"] == 100  # MusicGen's default, ours


def test_a_wrong_type_is_refused_by_name_not_run_as_text(served, studio):
    _, client = served
    with pytest.raises(Exception, match="prompt: must be text"):
        client.predict(prompt=["a", "b"], model="tiny-lumina-next", api_name="/generate_image")
    with pytest.raises(Exception, match="steps: must be a number"):
        client.predict(prompt="a kite", steps="many", api_name="/generate_image")
    assert studio.history.list_jobs() == []  # nothing ran as "['a', 'b']"
    gallery, status = client.predict(prompt="a kite", steps=FAST_STEPS, api_name="/generate_image")
    assert "Done" in status
