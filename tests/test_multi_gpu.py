"""Device groups (runtime/multi_gpu.py) on the CPU: parsing, budgets, the scheduler's choice of the balanced
placement (fake pipelines whose components are plain modules of known bytes: no GPU moves them), the loader's
balanced keywords, and diffusers' context parallelism on a tiny Wan transformer in two gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import Clock, free_port

from studio.runtime import budgets, multi_gpu
from studio.runtime.memory import MemoryScheduler
from studio.runtime.multi_gpu import DeviceGroupError, parse_device_group
from studio.runtime.placement import GROUP_LADDER, Placement, Spread, more_frugal
from studio.settings import REPO_ROOT, Settings
from studio.zoo.cards import CardRegistry

CARD = CardRegistry.load([REPO_ROOT / "model_zoo"]).get("tiny-lumina-next")  # a diffusers card
GROUP = "cuda:0+cuda:1"


# -- parsing --------------------------------------------------------------------------------------------

def test_a_group_is_parsed_into_its_members():
    assert parse_device_group("cuda:0+cuda:1") == ("cuda:0", "cuda:1")
    assert parse_device_group(" cuda:2 + cuda:03 ") == ("cuda:2", "cuda:3")
    assert parse_device_group("cuda:0") == ("cuda:0",) and parse_device_group("cpu") == ("cpu",)
    assert multi_gpu.is_group(GROUP) and not multi_gpu.is_group("cuda:0") and not multi_gpu.is_group(None)
    assert multi_gpu.primary(GROUP) == "cuda:0" and multi_gpu.primary("cpu") == "cpu"


@pytest.mark.parametrize("spec, message", [
    ("cuda:0+cuda:0", "names cuda:0 twice"),
    ("cuda:1+cuda:01", "names cuda:1 twice"),
    ("cpu+cuda:0", "'cpu' is not a CUDA device"),
    ("cuda:0+mps", "'mps' is not a CUDA device"),
    ("cuda:0+tpu:1", "'tpu:1' is not a CUDA device"),
    ("cuda+cuda:1", "needs a GPU index"),
    ("cuda:0+", "empty member"),
    ("", "empty device"),
])
def test_a_bad_group_is_refused_with_a_clear_message(spec, message):
    with pytest.raises(DeviceGroupError, match=message):
        parse_device_group(spec)


def test_members_must_be_on_the_machine():
    multi_gpu.check_visible(("cuda:0", "cuda:1"), count=2)
    with pytest.raises(DeviceGroupError, match="cuda:2 not present: this machine has 2 CUDA"):
        multi_gpu.check_visible(("cuda:1", "cuda:2"), count=2)


# -- budgets and the max_memory map -----------------------------------------------------------------------

def test_the_max_memory_map_is_keyed_by_gpu_index():
    assert multi_gpu.balanced_max_memory(("cuda:0", "cuda:1"), [5, 6]) == {0: 5, 1: 6}
    assert multi_gpu.balanced_max_memory(("cuda:2", "cuda:3"), [7, -1]) == {2: 7, 3: 0}
    with pytest.raises(ValueError, match="2 members but 1 budgets"):
        multi_gpu.balanced_max_memory(("cuda:0", "cuda:1"), [5])


def test_balanced_assignment_is_diffusers_own():
    sizes = {"transformer": 4000, "text_encoder": 3000, "vae": 1000}
    # largest first over the devices most-free first, cycling 0, 1, 1, 0: as device_map="balanced" does
    assert multi_gpu.balanced_assignment(sizes, {0: 5000, 1: 5000}) == {"transformer": 0, "text_encoder": 1, "vae": 1}
    assert multi_gpu.fits_balanced(sizes, {0: 5000, 1: 5000})
    assert multi_gpu.balanced_assignment({"transformer": 6000, "vae": 1000}, {0: 5000, 1: 5000})["transformer"] == "cpu"
    assert not multi_gpu.fits_balanced({"transformer": 6000, "vae": 1000}, {0: 5000, 1: 5000})


def test_group_budgets_are_the_members_and_their_sum(tmp_path):
    gb = budgets.GB
    settings = Settings.load(env={}, home=tmp_path, device=GROUP, vram_budget_gb=8, ram_budget_gb=20)
    assert budgets.member_budgets(settings) == [8 * gb, 8 * gb]  # --vram-budget is per GPU
    assert budgets.device_budget(settings) == 16 * gb == budgets.device_budget(settings, GROUP)
    assert budgets.ram_budget(settings, GROUP) == 20 * gb
    measured = budgets.device_budget(settings.replace(vram_budget_gb=None), GROUP)
    assert callable(measured)  # each member measured with torch.cuda.mem_get_info when asked
    # The old one-argument calls keep working, for the settings' own device.
    cpu = Settings.load(env={}, home=tmp_path, device="cpu", ram_budget_gb=3)
    assert budgets.device_budget(cpu) == 3 * gb and budgets.ram_budget(cpu) == 0
    assert budgets.device_budget(cpu, "cuda:0+cuda:1") is not None


def test_member_budgets_of_a_group_default_to_an_even_share():
    assert multi_gpu.member_budgets_of(("cuda:0", "cuda:1"), 10, None) == [5, 5]
    shared = multi_gpu.member_budgets_of(("cuda:0", "cuda:1"), lambda held: 10 + held, None)
    assert [b(2) for b in shared] == [6, 6]
    with pytest.raises(DeviceGroupError, match="1 member budgets for the 2 devices"):
        multi_gpu.member_budgets_of(("cuda:0", "cuda:1"), None, [4])


# -- the scheduler --------------------------------------------------------------------------------------

class FakePipe:
    """Components of known bytes (float32 weights of `n` numbers: 4n bytes). A balanced one carries diffusers'
    `hf_device_map` and refuses `.to()`, as diffusers does; a plain one records where it was asked to go."""

    def __init__(self, sizes: dict[str, int], device_map: dict | None = None):
        self.components = {name: torch.nn.Linear(1, size // 4, bias=False) for name, size in sizes.items()}
        self.hf_device_map = device_map
        self.moves: list = []
        self.offloaded = None

    def to(self, device):
        assert self.hf_device_map is None, "a balanced pipeline must never be moved by .to()"
        self.moves.append(str(device))
        return self

    def enable_model_cpu_offload(self, device=None):
        self.offloaded = str(device)

    def remove_all_hooks(self):
        self.offloaded = None


class FakeLoader:
    def __init__(self, sizes: dict[str, dict[str, int]]):
        self.sizes, self.calls, self.made = sizes, [], []

    def __call__(self, card, device_map=None, max_memory=None):
        self.calls.append((card.id, device_map, max_memory))
        sizes = self.sizes[card.id]
        where = multi_gpu.balanced_assignment(sizes, max_memory) if device_map else None
        self.made.append(FakePipe(sizes, where))
        return self.made[-1]


SMALL = {"transformer": 2000, "text_encoder": 1000, "vae": 400}  # 3400: whole on one 5000 GPU
BIG = {"transformer": 4000, "text_encoder": 3000, "vae": 1000}  # 8000: only spread over two
LOPSIDED = {"transformer": 4500, "text_encoder": 4500, "vae": 2000}  # 11000: more than the group
HUGE_PART = {"transformer": 6000, "vae": 1000}  # a component bigger than any GPU


def group_scheduler(loader, member=5000, **kwargs):
    return MemoryScheduler(loader, device=GROUP, member_budgets=[member, member], clock=Clock(), **kwargs)


def card(name):
    return CARD.model_copy(update={"id": name})


def footprint(sizes):
    from studio.runtime.footprint import Footprint

    return Footprint.measure(FakePipe(sizes))


def test_the_scheduler_takes_a_group_and_sums_its_budget():
    s = group_scheduler(FakeLoader({}))
    assert s.members == ("cuda:0", "cuda:1") and s.primary == "cuda:0" and s.group
    assert s.device_budget() == 10000 and [s.member_budget(i) for i in (0, 1)] == [5000, 5000]
    assert MemoryScheduler(FakeLoader({}), device=GROUP, device_budget=8000).member_budget(1) == 4000
    with pytest.raises(DeviceGroupError):
        MemoryScheduler(FakeLoader({}), device="cuda:0+cuda:0")


def test_a_model_too_big_for_one_gpu_but_not_for_the_group_is_balanced():
    s = group_scheduler(FakeLoader({}))
    assert s.choose(card("big"), footprint(BIG), 0) is Spread.BALANCED
    assert s.choose(card("small"), footprint(SMALL), 0) is Placement.FULL  # whole on cuda:0 is better
    # The job's working memory is kept free on every member: with 1500 of it BIG no longer spreads.
    assert s.choose(card("big"), footprint(BIG), 1500) is not Spread.BALANCED
    assert s.choose(card("big"), footprint(BIG), 500) is Spread.BALANCED


def test_a_model_that_fits_neither_one_gpu_nor_the_group_is_not_balanced():
    s = group_scheduler(FakeLoader({}))
    # Its components cannot be packed onto the two GPUs: offloaded onto the first, one component at a time.
    assert s.choose(card("lopsided"), footprint(LOPSIDED), 0) is Placement.MODEL_OFFLOAD
    # A component larger than any GPU: no whole-component placement at all, the most frugal is tried.
    assert s.choose(card("huge"), footprint(HUGE_PART), 0) is Placement.SEQUENTIAL_OFFLOAD


def test_a_single_device_scheduler_never_balances():
    s = MemoryScheduler(FakeLoader({}), device="cpu", device_budget=5000, clock=Clock())
    assert s.choose(card("big"), footprint(BIG), 0) is Placement.MODEL_OFFLOAD
    native = card("big").model_copy(update={"library": "native"})
    assert group_scheduler(FakeLoader({})).choose(native, footprint(BIG), 0) is Placement.MODEL_OFFLOAD


def test_a_balanced_model_is_loaded_spread_counted_per_member_and_dropped_not_moved():
    loader = FakeLoader({"big": BIG, "small": SMALL})
    s = group_scheduler(loader, ram_budget=10**9)
    with s.acquire(card("big")) as lease:
        assert lease.placement is Spread.BALANCED
        assert lease.pipeline.hf_device_map == {"transformer": 0, "text_encoder": 1, "vae": 1}
        assert s.member_used() == [4000, 4000] and s.device_used() == 8000
        assert s.whereabouts("big") == f"already on {GROUP}"
        assert [(r.where, r.placement) for r in s.residents()] == [(GROUP, "balanced")]
    # Measured in RAM first, then loaded by diffusers onto the GPUs with each member's room as max_memory.
    assert loader.calls == [("big", None, None), ("big", "balanced", {0: 5000, 1: 5000})]
    balanced = lease.pipeline
    with s.acquire(card("big")):  # resident: no load
        pass
    assert len(loader.calls) == 2
    # A newcomer that fits whole on cuda:0 needs room there: the balanced model is dropped, never moved.
    with s.acquire(card("small")) as lease:
        assert lease.placement is Placement.FULL and lease.pipeline.moves == ["cuda:0"]
    assert s.placement_of("big") is None and "big" not in s.resident() and balanced.moves == []
    assert s.ram_used() == 0  # nothing of it parked: it went
    # Its footprint is remembered: next time it is loaded straight onto the GPUs (no RAM copy first).
    with s.acquire(card("big")) as lease:
        assert lease.placement is Spread.BALANCED
    assert loader.calls[-1] == ("big", "balanced", {0: 5000, 1: 5000}) and loader.calls.count(("big", None, None)) == 1
    assert s.free_all() > 0 and s.resident() == [] and s.device_used() == 0


def test_out_of_memory_steps_down_through_balanced():
    assert GROUP_LADDER[:3] == (Placement.FULL, Spread.BALANCED, Placement.MODEL_OFFLOAD)
    assert more_frugal(Spread.BALANCED) is Placement.MODEL_OFFLOAD and more_frugal(Placement.FULL) is (
        Placement.MODEL_OFFLOAD)
    loader = FakeLoader({"small": SMALL})
    s = group_scheduler(loader)
    with s.acquire(card("small")) as lease:
        assert lease.placement is Placement.FULL
        spread = s.step_down(card("small"))
        assert spread.placement is Spread.BALANCED and spread.pipeline.hf_device_map is not None
        offloaded = s.step_down(card("small"))
        assert offloaded.placement is Placement.MODEL_OFFLOAD and offloaded.pipeline.offloaded == "cuda:0"
        assert offloaded.pipeline.hf_device_map is None  # reloaded plain: a balanced one cannot be un-spread
    assert [c[1] for c in loader.calls] == [None, "balanced", None]
    assert [r.in_use for r in s.residents()] == [False]


def test_the_loader_passes_the_balanced_keywords_to_diffusers(settings, monkeypatch):
    from studio.errors import ModelNotAvailable
    from studio.runtime import loader as loader_module

    seen = {}

    class Stop(Exception):
        pass

    class FakeClass:
        @classmethod
        def from_pretrained(cls, repo, **kwargs):
            seen.update(kwargs)
            raise Stop

    monkeypatch.setattr(loader_module, "pipeline_class", lambda name: FakeClass)
    with pytest.raises(Stop):
        loader_module.load_pipeline(CARD, settings, loader_module.SharedComponents(), device_map="balanced",
                                    max_memory={0: 5, 1: 6})
    assert seen["device_map"] == "balanced" and seen["max_memory"] == {0: 5, 1: 6}
    seen.clear()
    with pytest.raises(Stop):  # a group's settings: the device checks are the first member's
        loader_module.load_pipeline(CARD, settings.replace(device=GROUP), device_map="balanced", max_memory={0: 5})
    assert seen["dtype"] == settings.replace(device="cuda:0").torch_dtype(CARD.dtype) and seen["max_memory"] == {0: 5}
    seen.clear()
    with pytest.raises(Stop):
        loader_module.load_pipeline(CARD, settings)  # the old call: no device map
    assert "device_map" not in seen and "max_memory" not in seen
    with pytest.raises(ModelNotAvailable, match="only for diffusers pipelines"):
        loader_module.load_pipeline(CARD.model_copy(update={"library": "native"}), settings, device_map="balanced")


# -- context parallelism (diffusers' own, two gloo processes on this CPU) ------------------------------------

def _tiny_wan():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
                                 cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()


def _wan_inputs():
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(1, 4, 2, 8, 8, generator=g), timestep=torch.tensor([500]),
                encoder_hidden_states=torch.randn(1, 6, 16, generator=g), return_dict=False)


def _cp_rank(rank: int, port: int, out: Path) -> None:
    """One rank: the single-process output, then diffusers' context parallelism over the two ranks."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = _tiny_wan()
    with torch.no_grad():
        reference = model(**_wan_inputs())[0]
    report: dict = {}
    try:  # as the library stands: it numbers the rank's device modulo the accelerators, of which the CPU has 0
        multi_gpu.enable_context_parallel(model, 2)
    except ZeroDivisionError as err:
        report["unpatched"] = f"{type(err).__name__}: {err}"
    # One line of diffusers (ModelMixin._resolve_parallel_config: `rank % torch.accelerator.device_count()`)
    # assumes an accelerator; with it answered as 1 the rest of its CP path runs on the CPU over gloo.
    torch.accelerator.device_count = lambda: 1
    multi_gpu.enable_context_parallel(model, 2)
    seen = []
    model.blocks[0].attn1.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].shape[1])
                                                    if args else seen.append(kwargs["hidden_states"].shape[1]),
                                                    with_kwargs=True)
    with torch.no_grad():
        parallel = model(**_wan_inputs())[0]
    report.update(rank=rank, diff=(parallel - reference).abs().max().item(), tokens_in_attention=seen,
                  shape=list(parallel.shape))
    out.write_text(json.dumps(report))
    # Both ranks done with every collective before either tears gloo down: a rank that destroys the group
    # while its peer's all-gather is still in flight aborts the peer ("terminate called ...").
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with the gloo backend is not in this torch build")
def test_context_parallel_wan_on_two_gloo_processes_matches_one_process(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(Path(__file__).parent)])}
    procs = [subprocess.Popen([sys.executable, __file__, str(rank), str(port), str(tmp_path / f"{rank}.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    reports = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["unpatched"] == "ZeroDivisionError: integer modulo by zero"
        assert report["shape"] == [1, 4, 2, 8, 8]  # gathered back: every rank has the whole output
        assert report["diff"] <= 1e-5
        # The sequence (2 frames x 4 x 4 patches = 32 tokens) was split: each rank's blocks hold half of it
        # (Ulysses' all-to-all inside attention trades it for half the heads over the whole sequence).
        assert report["tokens_in_attention"] == [16]


def test_context_parallel_needs_a_process_group_and_a_plan():
    with pytest.raises(RuntimeError, match="one process per device"):
        multi_gpu.enable_context_parallel(torch.nn.Linear(1, 1), 2)
    with pytest.raises(DeviceGroupError, match="at least two devices"):
        multi_gpu.context_parallel_config(1)
    assert multi_gpu.context_parallel_config(2).ulysses_degree == 2
    assert multi_gpu.context_parallel_config(2, ring=True).ring_degree == 2


if __name__ == "__main__":  # a rank of the context-parallel test
    _cp_rank(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
