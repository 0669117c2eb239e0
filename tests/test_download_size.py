"""What Download would fetch, shown in a model's details before the download: asked of the hub (our
fake one on 127.0.0.1) for the model looked at only, remembered, and "unknown" at once when the hub
cannot be reached or does not answer."""

from __future__ import annotations

import socket
import time

import pytest
import yaml

from fakehub import FakeHub, hub_online

from studio.model_manager import human_bytes
from studio.services import Studio
from studio.settings import Settings
from studio.ui.models_tab import details, table_rows
from studio.zoo import download_size
from studio.zoo.hub import CHUNK_SIZE, repo_folder

REPO = "test-org/sized"
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"
WEIGHTS_BYTES = bytes(range(256)) * (3 * CHUNK_SIZE // 256)
INDEX = b'{"_class_name": "LuminaPipeline"}'
ENCODER_REPO = "test-org/encoder"
ENCODER_FILES = {"config.json": b'{"d_model": 8}', "model.safetensors": b"e" * 4096}


def write_card(settings: Settings, card_id: str, **card) -> None:
    (settings.user_cards_dir / f"{card_id}.yaml").write_text(yaml.safe_dump({"id": card_id, **card}))


def make_studio(tmp_path, endpoint: str) -> Studio:
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=tmp_path / "cache", hf_endpoint=endpoint)
    settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
    generator = {"family": "diffusers", "tasks": ["image"], "pipeline": "LuminaPipeline", "memory_gb": 1,
                 "license": "mit"}
    write_card(settings, "sized", title="Sized model", source={"repo": REPO}, **generator)
    write_card(settings, "needs-encoder", title="Needs an encoder", source={"repo": REPO}, requires=["test-encoder"],
               **generator)
    write_card(settings, "test-encoder", title="Test encoder", family="t5", tasks=["component"],
               source={"repo": ENCODER_REPO}, library="transformers", pipeline="T5EncoderModel", memory_gb=0.1,
               license="mit")
    return Studio(settings)


@pytest.fixture
def hub():
    with FakeHub() as server, hub_online():
        server.add_repo(REPO, {"model_index.json": INDEX, WEIGHTS: WEIGHTS_BYTES, "README.md": b"# not fetched\n"})
        server.add_repo(ENCODER_REPO, ENCODER_FILES)
        yield server


@pytest.fixture
def studio(tmp_path, hub):
    with make_studio(tmp_path, hub.endpoint) as running:
        yield running


def api_calls(hub: FakeHub) -> list[str]:
    return [r.path for r in hub.requests if r.path.startswith("/api/")]


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_size_shows_before_the_download_and_the_hub_is_asked_once(studio, hub):
    table_rows(studio)
    assert api_calls(hub) == []  # listing the models asks the hub nothing

    text = details(studio, "sized", wait=10)

    total = len(INDEX) + len(WEIGHTS_BYTES)  # the README is not fetched, so not counted
    assert f"**Download size:** {human_bytes(total)} · none of it is here yet" in text
    for _ in range(3):  # the Models tab's timer asks every second: the answer is remembered
        assert human_bytes(total) in details(studio, "sized")
    assert len(api_calls(hub)) == 1 and REPO in api_calls(hub)[0]


def test_what_is_already_here_is_said_and_counted(studio, hub):
    hub.slow(REPO, WEIGHTS, CHUNK_SIZE)
    state = studio.downloads.enqueue("sized")
    wait_for(lambda: state.bytes_done >= CHUNK_SIZE + len(INDEX))
    studio.downloads.cancel("sized")
    assert state.wait(30)
    [partial] = repo_folder(studio.settings.model_cache, REPO).glob("blobs/*.studio-partial")
    here = len(INDEX) + partial.stat().st_size

    assert f"{human_bytes(here)} of it is already here" in details(studio, "sized", wait=10)

    hub.slow(REPO, WEIGHTS, 0)
    assert studio.downloads.enqueue("sized").wait(60)
    assert "all of it is here" in details(studio, "sized")


def test_the_components_it_needs_are_counted_in(studio, hub):
    text = details(studio, "needs-encoder", wait=10)
    total = len(INDEX) + len(WEIGHTS_BYTES) + sum(len(b) for b in ENCODER_FILES.values())
    assert f"**Download size:** {human_bytes(total)} (with Test encoder, which it needs)" in text


def test_offline_the_size_is_unknown_at_once_and_shows_once_the_hub_is_back(studio, hub, monkeypatch):
    hub.set_offline(True)
    started = time.monotonic()
    text = details(studio, "sized", wait=10)
    assert time.monotonic() - started < 3
    assert "**Download size:** unknown: Cannot reach the model hub" in text

    hub.set_offline(False)
    assert "unknown" in details(studio, "sized")  # a failure is remembered a while: no hub call per tick
    monkeypatch.setattr(download_size, "RETRY_FAILED_S", 0.0)
    assert "none of it is here yet" in details(studio, "sized", wait=10)


def test_a_hub_that_never_answers_does_not_hold_the_page(tmp_path):
    # A listening socket nobody serves: connections open, no answer ever comes.
    with socket.socket() as silent, hub_online():
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with make_studio(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}") as studio:
            studio.downloads.sizes.timeout = 0.5
            started = time.monotonic()
            assert "asking the hub" in details(studio, "sized", wait=0.1)
            assert time.monotonic() - started < 1
            wait_for(lambda: "unknown" in details(studio, "sized"), timeout=10)
            assert "Cannot reach the model hub" in details(studio, "sized")


def test_a_built_in_model_has_no_download_size(studio, hub):
    text = details(studio, "tiny-lumina2")
    assert "built in, no download needed" in text and "Download size" not in text
    assert api_calls(hub) == []
