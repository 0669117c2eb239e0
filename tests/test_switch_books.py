"""What a model switch leaves behind: the scheduler's books (bytes on the device, bytes parked) agree
with the tensors the pipelines really hold after loads, moves, evictions and reloads, and a cold load
gives the checkpoint's very weights in the dtype asked for. On the CPU, with the tiny models."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from helpers import Clock

from studio.engines.bundle import ModuleBundle
from studio.runtime.footprint import Footprint, storage_bytes
from studio.runtime.loader import load_pipeline
from studio.runtime.memory import MemoryScheduler
from studio.runtime.placement import Placement, apply_placement, park, torch_components
from studio.settings import REPO_ROOT
from studio.zoo.builtin import builtin_revision
from studio.zoo.cards import CardRegistry

CARDS = CardRegistry.load([REPO_ROOT / "model_zoo"])
NEXT, LUMINA2 = CARDS.get("tiny-lumina-next"), CARDS.get("tiny-lumina2")
NEXT_B = NEXT.model_copy(update={"id": "tiny-lumina-next-b"})


def module_bytes(modules) -> int:
    """Bytes of the tensors these modules hold right now, walked afresh, each tensor once."""
    seen = {id(t): storage_bytes(t) for m in modules for t in (*m.parameters(), *m.buffers())}
    return sum(seen.values())


def real_bytes(pipelines) -> int:
    return module_bytes([m for pipe in pipelines for m in torch_components(pipe).values()])


def assert_books_hold(s: MemoryScheduler, pipes: dict) -> None:
    placed = [pipes[cid] for cid in s.resident() if s.placement_of(cid) is Placement.FULL]
    parked = [pipes[cid] for cid in s.resident() if s.placement_of(cid) is None]
    assert s.device_used() == real_bytes(placed)
    assert s.ram_used() == real_bytes(parked)
    assert {r.card_id: r.bytes for r in s.residents()} == {cid: real_bytes([pipes[cid]]) for cid in s.resident()}


def test_the_books_match_the_tensors_through_loads_moves_and_evictions(settings):
    live: dict = {}  # card id -> the pipeline the scheduler holds now (a reload replaces it)

    def loader(card):
        live[card.id] = load_pipeline(card, settings)
        return live[card.id]

    sizes = {c.id: Footprint.measure(load_pipeline(c, settings)).total for c in (NEXT, LUMINA2)}
    two = sizes[NEXT.id] + sizes[LUMINA2.id]
    # The device holds two models, RAM parks one: each newcomer moves the least recently used to RAM.
    s = MemoryScheduler(loader, device="cpu", device_budget=two, ram_budget=max(sizes.values()), clock=Clock())
    for card in (NEXT, LUMINA2, NEXT_B, NEXT, LUMINA2, NEXT_B):
        with s.acquire(card) as lease:
            assert lease.pipeline is live[card.id]
            assert_books_hold(s, live)
        assert_books_hold(s, live)
    assert s.device_used() <= two and s.ram_used() <= max(sizes.values())
    assert any(s.placement_of(c) is None for c in s.resident()), "something should have been parked"

    # Out-of-memory recovery: offloaded, then group offload (whose hooks cannot be removed: a reload).
    with s.acquire(NEXT):
        s.step_down(NEXT)
        assert s.placement_of(NEXT.id) is Placement.MODEL_OFFLOAD
        # In use and offloaded, it counts its peak (its largest component) on the device; the rest is parked.
        peak = max(module_bytes([m]) for m in torch_components(live[NEXT.id]).values())
        assert s.device_used() == peak
        assert s.ram_used() == real_bytes([live[c] for c in s.resident() if s.placement_of(c) is None])
        s.step_down(NEXT)
        assert s.placement_of(NEXT.id) is Placement.GROUP_OFFLOAD
        s.step_down(NEXT)  # group offload -> reloaded from disk under sequential offload
        assert s.placement_of(NEXT.id) is Placement.SEQUENTIAL_OFFLOAD
        assert s.need_bytes(NEXT, Placement.FULL, 0) == real_bytes([live[NEXT.id]])
    with s.acquire(LUMINA2):  # NEXT, offloaded and idle, holds nothing on the device nor parked
        assert_books_hold(s, live)
    assert s.free_all() > 0 and s.device_used() == s.ram_used() == 0


def test_a_parked_model_comes_back_with_its_weights_unchanged(settings):
    pipes = {c.id: load_pipeline(c, settings) for c in (NEXT, LUMINA2)}
    before = {k: v.clone() for k, v in pipes[NEXT.id].transformer.state_dict().items()}
    one = max(Footprint.measure(p).total for p in pipes.values())
    s = MemoryScheduler(lambda card: pipes[card.id], device="cpu", device_budget=one, clock=Clock())
    for card in (NEXT, LUMINA2, NEXT):
        with s.acquire(card):
            pass
    assert s.placement_of(LUMINA2.id) is None and s.placement_of(NEXT.id) is Placement.FULL
    after = pipes[NEXT.id].transformer.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_placing_a_bundle_already_on_the_device_records_where_it_runs():
    """Nothing moves on the CPU, yet a bundle parked after model offload must say it runs there again."""
    bundle = ModuleBundle(net=torch.nn.Linear(3, 3), tokenizer=object())
    bundle.placed_on("meta")  # as model offload would have left it: computing elsewhere
    apply_placement(bundle, Placement.FULL, "cpu")
    assert bundle.device == torch.device("cpu")
    bundle.placed_on("meta")
    assert park(bundle, Placement.FULL) and bundle.device == torch.device("cpu")


def _checkpoint(model_cache, part: str) -> dict[str, torch.Tensor]:
    snapshot = model_cache / "models--studio-builtin--tiny-lumina-next" / "snapshots" / builtin_revision(NEXT.id)
    state: dict[str, torch.Tensor] = {}
    for f in sorted((snapshot / part).glob("*.safetensors")):
        state.update(load_file(f))
    assert state, f"no {part} weights in the tiny model's snapshot"
    return state


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_cold_load_gives_the_checkpoint_weights_in_the_dtype_asked_for(settings, model_cache, dtype):
    pipe = load_pipeline(NEXT, settings.replace(dtype=dtype))
    want = getattr(torch, dtype)
    for part in ("transformer", "vae"):
        loaded = getattr(pipe, part).state_dict()
        checkpoint = _checkpoint(model_cache, part)
        assert set(checkpoint) <= set(loaded)
        for name, weights in checkpoint.items():
            got = loaded[name]
            assert got.device.type == "cpu" and not got.is_meta, name
            if weights.is_floating_point():
                assert got.dtype == want, (name, got.dtype)
                assert torch.equal(got, weights.to(want)), name  # not re-initialised, cast once
            else:
                assert torch.equal(got, weights), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: on the CPU the device is RAM")
def test_on_cuda_the_books_match_what_the_device_holds():
    """device_used() against the allocator's own count, through moves onto the GPU, parking and drops.
    Every tensor is a multiple of 512 bytes, so the allocator rounds nothing."""
    def bundle():
        return ModuleBundle(a=torch.nn.Linear(1024, 1024), b=torch.nn.Linear(1024, 512), tokenizer=object())

    pipes = {f"m{i}": bundle() for i in range(3)}
    one = module_bytes(torch_components(pipes["m0"]).values())
    cards = [NEXT.model_copy(update={"id": cid}) for cid in pipes]
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    s = MemoryScheduler(lambda card: pipes[card.id], device="cuda", device_budget=2 * one, ram_budget=one,
                        clock=Clock())
    for card in (*cards, cards[0], cards[2], cards[1]):
        with s.acquire(card) as lease:
            assert lease.placement is Placement.FULL
            torch.cuda.synchronize()
            assert torch.cuda.memory_allocated() - base == s.device_used() <= 2 * one
        parked = [pipes[c] for c in s.resident() if s.placement_of(c) is None]
        assert s.ram_used() == real_bytes(parked) <= one
        assert all(t.device.type == "cpu" for p in parked for m in torch_components(p).values()
                   for t in m.parameters())
    s.free_all()
    assert torch.cuda.memory_allocated() == base
