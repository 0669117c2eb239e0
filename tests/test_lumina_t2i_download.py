"""Downloading Lumina-T2I from the fake hub (tests/fakehub.py): Alpha-VLLM/Lumina-T2I holds the Flag-DiT
twice (safetensors and a .pth pickle), so the card must fetch the safetensors and model_args.pth only; it
requires the gated meta-llama/Llama-2-7b-hf (its text encoder: the hub's usual files, safetensors not .bin)
and stabilityai/sdxl-vae (its diffusers folder, not the single-file copy). Without a token the LLaMA
download fails saying what to do, and the model, though its own files arrive, is not shown as ready (the
Models tab says what it still needs) and cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakehub import FakeHub, hub_online
from helpers import files_asked_for, snapshot_files

from studio.history import JobStatus
from studio.history.installed import InstallStatus
from studio.services import Studio
from studio.settings import Settings
from studio.model_manager import status_text
from studio.ui.common import default_model, model_choices
from studio.zoo.availability import is_available
from studio.zoo.hub import repo_folder

LUMINA = "Alpha-VLLM/Lumina-T2I"
LLAMA = "meta-llama/Llama-2-7b-hf"
VAE = "stabilityai/sdxl-vae"
TOKEN = "hf_llama_licence_accepted"


def _bytes(name: str, size: int) -> bytes:
    return (name.encode() * (size // len(name) + 1))[:size]


def _repo(sizes: dict[str, int]) -> dict[str, bytes]:
    return {name: _bytes(name, size) for name, size in sizes.items()}


# Sizes differ from file to file, so a total that counts a wrong file cannot come out right. Small files
# (under fakehub's 1024-byte LFS threshold, as model_args.pth's 629 B are) are plain git blobs.
LUMINA_FETCHED = {"consolidated.00-of-01.safetensors", "model_args.pth"}
LUMINA_FILES = _repo({"consolidated.00-of-01.pth": 20_211, "consolidated.00-of-01.safetensors": 20_202,
                      "model_args.pth": 629, "README.md": 1_311, "lumina-logo.png": 5_120, ".gitattributes": 1_519})
# What the hub's default patterns fetch for a transformers card (studio.zoo.hub.DEFAULT_ALLOW minus
# DEFAULT_IGNORE): the configs, the tokenizer, the safetensors shards and their index, LICENSE.txt
# (*.txt), and pytorch_model.bin.index.json too (*.json; *.bin does not match a name ending .json) - but
# neither .bin shard, nor README.md, USE_POLICY.md or the PDF.
LLAMA_FETCHED = {"config.json", "generation_config.json", "model-00001-of-00002.safetensors",
                 "model-00002-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin.index.json",
                 "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                 "LICENSE.txt"}
LLAMA_FILES = _repo({"config.json": 614, "generation_config.json": 188, "model-00001-of-00002.safetensors": 9_976,
                     "model-00002-of-00002.safetensors": 3_500, "model.safetensors.index.json": 2_649,
                     "pytorch_model-00001-of-00002.bin": 9_877, "pytorch_model-00002-of-00002.bin": 3_619,
                     "pytorch_model.bin.index.json": 2_623, "special_tokens_map.json": 414,
                     "tokenizer.json": 1_842, "tokenizer.model": 4_999, "tokenizer_config.json": 776,
                     "LICENSE.txt": 7_020, "README.md": 10_400, "Responsible-Use-Guide.pdf": 11_300,
                     "USE_POLICY.md": 4_766})
VAE_FETCHED = {"config.json", "diffusion_pytorch_model.safetensors"}
VAE_FILES = _repo({"config.json": 607, "diffusion_pytorch_model.bin": 3_350,
                   "diffusion_pytorch_model.safetensors": 3_340, "sdxl_vae.safetensors": 3_345, "README.md": 1_200,
                   ".gitattributes": 1_519})
FILES = {LUMINA: LUMINA_FILES, LLAMA: LLAMA_FILES, VAE: VAE_FILES}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    # No token but the one a test gives the studio: none from this machine's environment or `hf auth login`.
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-login" / "stored_tokens"))
    with FakeHub() as server, hub_online():
        server.add_repo(LUMINA, LUMINA_FILES)
        server.add_repo(LLAMA, LLAMA_FILES, gated=True, token=TOKEN)
        server.add_repo(VAE, VAE_FILES)
        yield server


def open_studio(tmp_path: Path, hub: FakeHub, env: dict[str, str]) -> Studio:
    settings = Settings.load(env=env, home=tmp_path / "home", model_cache=tmp_path / "cache",
                             hf_endpoint=hub.endpoint)
    return Studio(settings)


def finish(studio: Studio, card_id: str):
    state = studio.downloads.state(card_id)
    assert state is not None, f"{card_id} was not queued"
    assert state.wait(30), f"{card_id} did not finish"
    return state


def test_with_a_token_it_fetches_the_safetensors_dit_llama_and_the_vae_folder_only(tmp_path, hub):
    with open_studio(tmp_path, hub, {"HF_TOKEN": TOKEN}) as studio:
        assert studio.settings.hf_token == TOKEN
        card = studio.cards.get("lumina-t2i")
        assert card.requires == ["llama-2-7b", "sdxl-vae"]
        assert not is_available(card, studio.settings)

        size = studio.downloads.size("lumina-t2i", wait=30)  # what the Models tab says Download will fetch
        assert size.error is None and size.total == (
            sum(len(LUMINA_FILES[f]) for f in LUMINA_FETCHED) + sum(len(LLAMA_FILES[f]) for f in LLAMA_FETCHED)
            + sum(len(VAE_FILES[f]) for f in VAE_FETCHED))
        assert set(size.components) == {studio.cards.get("llama-2-7b").title, studio.cards.get("sdxl-vae").title}

        state = studio.downloads.enqueue("lumina-t2i")  # queues the two required cards first
        for queued in ("llama-2-7b", "sdxl-vae", "lumina-t2i"):
            done = finish(studio, queued)
            assert done.status is InstallStatus.READY, (queued, done.error)
        assert state.status is InstallStatus.READY

        # Not the 20 GB .pth copy, not LLaMA's .bin shards, not the single-file VAE; no docs.
        assert files_asked_for(hub) == {LUMINA: LUMINA_FETCHED, LLAMA: LLAMA_FETCHED, VAE: VAE_FETCHED}
        for repo, fetched in (LUMINA, LUMINA_FETCHED), (LLAMA, LLAMA_FETCHED), (VAE, VAE_FETCHED):
            for name in fetched:
                assert hub.bytes_served(repo, name) == len(FILES[repo][name]), (repo, name)
            assert snapshot_files(studio, repo) == fetched, repo
        for needed in ("lumina-t2i", "llama-2-7b", "sdxl-vae"):
            assert is_available(studio.cards.get(needed), studio.settings), needed
        assert studio.downloads.record("lumina-t2i").status is InstallStatus.READY


def test_without_a_token_llama_fails_saying_what_to_do_and_the_model_cannot_run(tmp_path, hub):
    with open_studio(tmp_path, hub, {}) as studio:
        assert studio.settings.hf_token is None
        gated_message = (f"{LLAMA} is gated: accept its license on {hub.endpoint}/{LLAMA} with your account, then "
                         "give the studio an access token (set HF_TOKEN in the environment, or run `hf auth login`) "
                         "and try again.")

        # The Models tab already says why it cannot size the download.
        size = studio.downloads.size("lumina-t2i", wait=30)
        assert size.total is None and not size.pending and size.error == gated_message

        studio.downloads.enqueue("lumina-t2i")
        llama = finish(studio, "llama-2-7b")
        assert llama.status is InstallStatus.FAILED and llama.error == gated_message
        record = studio.downloads.record("llama-2-7b")
        assert record.status is InstallStatus.FAILED and record.error == gated_message
        # The other two are not gated: the code fetches them all the same (each download stands alone).
        for other in ("sdxl-vae", "lumina-t2i"):
            done = finish(studio, other)
            assert done.status is InstallStatus.READY, (other, done.error)

        # Nothing of the gated repo was asked for file by file, nor saved.
        asked = files_asked_for(hub)
        assert LLAMA not in asked and asked == {LUMINA: LUMINA_FETCHED, VAE: VAE_FETCHED}
        assert {r.status for r in hub.requests if r.repo_id == LLAMA} == {401}
        assert not repo_folder(studio.settings.model_cache, LLAMA).exists()
        assert not is_available(studio.cards.get("llama-2-7b"), studio.settings)
        assert snapshot_files(studio, LUMINA) == LUMINA_FETCHED
        assert snapshot_files(studio, VAE) == VAE_FETCHED

        # The card's own files are here, but it is not ready: the Models tab and the CLI say what it
        # still needs, its picker entry says it is not downloaded, and no tab opens on it.
        title = studio.cards.get("llama-2-7b").title
        assert is_available(studio.cards.get("lumina-t2i"), studio.settings)
        assert status_text(studio, studio.cards.get("lumina-t2i")) == f"needs {title}: not downloaded"
        labels = dict((v, label) for label, v in model_choices(studio, "image"))
        assert labels["lumina-t2i"].endswith("(not downloaded)")
        assert default_model(studio, "image") != "lumina-t2i"
        size = studio.downloads.size("lumina-t2i", wait=30)  # Download again would fetch the text encoder
        assert size.components == (title,) and size.error == gated_message
        # Running it fails at once, naming the missing text encoder and how to get it.
        job = studio.run("image", {"model": "lumina-t2i", "prompt": "a lighthouse at dusk", "steps": 2,
                                   "seed": 1, "width": 1024, "height": 1024}, timeout=30)
        assert job.status is JobStatus.FAILED, job.status
        assert f"{title} is not in the model cache" in job.error, job.error
        assert "studio models download llama-2-7b" in job.error
        assert studio.history.get_job(job.id).error == job.error
