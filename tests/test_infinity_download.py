"""Downloading an Infinity card from the fake hub (tests/fakehub.py): FoundationVision/Infinity holds
every checkpoint of the family in one repo (2B, 125M, 8B in two folders, five BSQ VAEs), so a card
must fetch its own transformer file, the VAE file of the card it requires and flan-t5-xl's usual
files (the other required card), and not one byte of the rest."""

from __future__ import annotations


import pytest

from fakehub import FakeHub, hub_online
from helpers import files_asked_for, snapshot_files

from studio.history.installed import InstallStatus
from studio.services import Studio
from studio.settings import Settings
from studio.zoo.availability import is_available

INFINITY = "FoundationVision/Infinity"
T5 = "google/flan-t5-xl"


def _bytes(name: str, size: int = 3000) -> bytes:
    return (name.encode() * (size // len(name) + 1))[:size]


# The repo as the hub lists it: every released checkpoint, the 8B's sharded folders, docs.
INFINITY_FILES = {name: _bytes(name) for name in (
    "infinity_2b_reg.pth", "infinity_125M_256x256.pth",
    "infinity_vae_d16.pth", "infinity_vae_d24.pth", "infinity_vae_d32.pth", "infinity_vae_d32reg.pth",
    "infinity_vae_d64.pth",
    "infinity_8b_weights/model-00001-of-00002.safetensors", "infinity_8b_weights/model-00002-of-00002.safetensors",
    "infinity_8b_weights/model.safetensors.index.json",
    "infinity_8b_512x512_weights/model-00001-of-00001.safetensors",
    "infinity_8b_512x512_weights/model.safetensors.index.json",
    "README.md", ".gitattributes",
)}
# flan-t5-xl: the safetensors shards and configs its card fetches, and the other formats it does not.
T5_FETCHED = {"config.json", "generation_config.json", "special_tokens_map.json", "spiece.model", "tokenizer.json",
              "tokenizer_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
              "model.safetensors.index.json"}
T5_FILES = {name: _bytes(name) for name in (*T5_FETCHED, "pytorch_model-00001-of-00002.bin",
                                            "pytorch_model-00002-of-00002.bin", "tf_model.h5",
                                            "flax_model.msgpack", "README.md")}


@pytest.fixture
def hub():
    with FakeHub() as server, hub_online():
        server.add_repo(INFINITY, INFINITY_FILES)
        server.add_repo(T5, T5_FILES)
        yield server


@pytest.fixture
def studio(tmp_path, hub):
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=tmp_path / "cache", hf_endpoint=hub.endpoint)
    with Studio(settings) as running:
        yield running


@pytest.mark.parametrize("card_id, transformer, vae_card, vae_file", [
    ("infinity-2b", "infinity_2b_reg.pth", "infinity-vae-d32reg", "infinity_vae_d32reg.pth"),
    ("infinity-125m", "infinity_125M_256x256.pth", "infinity-vae-d16", "infinity_vae_d16.pth"),
])
def test_a_card_fetches_its_checkpoint_its_vae_and_flan_t5_only(studio, hub, card_id, transformer, vae_card, vae_file):
    card = studio.cards.get(card_id)
    assert card.requires == [vae_card, "flan-t5-xl"]
    assert not is_available(card, studio.settings)

    size = studio.downloads.size(card_id, wait=30)  # what the Models tab says Download will fetch
    own = {transformer, vae_file}
    assert size.total == sum(len(INFINITY_FILES[f]) for f in own) + sum(len(T5_FILES[f]) for f in T5_FETCHED)
    assert set(size.components) == {studio.cards.get(vae_card).title, studio.cards.get("flan-t5-xl").title}

    state = studio.downloads.enqueue(card_id)  # queues the two required cards first
    for queued in (vae_card, "flan-t5-xl", card_id):
        done = studio.downloads.state(queued)
        assert done.wait(60), f"{queued} did not finish"
        assert done.status is InstallStatus.READY, (queued, done.error)
    assert state.status is InstallStatus.READY

    assert files_asked_for(hub) == {INFINITY: own, T5: T5_FETCHED}
    for name in own:
        assert hub.bytes_served(INFINITY, name) == len(INFINITY_FILES[name])
    assert snapshot_files(studio, INFINITY) == own
    assert snapshot_files(studio, T5) == T5_FETCHED
    for needed in (card_id, vae_card, "flan-t5-xl"):
        assert is_available(studio.cards.get(needed), studio.settings), needed
    # The other transformer and VAEs of the repo stay away: their cards are not available.
    for other in ("infinity-2b", "infinity-125m", "infinity-vae-d16", "infinity-vae-d24", "infinity-vae-d32",
                  "infinity-vae-d32reg", "infinity-vae-d64"):
        if other not in (card_id, vae_card):
            assert not is_available(studio.cards.get(other), studio.settings), other
