"""Model switch time through the MemoryScheduler, next to the raw floor of moving the same bytes.

A random-weight fp32 `LuminaNextDiT2DModel` of about `--size-gb` is saved once as safetensors in a
temporary dir; the scheduler's loader reads it back with `from_pretrained` into a one-component
`DiffusionPipeline`. Two such models (A and B) share a device budget that holds only one of them.
Each scenario times `acquire(A)` (enter + exit of the lease) plus a read of one value per 4 KiB of
every weight, median of `--repeats`. The read is there because safetensors maps the file lazily: on
CPU, `from_pretrained` and `load_file` return in milliseconds and the bytes come in at first use; the
floors get the same read so both sides pay it.

- resident:   A is already placed (full): bookkeeping only; no floor.
- parked:     B was acquired last, so A sits in RAM: RAM -> device. Floor: `.to(device)` of the same
              tensors already in RAM.
- cold:       after `free_all()`: file -> RAM -> device, the file in the OS page cache (it was just
              read). Floor: `safetensors.torch.load_file` of the file plus `.to(device)` of every tensor.
- cold disk:  the same with the file's pages first dropped from the page cache (posix_fadvise
              DONTNEED, Linux), on both sides: what a switch to a model not read lately costs.
- bookkeeping: three resident pipelines shaped like Wan 2.1 14B's (a 40-block DiT, a 24-layer T5
              encoder, a VAE: ~1,700 tensors each, tiny widths), acquired in turn under a device
              budget measured per request (as on CUDA) and a RAM budget: ms per acquire, the
              scheduler's own cost of a switch that moves nothing.

A cold load must also build the model's modules (on the meta device: no weight is initialised), which
the raw floor does not; "build + read" is that floor plus `from_config` under accelerate's
`init_empty_weights` and `load_state_dict(assign=True)`: a hand-rolled minimal loader of this model. The
cold switch near or under it says the library's load path costs nothing extra: what separates a cold
switch from the raw floor is building the modules, which no loader avoids.
On CPU the device moves are no-ops, so the figures measure the bookkeeping and the load path, and the
parked floor is only the page read (no ratio). Peak RAM is about three models' bytes.

    python bench/model_switch.py                     # ~1 GB, cuda if available
    python bench/model_switch.py --quick             # ~0.25 GB, 2 repeats (run_all: under a minute)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from accelerate import init_empty_weights  # noqa: E402
from diffusers import DiffusionPipeline, LuminaNextDiT2DModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from studio.engines.bundle import ModuleBundle  # noqa: E402
from studio.runtime.footprint import tensor_bytes  # noqa: E402
from studio.runtime.memory import MemoryScheduler  # noqa: E402
from studio.runtime.placement import Placement, torch_components  # noqa: E402
from studio.zoo.cards import ModelCard  # noqa: E402

HIDDEN, HEADS = 1024, 16
COLD_GOAL, BOOKKEEPING_GOAL_MS = 1.3, 1.0


class OnePipeline(DiffusionPipeline):
    """Just enough of a pipeline for the scheduler: `components`, `.to()`."""

    def __init__(self, transformer: LuminaNextDiT2DModel) -> None:
        super().__init__()
        self.register_modules(transformer=transformer)


def dit(layers: int) -> LuminaNextDiT2DModel:
    return LuminaNextDiT2DModel(sample_size=32, hidden_size=HIDDEN, num_layers=layers, num_attention_heads=HEADS,
                                num_kv_heads=HEADS, cross_attention_dim=HIDDEN)


def layers_for(target: int) -> int:
    with torch.device("meta"):
        one, two = tensor_bytes(dit(1)), tensor_bytes(dit(2))
    return max(1, round((target - one) / (two - one)) + 1)  # fixed part (embedders, rope) + per layer


@torch.no_grad()
def touch(tensors) -> None:
    """Read one value per 4 KiB page of each tensor, so lazily mapped weights are really in memory."""
    for t in tensors:
        if t.numel():
            t.detach().reshape(-1)[:: max(1, 4096 // t.element_size())].sum()


def drop_page_cache(files: list[Path]) -> bool:
    """Evict the files' pages from the OS page cache (only pages nobody maps); False where unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def card(card_id: str, gb: float) -> ModelCard:
    return ModelCard.model_validate({"id": card_id, "title": card_id, "family": "bench", "tasks": ["image"],
                                     "source": {"builtin": card_id}, "pipeline": "OnePipeline",
                                     "dtype": "float32", "memory_gb": gb, "license": "n/a"})


# -- bookkeeping: pipelines with a 14B model's tensor count and next to no bytes -------------------------

