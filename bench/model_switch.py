"""Model switch time through the MemoryScheduler, next to the raw floor of moving the same bytes.

A random-weight fp32 `LuminaNextDiT2DModel` of about `--size-gb` is saved once as safetensors in a
temporary dir; the scheduler's loader reads it back with `from_pretrained` into a one-component
`DiffusionPipeline`. Two such models (A and B) share a device budget that holds only one of them.
Each scenario times `acquire(A)` (enter + exit of the lease) plus a read of one value per 4 KiB of
every weight, median of `--repeats`. The read is there because safetensors maps the file lazily: on
CPU, `from_pretrained` and `load_file` return in milliseconds and the bytes come in at first use; the
floors get the same read so both sides pay it.

- resident: A is already placed (full): bookkeeping only; no floor.
- parked:   B was acquired last, so A sits in RAM: RAM -> device. Floor: `.to(device)` of the same
            tensors already in RAM.
- cold:     after `free_all()`: disk -> RAM -> device. Floor: `safetensors.torch.load_file` of the
            file plus `.to(device)` of every tensor.

On CPU "device" moves are no-ops, so the figures measure the bookkeeping and the load path, and the
parked floor is only the page read (no ratio). The cold read may be served from the OS page cache
(the file was just written and is re-read each repeat); the script does not drop caches.
Peak RAM is about three models' bytes (A, B and the floor's copy).

    python bench/model_switch.py                     # ~1 GB, cuda if available
    python bench/model_switch.py --size-gb 0.25 --repeats 5 --device cpu
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
from diffusers import DiffusionPipeline, LuminaNextDiT2DModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from studio.runtime.footprint import tensor_bytes  # noqa: E402
from studio.runtime.memory import MemoryScheduler  # noqa: E402
from studio.runtime.placement import Placement, torch_components  # noqa: E402
from studio.zoo.cards import ModelCard  # noqa: E402

HIDDEN, HEADS = 1024, 16


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


def card(card_id: str, gb: float) -> ModelCard:
    return ModelCard.model_validate({"id": card_id, "title": card_id, "family": "bench", "tasks": ["image"],
                                     "source": {"builtin": card_id}, "pipeline": "OnePipeline",
                                     "dtype": "float32", "memory_gb": gb, "license": "n/a"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.0, help="fp32 weight bytes per model (GiB)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.repeats < 1 or args.size_gb <= 0:
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
    try:
        torch.manual_seed(0)
        model = dit(layers_for(int(args.size_gb * 2**30)))
        nbytes, layers = tensor_bytes(model), model.config.num_layers
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        files, loads = sorted(tmp.glob("*.safetensors")), []

        def loader(c: ModelCard) -> OnePipeline:
            loads.append(c.id)
            return OnePipeline(LuminaNextDiT2DModel.from_pretrained(tmp))

        a, b = card("switch-a", nbytes / 2**30), card("switch-b", nbytes / 2**30)
        sched = MemoryScheduler(loader, device=device, device_budget=int(nbytes * 1.5), ram_budget=None)

        def acquire(c: ModelCard) -> None:
            with sched.acquire(c) as lease:
                assert lease.placement is Placement.FULL, lease.placement
                for module in torch_components(lease.pipeline).values():
                    touch([*module.parameters(), *module.buffers()])

        [acquire(c) for c in (a, b, a)]  # warmup: both loaded once, one switch each way
        times: dict[str, list[float]] = {"resident": [], "parked": [], "cold": []}
        floors: dict[str, list[float]] = {"parked": [], "cold": []}
        for _ in range(args.repeats):
            assert sched.placement_of(a.id) is Placement.FULL
            times["resident"].append(seconds(lambda: acquire(a)))
            acquire(b)
            assert sched.placement_of(a.id) is None, "A should be parked in RAM"
            times["parked"].append(seconds(lambda: acquire(a)))
            sched.free_all()
            n_loads = len(loads)
            times["cold"].append(seconds(lambda: acquire(a)))
            assert len(loads) == n_loads + 1, "cold acquire should load from disk"
            gc.collect()
            ram: list[dict[str, torch.Tensor]] = []

            # Both closures run at once, inside this iteration, so the `ram` they see is this one's.
            def read_and_move() -> None:
                ram[:] = [load_file(f) for f in files]  # noqa: B023
                touch([t.to(device) for sd in ram for t in sd.values()])  # noqa: B023
            floors["cold"].append(seconds(read_and_move))
            floors["parked"].append(seconds(lambda: touch([t.to(device) for sd in ram for t in sd.values()])))  # noqa: B023
            ram.clear()  # release the floor copy before the next repeat
        sched.free_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    floor = {k: statistics.median(v) for k, v in floors.items()}
    ratio = {k: (med[k] / floor[k] if (cuda or k == "cold") and floor[k] > 0 else None) for k in floor}

    print(f"LuminaNextDiT2DModel {layers} layers x {HIDDEN}  {nbytes / 2**30:.3f} GiB fp32  "
          f"device={device}  repeats={args.repeats}  loads={len(loads)}")
    if not cuda:
        print("note: on cpu the device moves are no-ops: the figures measure bookkeeping and the load path;")
        print("      the parked floor (.to of tensors already on the cpu) is only the page read: no ratio")
    print("note: the cold read (and its floor) may be served from the OS page cache; caches are not dropped")
    print(f"{'scenario':<10}{'median s':>11}{'floor s':>11}{'ratio':>9}")
    for k in times:
        f, r = floor.get(k), ratio.get(k)
        print(f"{k:<10}{med[k]:>11.4f}{f'{f:.4f}' if f is not None else '-':>11}{f'x{r:.2f}' if r else '-':>9}")
    print("RESULT " + json.dumps({
        "bench": "model_switch", "device": device, "bytes": nbytes, "layers": layers, "repeats": args.repeats,
        "median_s": med, "floor_s": floor, "ratio": ratio, "all_s": times, "all_floor_s": floors,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
