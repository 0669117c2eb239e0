"""Image editing from every front end: the named API's uploads, the CLI's flags, the Image tab's mask from
ImageEditor layers and the size it fills from a start image."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from studio.history import JobStatus
from studio.ui.app import build_app
from studio.ui.image_edit_panel import editor_mask, fitted_size

from helpers import free_port, pixels
from test_cli import InProcess
from test_image_editing import mask_file, picture


def test_named_api_takes_image_and_mask_uploads(studio, tmp_path):
    start, mask = picture(tmp_path / "in.png"), mask_file(tmp_path / "mask.png", mode="RGBA")
    demo = build_app(studio)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(studio.settings.outputs_dir)])
    try:
        client = Client(demo.local_url, verbose=False)
        _, status = client.predict(prompt="a tin robot", model="tiny-lumina-next", width=128, height=128, steps=3,
                                   seed=3, image=handle_file(start), mask=handle_file(mask), strength=1.0,
                                   api_name="/generate_image")
        # A path in /submit_job would name a file on this machine: the mask, like the start image, is refused.
        with pytest.raises(Exception, match="mask: send input files through /generate_image, not as paths"):
            client.predict("image", {"model": "tiny-lumina-next", "prompt": "x", "mask": str(mask)},
                           api_name="/submit_job")
    finally:
        demo.close()
    assert "Done" in status, status
    [record] = studio.history.list_jobs()
    assert record.status is JobStatus.DONE
    kept = studio.settings.outputs_dir / "inputs"
    assert record.params["image"].startswith(str(kept)) and record.params["mask"].startswith(str(kept))
    out = pixels(studio.settings.outputs_dir / record.assets[0].path).astype(int)
    assert np.abs(out - pixels(start).astype(int))[:16].max() == 0  # outside the mask (and its blur): the input


def test_cli_generate_image_with_image_mask_and_strength(capsys, monkeypatch, tmp_path, model_cache):
    start, mask = picture(tmp_path / "in.png"), mask_file(tmp_path / "mask.png")
    studio = InProcess(capsys, monkeypatch, tmp_path / "home", model_cache)
    result = studio(["generate", "image", "--model", "tiny-lumina-next", "--prompt", "a boat", "--size",
                             "128x128", "--steps", "3", "--image", start, "--mask", mask, "--strength", "0.6",
                             "--mask-blur", "2", "--inpaint-area", "masked"])
    assert result.returncode == 0, result.stderr
    refused = studio(["generate", "image", "--model", "tiny-llamagen-c2i", "--class", "207", "--image", start])
    assert refused.returncode != 0 and "raster order" in refused.stderr


def test_the_editors_brush_layer_is_the_mask():
    layer = np.zeros((64, 64, 4), dtype=np.uint8)
    layer[10:20, 30:40] = (255, 255, 255, 255)
    path = editor_mask({"background": None, "layers": [layer], "composite": None})
    mask = np.asarray(Image.open(path))
    assert mask.shape == (64, 64) and mask[15, 35] == 255 and mask[0, 0] == 0 and mask.sum() == 100 * 255
    assert editor_mask({"background": None, "layers": [np.zeros((8, 8, 4), np.uint8)], "composite": None}) is None
    assert editor_mask(None) is None


def test_a_start_image_fills_a_size_the_model_takes(studio):
    card = studio.cards.get("tiny-lumina-next")
    assert fitted_size(500, 333, card) == "496x336"
    assert fitted_size(30, 5000, card) == "64x1024"