class _Block(torch.nn.Module):
    def __init__(self, width: int, linears: int, norms: int) -> None:
        super().__init__()
        self.linears = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(linears))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(width) for _ in range(norms))


class _Tower(torch.nn.Module):
    def __init__(self, blocks: int, linears: int, norms: int, width: int = 4) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(width, width)
        self.blocks = torch.nn.ModuleList(_Block(width, linears, norms) for _ in range(blocks))
        self.out = torch.nn.Linear(width, width)


def wan_shaped() -> ModuleBundle:
    """Wan 2.1 14B's tensor counts: DiT 40 blocks x ~30, umT5-XXL 24 layers x ~11, VAE ~200."""
    return ModuleBundle(text_encoder=_Tower(24, 5, 1), transformer=_Tower(40, 12, 3), vae=_Tower(25, 4, 0))


def bookkeeping_ms(rounds: int) -> tuple[float, int]:
    """Median ms per acquire of one of three resident Wan-shaped pipelines, and their tensor count."""
    pipes = {f"wan-{i}": wan_shaped() for i in range(3)}
    big = 2**50
    sched = MemoryScheduler(lambda c: pipes[c.id], device="cpu", device_budget=lambda held: big - held,
                            ram_budget=big)
    cards = [card(cid, 0.001) for cid in pipes]
    for c in cards:
        with sched.acquire(c):
            pass
    per: list[float] = []
    for _ in range(rounds):
        for c in cards:
            start = time.perf_counter()
            with sched.acquire(c) as lease:
                assert lease.placement is Placement.FULL
            per.append(time.perf_counter() - start)
    tensors = sum(len([*m.parameters(), *m.buffers()]) for m in torch_components(pipes["wan-0"]).values())
    return statistics.median(per) * 1000, tensors


