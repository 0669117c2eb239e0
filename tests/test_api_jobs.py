"""The queue API (/submit_job, /job_status, /list_history) over HTTP with `gradio_client`, on a
server launched as `studio serve` launches it (the outputs folder served, nothing else): a class
alone is enough for a class-conditional model, and a job's files come as paths under the outputs
folder with URLs that fetch them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from PIL import Image

from helpers import free_port, image_params

from studio.history import JobStatus
from studio.ui.app import build_app
from studio.ui.launch import launch_options


@pytest.fixture
def served(studio):
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True,
                        **launch_options(studio.settings.replace(port=free_port()), None))
    try:
        yield demo, Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def wait_done(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while (status := client.predict(job_id, api_name="/job_status"))["status"] in ("pending", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return status


def test_submit_job_with_only_a_class_id_draws_that_class(served, studio):
    _, client = served
    job = client.predict("image", {"model": "tiny-llamagen-c2i", "class_id": 207, "seed": 3}, api_name="/submit_job")
    assert job["error"] is None and job["status"] in ("pending", "running", "done")
    status = wait_done(client, job["id"])
    assert status["status"] == "done", status["error"]
    assert status["prompt"] == "207 · golden retriever"  # the class's label, as the Image tab records it
    assert status["params"]["class_id"] == 207 and len(status["files"]) == 1


def test_a_job_without_a_prompt_or_a_class_it_can_draw_is_refused_with_the_reason(served, studio):
    """(The old message for the first two was pydantic's "prompt: Field required".)"""
    _, client = served
    for params, reason in (
            ({"model": "tiny-llamagen-t2i"}, "prompt: the prompt is empty"),
            ({"model": "tiny-lumina-next", "seed": 1}, "prompt: the prompt is empty"),
            ({"model": "tiny-llamagen-t2i", "class_id": 5}, "draws from a text prompt, not an ImageNet class"),
            ({"model": "tiny-llamagen-c2i", "class_id": 1000}, "class_id: must be an ImageNet class number")):
        job = client.predict("image", params, api_name="/submit_job")
        assert job["status"] == "failed" and reason in job["error"], (params, job)
        assert studio.history.get_job(job["id"]).status is JobStatus.FAILED


def test_job_status_and_list_history_give_relative_paths_and_urls_that_fetch_the_files(served, studio, tmp_path):
    from studio.ui.api import file_entry

    demo, client = served
    done = studio.run("image", image_params(width=64, height=64, steps=2, num_images=2, prompt="a kite at dawn"))
    assert done.status is JobStatus.DONE, done.error
    status = client.predict(done.id, api_name="/job_status")
    listed = client.predict("kite", "", "", 1, api_name="/list_history")["jobs"]
    assert [j["id"] for j in listed] == [done.id] and listed[0]["files"] == status["files"]

    outputs = studio.settings.outputs_dir
    assert [f["kind"] for f in status["files"]] == ["image", "image"]
    for entry, saved in zip(status["files"], done.outputs):
        assert not Path(entry["relpath"]).is_absolute() and entry["relpath"] == saved.relpath
        assert (outputs / entry["relpath"]).is_file() and entry["mime"] == "image/png"
        # Absolute: the request named the server's root URL.
        assert entry["url"].startswith(f"{demo.local_url}gradio_api/file=")
        fetched = httpx.get(entry["url"], timeout=10)
        assert fetched.status_code == 200 and fetched.content == (outputs / entry["relpath"]).read_bytes()
    # Without a request that names the root, the URL is relative to it and maps to the same file.
    relative = file_entry(studio, studio.history.get_job(done.id).assets[0])
    assert relative["url"].startswith("/gradio_api/file=")
    fetched = httpx.get(demo.local_url.rstrip("/") + relative["url"], timeout=10)
    assert fetched.status_code == 200 and fetched.content == (outputs / relative["relpath"]).read_bytes()
    # The server's folders appear nowhere but inside the URLs.
    for answer in (status, listed[0]):
        text = json.dumps({**answer, "files": [{k: v for k, v in f.items() if k != "url"} for f in answer["files"]]})
        assert str(outputs) not in text and str(studio.settings.home) not in text

    # An input file (a start image) is named by its file name, not by where it is on the server.
    start = tmp_path / "start.png"
    Image.new("RGB", (64, 48)).save(start)
    refused = studio.jobs.submit("video", {"model": "tiny-wan-i2v", "prompt": "x", "image": str(start), "frames": 2})
    answer = client.predict(refused.id, api_name="/job_status")
    assert answer["status"] == "failed" and answer["params"]["image"] == "start.png"
    assert str(tmp_path) not in json.dumps(answer)
