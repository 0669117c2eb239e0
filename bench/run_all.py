"""Every benchmark with small defaults, one table: measure, value, goal, met — the table a reviewer reads.

Each bench runs as its own process (so one's imports, threads and memory never colour another's figures)
with the arguments below, and ends with a `RESULT {json}` line whose `measures` list holds
`{"measure", "value", "unit", "goal", "met"}` entries; this script collects them. A bench that fails or
times out is a row saying so (and makes the exit status 1), so is a goal that is not met. The GPU check
(`bench/gpu_check.py`) is not in here: it needs a CUDA machine and minutes of it.

    python bench/run_all.py                    # all of them, ~5-8 minutes on 2 cores
    python bench/run_all.py --only gallery cli_start --json /tmp/bench.json
    python bench/run_all.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

# name -> (arguments, timeout in seconds). The arguments are each bench's quick settings: small enough to
# finish in about a minute here, large enough that the goal means what it says (the gallery's 100k jobs).
BENCHES: dict[str, tuple[list[str], int]] = {
    "image_overhead": (["--repeats", "15"], 600),  # fewer leave it within ±5% noise on 2 cores
    "lumina_next_rope": ([], 300),
    "save_overlap": (["--size", "1024"], 300),  # the size the issue measured saving at
    "cross_process": ([], 300),
    "model_switch": (["--size-gb", "0.25", "--repeats", "2", "--device", "cpu"], 300),
    "gallery": (["--quick"], 600),
    "cli_start": ([], 300),
    "preview_overhead": (["--steps", "12"], 300),
}


def run_one(name: str, args: list[str], timeout: int) -> tuple[list[dict[str, Any]], float, str | None]:
    """(measures, seconds, error) of one bench run as a subprocess."""
    script = BENCH / f"{name}.py"
    if not script.exists():
        return [], 0.0, "no such bench"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=BENCH.parent)
    except subprocess.TimeoutExpired:
        return [], time.perf_counter() - start, f"timed out after {timeout} s"
    seconds = time.perf_counter() - start
    results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not results:
        tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        return [], seconds, f"exit {done.returncode}, no RESULT line: {tail[:160]}"
    try:
        measures = json.loads(results[-1]).get("measures") or []
    except json.JSONDecodeError as err:
        return [], seconds, f"unreadable RESULT line: {err}"
    error = None if done.returncode == 0 else f"exit {done.returncode}"
    if not measures:
        error = error or "its RESULT line has no measures"
    return measures, seconds, error


def _value(m: dict[str, Any]) -> str:
    value = m.get("value")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="just these benches")
    ap.add_argument("--list", action="store_true", help="print each bench's command line and exit")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    chosen = args.only or list(BENCHES)
    if args.list:
        for name in chosen:
            print(f"python bench/{name}.py {' '.join(BENCHES[name][0])}".rstrip())
        return 0

    table: list[dict[str, Any]] = []
    for name in chosen:
        bench_args, timeout = BENCHES[name]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        measures, seconds, error = run_one(name, bench_args, timeout)
        for m in measures:
            table.append({"bench": name, **m})
        if error:
            table.append({"bench": name, "measure": "(bench)", "value": None, "unit": "", "goal": "",
                          "met": False, "error": error})
        print(f"  {name}: {len(measures)} measures in {seconds:.0f} s{f' — {error}' if error else ''}",
              file=sys.stderr, flush=True)

    width = max([len(r["measure"]) for r in table] + [7])
    print(f"{'bench':<18} {'measure':<{width}} {'value':>10} {'unit':<5} {'goal':<10} met")
    print("-" * (width + 52))
    for r in table:
        met = {True: "yes", False: "NO", None: ""}[r.get("met")]
        value = r.get("error") if r.get("error") else _value(r)
        unit, goal = r.get("unit", ""), r.get("goal", "")
        print(f"{r['bench']:<18} {r['measure']:<{width}} {value:>10} {unit:<5} {goal:<10} {met}")
    missed = [r for r in table if r.get("met") is False]
    print(f"{len(table) - len(missed)} of {len(table)} rows meet their goal or have none; {len(missed)} do not")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
