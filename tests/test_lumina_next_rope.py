"""Lumina-Next's RoPE tables are built once per size, scale and device, and change no pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina
from PIL import Image

from helpers import FAST_STEPS, image_params

from studio.engines import lumina_next
from studio.engines import lumina_next_anagram as fork
from studio.history import JobStatus


@pytest.fixture(autouse=True)
def fresh_cache():
    lumina_next.clear_rope_cache()
    yield
    lumina_next.clear_rope_cache()


def test_a_table_is_the_corner_of_the_full_one_to_the_bit():
    for table, grid, linear, ntk in ((384, (32, 16), 2.0, 1.0), (384, (16, 16), 1.0, 2.0), (512, (24, 40), 1.0, 1.5)):
        full = get_2d_rotary_pos_embed_lumina(72, table, table, linear_factor=linear, ntk_factor=ntk)
        ours = lumina_next.rope_table(72, table, grid, linear, ntk, "cpu")
        assert ours.is_contiguous() and torch.equal(ours, full[:grid[0], :grid[1]])


def test_it_is_built_once_per_key_and_each_input_makes_its_own():
    first = lumina_next.rope_table(16, 384, (8, 8), 2.0, 1.0, "cpu")
    assert lumina_next.rope_table(16, 384, (8, 8), 2.0, 1.0, torch.device("cpu")) is first
    others = [lumina_next.rope_table(16, 384, (8, 8), 1.0, 2.0, "cpu"),  # NTK: the other side of the watershed
              lumina_next.rope_table(16, 384, (8, 4), 2.0, 1.0, "cpu"),
              lumina_next.rope_table(32, 384, (8, 8), 2.0, 1.0, "cpu"),
              lumina_next.rope_table(16, 512, (8, 8), 2.0, 1.0, "cpu")]
    assert all(t is not first for t in others)
    assert not torch.equal(others[0], first)


def test_the_cache_is_bounded_and_keeps_the_most_recent(monkeypatch):
    monkeypatch.setattr(lumina_next, "ROPE_CACHE_SIZE", 2)
    a = lumina_next.rope_table(16, 384, (4, 4), 1.0, 1.0, "cpu")
    b = lumina_next.rope_table(16, 384, (4, 4), 2.0, 1.0, "cpu")
    assert lumina_next.rope_table(16, 384, (4, 4), 1.0, 1.0, "cpu") is a  # a is now the most recent
    lumina_next.rope_table(16, 384, (4, 4), 1.0, 2.0, "cpu")  # evicts b, the least recently used
    assert lumina_next.rope_table(16, 384, (4, 4), 1.0, 1.0, "cpu") is a
    assert lumina_next.rope_table(16, 384, (4, 4), 2.0, 1.0, "cpu") is not b
    assert len(lumina_next._rope_cache) == 2


def test_cache_size_zero_gives_the_uncached_full_table(monkeypatch):
    monkeypatch.setattr(lumina_next, "ROPE_CACHE_SIZE", 0)
    table = lumina_next.rope_table(16, 384, (4, 4), 2.0, 1.0, "cpu")
    assert table.shape[:2] == (384, 384) and not lumina_next._rope_cache


def png(job) -> np.ndarray:
    assert job.status is JobStatus.DONE, job.error
    return np.asarray(Image.open(job.outputs[0].path))


# A 512x256 canvas with its RoPE scaled to it: both of the demo's tables, under the regional attention.
COMPOSE = {"model": "tiny-lumina-next", "captions": ["a moon", "a tree"], "grid_rows": 1, "grid_cols": 2,
           "cell_width": 256, "cell_height": 256, "steps": FAST_STEPS, "seed": 5, "canvas_rope_scaling": True}
RUNS = {
    # Above the native 256: linear RoPE below the watershed, NTK above, both cached.
    "image": ("image", image_params(width=512, height=384, steps=4)),
    "compose": ("compose", COMPOSE),
}


@pytest.mark.parametrize("task, params", RUNS.values(), ids=RUNS.keys())
def test_cached_tables_give_the_same_pixels_as_building_them_every_call(studio, monkeypatch, task, params):
    cached = studio.run(task, params)
    assert lumina_next._rope_cache  # the run did use the cache
    monkeypatch.setattr(lumina_next, "ROPE_CACHE_SIZE", 0)
    lumina_next.clear_rope_cache()
    uncached = studio.run(task, params)
    assert not lumina_next._rope_cache
    for ours, theirs in zip(cached.outputs, uncached.outputs, strict=True):
        if ours.kind in ("image", "preview"):
            assert np.array_equal(np.asarray(Image.open(ours.path)), np.asarray(Image.open(theirs.path))), ours.kind
    assert png(cached).std() > 0  # a real picture, not a blank one that would match anyway


def test_cached_fork_tables_give_the_same_anagram(studio, monkeypatch):
    """The anagram fork's 512 table: the init phase at the native 256, the refine phase with NTK at 272.
    (Sampled from the engines: the job's animation would only add time.)"""
    from studio.engines import anagram

    opts = lumina_next.LuminaNextOptions(solver="euler", steps=2, shift=7.0, cfg=8.0, cfg_mode="lumina",
                                         rope_scaling="time_aware", watershed=0.3, proportional_attn=True)

    def picture():
        flow = fork.two_phase(pipe, ["an old man", "a snowy mountain"], "", 272, 272, opts)
        return anagram.sample(flow, view_names=["identity", "rotate_180"], width=272, height=272,
                              generator=torch.Generator().manual_seed(11), solver="euler", steps=2, shift=7.0)

    with studio.scheduler.acquire(studio.cards.get("tiny-lumina-next")) as lease, torch.no_grad():
        pipe = lease.pipeline
        cached = picture()
        assert {key[1] for key in lumina_next._rope_cache} == {fork.ROPE_TABLE}
        monkeypatch.setattr(lumina_next, "ROPE_CACHE_SIZE", 0)
        uncached = picture()
    assert torch.equal(cached.pixels, uncached.pixels) and cached.pixels.std() > 0
    assert np.array_equal(np.asarray(cached.preview), np.asarray(uncached.preview))


def test_the_model_output_is_identical_to_the_float(studio, monkeypatch):
    """One velocity evaluation either side of the watershed, compared as floats, not as 8-bit pixels."""
    opts = lumina_next.LuminaNextOptions(solver="euler", steps=4, shift=4.0, cfg=4.0, cfg_mode="lumina",
                                         rope_scaling="time_aware", watershed=0.3, proportional_attn=True)
    with studio.scheduler.acquire(studio.cards.get("tiny-lumina-next")) as lease:
        pipe = lease.pipeline
        embeds, mask = lumina_next.encode(pipe, ["a kite"], "", 1, True)
        x = torch.randn(1, pipe.transformer.config.in_channels, 48, 64, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            velocity = lumina_next.make_velocity(pipe, embeds, mask, 512, 384, opts)
            cached = [velocity(x, t) for t in (0.1, 0.6)]
            monkeypatch.setattr(lumina_next, "ROPE_CACHE_SIZE", 0)
            uncached = [velocity(x, t) for t in (0.1, 0.6)]
    assert all(torch.equal(a, b) for a, b in zip(cached, uncached))
    assert not torch.equal(cached[0], cached[1])


def test_the_fork_velocity_reads_the_same_table_as_before():
    full = fork.fork_rope(16, 2.0)
    assert full.shape[:2] == (fork.ROPE_TABLE, fork.ROPE_TABLE)
    assert torch.equal(fork.fork_rope(16, 2.0, (20, 12), "cpu"), full[:20, :12])
