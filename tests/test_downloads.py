"""The model manager against a real HTTP server of our own (tests/fakehub.py) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fakehub import FakeHub, hub_online
from helpers import LISTED_ONLY, image_params, write_listed_only_card

from studio.errors import InvalidInput
from studio.history import JobStatus
from studio.history.installed import InstallStatus
from studio.zoo.availability import is_available
from studio.services import Studio
from studio.settings import Settings
from studio.zoo.builtin import builtin_revision
from studio.zoo.hub import CHUNK_SIZE, repo_folder
from studio.zoo.user_cards import add_user_card

LUMINA_REPO = "Alpha-VLLM/Lumina-Next-SFT-diffusers"
BIG_REPO = "test-org/big-model"
BIG_FILE = "transformer/diffusion_pytorch_model.safetensors"
BIG_SIZE = 5 * CHUNK_SIZE + 12345
BIG_BYTES = hashlib.sha256(b"seed").digest() * (BIG_SIZE // 32 + 1)
BIG_BYTES = BIG_BYTES[:BIG_SIZE]


def big_card(card_id: str = "big-model", repo: str = BIG_REPO, **extra) -> dict:
    return {"id": card_id, "title": f"Big test model {card_id}", "family": "diffusers", "tasks": ["image"],
            "source": {"repo": repo}, "pipeline": "LuminaPipeline", "memory_gb": 1, "license": "mit", **extra}


@pytest.fixture
def hub(model_cache):
    tiny_snapshot = model_cache / "models--studio-builtin--tiny-lumina-next" / "snapshots" / builtin_revision(
        "tiny-lumina-next")
    files = {p.relative_to(tiny_snapshot).as_posix(): p.read_bytes() for p in tiny_snapshot.rglob("*") if p.is_file()}
    # Files a careful download leaves behind: pickles and docs.
    files["transformer/diffusion_pytorch_model.bin"] = b"pickle, never fetched" * 100
    files["README.md"] = b"# Lumina-Next-SFT\n"
    with FakeHub() as server, hub_online():
        server.add_repo(LUMINA_REPO, files)
        server.add_repo(BIG_REPO, {"model_index.json": b'{"_class_name": "LuminaPipeline"}', BIG_FILE: BIG_BYTES})
        yield server


def make_settings(tmp_path: Path, hub: FakeHub, **extra) -> Settings:
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=tmp_path / "cache",
                             hf_endpoint=hub.endpoint, **extra)
    settings.user_cards_dir.mkdir(parents=True, exist_ok=True)
    for name in ("big-model", "big-gated"):
        data = big_card(name, BIG_REPO if name == "big-model" else "test-org/gated", gated=name == "big-gated")
        (settings.user_cards_dir / f"{name}.yaml").write_text(yaml.safe_dump(data))
    write_listed_only_card(settings)
    return settings


@pytest.fixture
def studio_on_hub(tmp_path, hub):
    with Studio(make_settings(tmp_path, hub)) as studio:
        yield studio


def download(studio: Studio, card_id: str, timeout: float = 60):
    state = studio.downloads.enqueue(card_id)
    assert state.wait(timeout), "download did not finish"
    return state


def test_download_then_generate_through_the_normal_path(studio_on_hub, hub):
    studio = studio_on_hub
    card = studio.cards.get("lumina-next-sft")
    assert not is_available(card, studio.settings)

    state = download(studio, "lumina-next-sft")

    assert state.status is InstallStatus.READY, state.error
    assert state.bytes_done == state.bytes_total > 0
    record = studio.downloads.record("lumina-next-sft")
    assert record.status is InstallStatus.READY and record.bytes == state.bytes_total
    snapshot = Path(record.local_path)
    assert snapshot.parent.name == "snapshots" and (snapshot / "model_index.json").exists()
    assert not (snapshot / "transformer" / "diffusion_pytorch_model.bin").exists()
    assert hub.gets(LUMINA_REPO, "transformer/diffusion_pytorch_model.bin") == []
    assert hub.gets(LUMINA_REPO, "README.md") == []
    assert is_available(card, studio.settings)

    job = studio.run("image", image_params(model="lumina-next-sft"))
    assert job.status is JobStatus.DONE, job.error
    assert studio.downloads.record("lumina-next-sft").last_used_at is not None


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_cancel_then_resume_after_a_restart_fetches_no_byte_twice(tmp_path, hub):
    settings = make_settings(tmp_path, hub)
    hub.slow(BIG_REPO, BIG_FILE, 2 * CHUNK_SIZE)
    with Studio(settings) as studio:
        state = studio.downloads.enqueue("big-model")
        wait_for(lambda: state.bytes_done >= 2 * CHUNK_SIZE)
        assert studio.downloads.cancel("big-model")
        assert state.wait(30) and state.status is InstallStatus.CANCELLED
        assert studio.downloads.record("big-model").status is InstallStatus.CANCELLED
    partials = list(repo_folder(settings.model_cache, BIG_REPO).glob("blobs/*.studio-partial"))
    [partial] = partials
    kept = partial.stat().st_size
    assert kept >= 2 * CHUNK_SIZE

    hub.slow(BIG_REPO, BIG_FILE, 0)
    with Studio(settings) as studio:  # a new process, in effect
        state = download(studio, "big-model")
        assert state.status is InstallStatus.READY, state.error
    resumed = hub.gets(BIG_REPO, BIG_FILE)[-1]
    # No byte fetched twice: the resume asks for exactly what the partial file lacks.
    assert resumed.range_header == f"bytes={kept}-" and resumed.body_bytes_sent == BIG_SIZE - kept
    blob = repo_folder(settings.model_cache, BIG_REPO) / "blobs" / hashlib.sha256(BIG_BYTES).hexdigest()
    assert blob.read_bytes() == BIG_BYTES


def test_a_download_interrupted_by_a_crash_resumes_at_start_up(tmp_path, hub):
    settings = make_settings(tmp_path, hub)
    hub.slow(BIG_REPO, BIG_FILE, 2 * CHUNK_SIZE)
    with Studio(settings) as studio:
        state = studio.downloads.enqueue("big-model")
        wait_for(lambda: state.bytes_done >= CHUNK_SIZE)
        studio.downloads.cancel("big-model")
        state.wait(30)
        # What a crash leaves: the row still says downloading, the partial file is on disk.
        studio.installed.upsert("big-model", status=InstallStatus.DOWNLOADING)
    hub.slow(BIG_REPO, BIG_FILE, 0)
    with Studio(settings) as studio:
        state = studio.downloads.state("big-model")
        assert state is not None, "the interrupted download was not picked up at start-up"
        assert state.wait(60) and state.status is InstallStatus.READY
    first, resumed = hub.gets(BIG_REPO, BIG_FILE)
    kept = int(resumed.range_header.removeprefix("bytes=").rstrip("-"))
    assert kept >= CHUNK_SIZE and resumed.body_bytes_sent == BIG_SIZE - kept


def test_a_connection_dropped_midway_is_resumed_from_where_it_stopped(studio_on_hub, hub):
    hub.drop_after(BIG_REPO, BIG_FILE, 3 * CHUNK_SIZE)
    state = download(studio_on_hub, "big-model")
    assert state.status is InstallStatus.READY, state.error
    gets = hub.gets(BIG_REPO, BIG_FILE)
    assert [g.range_header for g in gets] == [None, f"bytes={3 * CHUNK_SIZE}-"]
    assert hub.bytes_served(BIG_REPO, BIG_FILE) == BIG_SIZE


def test_a_drop_inside_a_chunk_costs_at_most_that_chunk_again(studio_on_hub, hub):
    hub.drop_after(BIG_REPO, BIG_FILE, 3 * CHUNK_SIZE + 1000)
    state = download(studio_on_hub, "big-model")
    assert state.status is InstallStatus.READY, state.error
    assert BIG_SIZE < hub.bytes_served(BIG_REPO, BIG_FILE) <= BIG_SIZE + CHUNK_SIZE


def test_a_corrupted_file_is_detected_and_fetched_again(studio_on_hub, hub):
    hub.corrupt(BIG_REPO, BIG_FILE, times=1)
    state = download(studio_on_hub, "big-model")
    assert state.status is InstallStatus.READY, state.error
    assert len(hub.gets(BIG_REPO, BIG_FILE)) == 2
    blob = repo_folder(studio_on_hub.settings.model_cache, BIG_REPO) / "blobs" / hashlib.sha256(BIG_BYTES).hexdigest()
    assert blob.read_bytes() == BIG_BYTES


def test_a_file_corrupted_every_time_is_reported_and_nothing_is_kept(studio_on_hub, hub):
    hub.corrupt(BIG_REPO, BIG_FILE, times=2)
    state = download(studio_on_hub, "big-model")
    assert state.status is InstallStatus.FAILED and "corrupted" in state.error
    record = studio_on_hub.downloads.record("big-model")
    assert record.status is InstallStatus.FAILED and "corrupted" in record.error
    folder = repo_folder(studio_on_hub.settings.model_cache, BIG_REPO)
    assert not list(folder.glob("blobs/*.studio-partial"))
    assert not (folder / "blobs" / hashlib.sha256(BIG_BYTES).hexdigest()).exists()


def test_gated_repo_without_a_token_says_where_to_put_it(tmp_path, hub):
    hub.add_repo("test-org/gated", {"model_index.json": b"{}", BIG_FILE: b"w" * 2048}, gated=True, token="hf_secret")
    with Studio(make_settings(tmp_path / "a", hub)) as studio:
        state = download(studio, "big-gated")
        assert state.status is InstallStatus.FAILED
        assert "gated" in state.error and "HF_TOKEN" in state.error
    with Studio(make_settings(tmp_path / "b", hub, hf_token="hf_secret")) as studio:
        assert download(studio, "big-gated").status is InstallStatus.READY


def test_no_network_gives_a_clear_message_and_registers_nothing(studio_on_hub, hub):
    hub.set_offline(True)
    state = download(studio_on_hub, "lumina-next-sft")
    assert state.status is InstallStatus.FAILED and "Cannot reach the model hub" in state.error
    assert not (repo_folder(studio_on_hub.settings.model_cache, LUMINA_REPO) / "snapshots").exists()
    assert not is_available(studio_on_hub.cards.get("lumina-next-sft"), studio_on_hub.settings)


def test_not_enough_disk_space_stops_before_fetching(studio_on_hub, hub, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10 * 2**20))
    state = download(studio_on_hub, "big-model")
    assert state.status is InstallStatus.FAILED and "Not enough disk space" in state.error
    assert hub.gets(BIG_REPO, BIG_FILE) == []


def test_several_downloads_queue_and_a_queued_one_can_be_cancelled(studio_on_hub, hub):
    hub.slow(BIG_REPO, BIG_FILE, 4 * CHUNK_SIZE)
    first = studio_on_hub.downloads.enqueue("big-model")
    second = studio_on_hub.downloads.enqueue("lumina-next-sft")
    assert second.status is InstallStatus.QUEUED
    assert studio_on_hub.downloads.cancel("lumina-next-sft")
    assert first.wait(60) and first.status is InstallStatus.READY
    assert second.wait(10) and second.status is InstallStatus.CANCELLED
    assert hub.gets(LUMINA_REPO, "model_index.json") == []


def test_remove_deletes_only_that_model(studio_on_hub, hub):
    studio = studio_on_hub
    assert download(studio, "lumina-next-sft").status is InstallStatus.READY
    assert download(studio, "big-model").status is InstallStatus.READY
    freed = studio.downloads.remove("big-model")
    assert freed >= BIG_SIZE
    big = repo_folder(studio.settings.model_cache, BIG_REPO)
    assert not list(big.glob("blobs/*")) and not list(big.glob("snapshots/*"))
    assert studio.downloads.record("big-model") is None
    # The other download and the built-in models still work.
    assert studio.run("image", image_params(model="lumina-next-sft")).status is JobStatus.DONE
    assert studio.run("image", image_params(model="tiny-lumina2")).status is JobStatus.DONE


def test_add_a_model_from_a_repo_id(studio_on_hub):
    studio = studio_on_hub
    card = add_user_card(BIG_REPO, studio.settings, studio.cards)
    assert card.id == "test-org--big-model" and card.pipeline == "LuminaPipeline" and card.tasks == ["image"]
    assert (studio.settings.user_cards_dir / f"{card.id}.yaml").exists()
    assert card in studio.cards.for_task("image")
    with pytest.raises(InvalidInput, match="already in the studio"):
        add_user_card(BIG_REPO, studio.settings, studio.cards)
    with pytest.raises(InvalidInput, match="not a Hugging Face repo id"):
        add_user_card("../../etc/passwd", studio.settings, studio.cards)


def test_a_malformed_user_card_is_reported_and_the_rest_load(tmp_path, hub):
    settings = make_settings(tmp_path, hub)
    (settings.user_cards_dir / "broken.yaml").write_text("id: Not A Valid Id\n")
    with Studio(settings) as studio:
        assert [p.file.name for p in studio.cards.problems] == ["broken.yaml"]
        assert "big-model" in studio.cards.cards and "tiny-lumina-next" in studio.cards.cards


def test_cli_download_list_and_remove(tmp_path, hub):
    settings = make_settings(tmp_path, hub)
    env = {**os.environ, "STUDIO_HOME": str(settings.home), "STUDIO_MODEL_CACHE": str(settings.model_cache),
           "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "studio.cli", "models", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    got = cli("download", "big-model")
    assert got.returncode == 0, got.stderr
    assert "big-model ready" in got.stdout and "B/s" in got.stderr  # the terminal progress bar
    listing = cli("list").stdout
    assert any(line.startswith("big-model ") and "ready" in line for line in listing.splitlines())
    assert "not downloaded" in next(line for line in listing.splitlines() if line.startswith("lumina-next-sft "))
    removed = cli("remove", "big-model")
    assert removed.returncode == 0 and "freed" in removed.stdout
    assert "not downloaded" in next(line for line in cli("list").stdout.splitlines() if line.startswith("big-model "))


def test_models_tab_shows_status_progress_and_size(studio_on_hub, hub):
    from studio.ui.models_tab import COLUMNS, details, table_rows

    studio = studio_on_hub

    def row(card_id):
        return dict(zip(COLUMNS, next(r for r in table_rows(studio) if f"· {card_id} ·" in r[0])))

    assert row("lumina-next-sft")["Status"] == "not downloaded" and row("lumina-next-sft")["On disk"] == ""
    assert row("tiny-lumina2")["Status"] == "built in"
    assert row("stable-audio-open-1.0")["License"].endswith("gated")
    assert row("infinity-2b")["Status"] == "not downloaded"  # the native Infinity engine runs it
    assert row("lumina-t2i")["Status"] == "not downloaded"  # the native Lumina-T2I engine runs it
    assert row(LISTED_ONLY)["Status"] == "not yet runnable"
    assert row("llamagen-c2i-b-384")["Status"] == "not downloaded"
    assert row("wan2.1-t2v-1.3b")["Status"] == "not downloaded"

    hub.slow(BIG_REPO, BIG_FILE, 2 * CHUNK_SIZE)
    state = studio.downloads.enqueue("big-model")
    wait_for(lambda: state.bytes_done >= CHUNK_SIZE)
    assert row("big-model")["Status"].startswith("downloading ")
    assert "MB/s" in details(studio, "big-model") or "KB/s" in details(studio, "big-model")
    hub.slow(BIG_REPO, BIG_FILE, 0)
    assert state.wait(60)
    assert row("big-model")["Status"] == "ready" and row("big-model")["On disk"] == "5.0 MB"


def test_the_models_tab_message_follows_a_download_to_its_end(studio_on_hub, hub):
    from studio.ui.models_tab import download_message

    studio = studio_on_hub
    hub.set_offline(True)
    download(studio, "big-model")
    failed = download_message(studio, "big-model")
    assert failed.startswith("❌ Download of Big test model big-model failed: Cannot reach the model hub")
    assert "Downloading" not in failed

    hub.set_offline(False)
    hub.slow(BIG_REPO, BIG_FILE, 2 * CHUNK_SIZE)
    state = studio.downloads.enqueue("big-model")
    wait_for(lambda: state.bytes_done >= CHUNK_SIZE)
    assert download_message(studio, "big-model").startswith("Downloading Big test model big-model: ")
    assert "% · " in download_message(studio, "big-model")
    studio.downloads.cancel("big-model")
    assert state.wait(30)
    assert download_message(studio, "big-model") == "Cancelled Big test model big-model; Download resumes it."
    hub.slow(BIG_REPO, BIG_FILE, 0)
    download(studio, "big-model")
    assert download_message(studio, "big-model").startswith("✅ Big test model big-model is downloaded (5.0 MB)")


def test_each_table_row_names_its_model(studio_on_hub):
    from studio.ui.models_tab import card_of_row, table_rows

    studio = studio_on_hub
    assert sorted(card_of_row(studio, row) for row in table_rows(studio)) == sorted(studio.cards.cards)
    # A title may hold the cells' separator itself; the id is still found.
    assert card_of_row(studio, ["Big · model · v2 · big-model · image", "ready"]) == "big-model"
    assert card_of_row(studio, ["no card here · image"]) is None and card_of_row(studio, None) is None
