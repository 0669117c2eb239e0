"""Images and videos are measured before they are decoded: a small file holding a huge picture (a
420 KB PNG of 12000x12000) is refused with a clear message wherever it enters — an upload to the
API, a job's start image or control clip, "Read parameters" — and the studio goes on (issue 17, item 5)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.errors import MediaError
from studio.history import JobStatus
from studio.media import read_png_metadata
from studio.media_av import save_mp4

from helpers import files_under

I2V = {"model": "tiny-wan-i2v", "prompt": "waves", "steps": 2, "seed": 5, "frames": 9}


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (12000, 12000)).save(path, optimize=True)  # 144 MP in a few hundred KB
    assert path.stat().st_size < 2_000_000
    return path


def test_a_decompression_bomb_as_a_start_image_is_refused_before_decoding(studio, bomb):
    job = studio.run("video", {**I2V, "image": str(bomb)})
    assert job.status is JobStatus.FAILED and "scale it down" in job.error, job.error
    assert files_under(studio.settings.outputs_dir) == []
    assert studio.run("image", {"model": "tiny-lumina-next", "prompt": "x", "steps": 2}).status is JobStatus.DONE


def test_an_input_larger_than_the_model_can_use_is_refused_by_its_own_limit(studio, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 2000), (40, 90, 200)).save(big)  # tiny-wan-i2v makes at most 256 px a side
    job = studio.run("video", {**I2V, "image": str(big)})
    assert job.status is JobStatus.FAILED and "2000x2000 (4 MP)" in job.error and "1024x1024" in job.error
    frames = (np.random.default_rng(0).random((12, 1088, 1280, 3)) * 255).astype(np.uint8)
    clip = str(save_mp4(frames, tmp_path, "clip.mp4", fps=16, title="wide", job={}).path)
    job = studio.run("video", {"model": "tiny-cogvideox-fun-control", "prompt": "a dancer", "steps": 2, "seed": 9,
                               "frames": 9, "control_video": clip})
    assert job.status is JobStatus.FAILED and "a frame of 'clip.mp4' is 1280x1088" in job.error, job.error


def test_reading_parameters_from_a_decompression_bomb_is_refused(bomb):
    with pytest.raises(MediaError):
        read_png_metadata(bomb)


def test_an_uploaded_decompression_bomb_is_refused_and_runs_nothing(studio, bomb):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from studio.ui.app import build_app

    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        with pytest.raises(AppError):  # refused while the upload is read, before any job
            client.predict(prompt="waves", model="tiny-wan-i2v", image=handle_file(str(bomb)), steps=2,
                           api_name="/generate_video")
        assert studio.history.list_jobs() == []
        clip, status = client.predict(prompt="waves", model="tiny-wan", steps=2, api_name="/generate_video")
        assert "Done" in status
    finally:
        demo.close()