# -- the switch scenarios ------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=None, help="fp32 weight bytes per model (GiB; default 1)")
    ap.add_argument("--repeats", type=int, default=None, help="default 3")
    ap.add_argument("--quick", action="store_true", help="--size-gb 0.25 --repeats 2 (unless given)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-disk", action="store_true", help="skip the cold-from-disk scenario")
    args = ap.parse_args()
    size_gb = args.size_gb if args.size_gb is not None else (0.25 if args.quick else 1.0)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    if repeats < 1 or size_gb <= 0:
        ap.error("--repeats must be >= 1 and --size-gb > 0")
    device, cuda = args.device, args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def seconds(fn: Callable[[], object]) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    tmp = Path(tempfile.mkdtemp(prefix="studio-switch-"))
    times: dict[str, list[float]] = {"resident": [], "parked": [], "cold": [], "cold_disk": []}
    floors: dict[str, list[float]] = {"parked": [], "cold": [], "cold_built": [], "cold_disk": []}
    in_loader: list[float] = []
    disk = not args.no_disk
    try:
        torch.manual_seed(0)
        model = dit(layers_for(int(size_gb * 2**30)))
        nbytes, layers = tensor_bytes(model), model.config.num_layers
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        files, loads = sorted(tmp.glob("*.safetensors")), []
        config = LuminaNextDiT2DModel.load_config(tmp)

        def loader(c: ModelCard) -> OnePipeline:
            loads.append(c.id)
            start = time.perf_counter()
            pipe = OnePipeline(LuminaNextDiT2DModel.from_pretrained(tmp))
            in_loader.append(time.perf_counter() - start)
            return pipe

        a, b = card("switch-a", nbytes / 2**30), card("switch-b", nbytes / 2**30)
        sched = MemoryScheduler(loader, device=device, device_budget=int(nbytes * 1.5), ram_budget=None)

        def acquire(c: ModelCard) -> None:
            with sched.acquire(c) as lease:
                assert lease.placement is Placement.FULL, lease.placement
                for module in torch_components(lease.pipeline).values():
                    touch([*module.parameters(), *module.buffers()])

        def cold() -> None:
            n_loads = len(loads)
            acquire(a)
            assert len(loads) == n_loads + 1, "cold acquire should load from disk"

        def read_and_move(keep: list) -> None:
            keep[:] = [load_file(f) for f in files]
            touch([t.to(device) for sd in keep for t in sd.values()])

        def build_and_read() -> None:
            with init_empty_weights():  # what diffusers' from_pretrained builds under: no weight initialised
                built = LuminaNextDiT2DModel.from_config(config)
            state = {k: v.to(device) for f in files for k, v in load_file(f).items()}
            built.load_state_dict(state, assign=True, strict=True)
            touch([*built.parameters(), *built.buffers()])

        [acquire(c) for c in (a, b, a)]  # warmup: both loaded once, one switch each way
        in_loader.clear()
        for _ in range(repeats):
            assert sched.placement_of(a.id) is Placement.FULL
            times["resident"].append(seconds(lambda: acquire(a)))
            acquire(b)
            assert sched.placement_of(a.id) is None, "A should be parked in RAM"
            times["parked"].append(seconds(lambda: acquire(a)))
            sched.free_all()
            times["cold"].append(seconds(cold))
            gc.collect()
            ram: list[dict[str, torch.Tensor]] = []
            floors["cold"].append(seconds(lambda: read_and_move(ram)))  # noqa: B023
            floors["parked"].append(seconds(lambda: touch([t.to(device) for sd in ram for t in sd.values()])))  # noqa: B023
            ram.clear()  # release the floor copy before the next one
            gc.collect()
            floors["cold_built"].append(seconds(build_and_read))
            gc.collect()
            if disk:
                sched.free_all()  # nothing may map the file while its pages are dropped
                disk = drop_page_cache(files)
            if disk:
                times["cold_disk"].append(seconds(cold))
                sched.free_all()
                gc.collect()
                drop_page_cache(files)
                floors["cold_disk"].append(seconds(lambda: read_and_move(ram)))  # noqa: B023
                ram.clear()
                gc.collect()
                acquire(a)  # back to the loop's starting state: A placed
        sched.free_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    book_ms, book_tensors = bookkeeping_ms(rounds=30 if repeats < 3 else 100)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    floor = {k: statistics.median(v) for k, v in floors.items() if v}
    ratio = {k: med[k] / floor[k] for k in ("cold", "cold_disk") if k in med and floor.get(k)}
    if cuda:
        ratio["parked"] = med["parked"] / floor["parked"]
    ratio["cold_over_built"] = med["cold"] / floor["cold_built"]
    loader_s = statistics.median(in_loader)

    print(f"LuminaNextDiT2DModel {layers} layers x {HIDDEN}  {nbytes / 2**30:.3f} GiB fp32  "
          f"device={device}  repeats={repeats}  loads={len(loads)}")
    if not cuda:
        print("note: on cpu the device moves are no-ops: the figures measure bookkeeping and the load path;")
        print("      the parked floor (.to of tensors already on the cpu) is only the page read: no ratio")
    print(f"{'scenario':<12}{'median s':>11}{'floor s':>11}{'ratio':>9}")
    for k in med:
        f, r = floor.get(k), ratio.get(k)
        print(f"{k:<12}{med[k]:>11.4f}{f'{f:.4f}' if f is not None else '-':>11}{f'x{r:.2f}' if r else '-':>9}")
    print(f"{'build+read':<12}{'':>11}{floor['cold_built']:>11.4f}{'x' + format(ratio['cold_over_built'], '.2f'):>9}"
          "   (cold over a minimal hand-rolled loader: build on meta + read)")
    print(f"cold: {loader_s:.4f} s of it in the loader (from_pretrained), the rest placing, bookkeeping and the read")
    print(f"bookkeeping: {book_ms:.3f} ms per acquire, three resident pipelines of {book_tensors} tensors each")

    def measure(name: str, value: float | None, unit: str, goal: str, met: bool | None) -> dict:
        return {"measure": name, "value": None if value is None else round(value, 4), "unit": unit, "goal": goal,
                "met": met}

    measures = [
        measure("cold switch / raw floor (page cache)", ratio.get("cold"), "x", f"<= {COLD_GOAL}",
                ratio["cold"] <= COLD_GOAL),
        measure("cold switch / build+read floor (page cache)", ratio["cold_over_built"], "x", "", None),
        measure("switch bookkeeping per acquire (3 Wan-14B-shaped)", book_ms, "ms", f"<= {BOOKKEEPING_GOAL_MS}",
                book_ms <= BOOKKEEPING_GOAL_MS),
        measure("resident switch", med["resident"] * 1000, "ms", "", None),
        measure("parked switch", med["parked"] * 1000, "ms", "", None),
        measure("cold switch (page cache)", med["cold"] * 1000, "ms", "", None),
    ]
    if "cold_disk" in ratio:
        measures.insert(1, measure("cold switch / raw floor (from disk)", ratio["cold_disk"], "x", f"<= {COLD_GOAL}",
                                   ratio["cold_disk"] <= COLD_GOAL))
    if cuda:
        measures.append(measure("parked switch / floor", ratio["parked"], "x", "", None))
    print("RESULT " + json.dumps({
        "bench": "model_switch", "device": device, "bytes": nbytes, "layers": layers, "repeats": repeats,
        "median_s": med, "floor_s": floor, "ratio": ratio, "loader_s": loader_s, "bookkeeping_ms": book_ms,
        "all_s": times, "all_floor_s": floors, "measures": measures,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
