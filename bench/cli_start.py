"""How long the `studio` command takes to start: CPU seconds (user + sys of the child process) and
wall seconds of `python -m studio --help` and `python -m studio models list` (with a temporary
STUDIO home, offline), the median of N runs each, next to a bare interpreter's start; and whether
`studio serve`'s path before it builds the studio (its arguments parsed, studio.ui.launch
imported) pulls torch in, and which heavy packages each command leaves imported.

    python bench/cli_start.py               # 3 runs each
    python bench/cli_start.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sqlalchemy", "gradio", "diffusers", "transformers")
# Runs a command through the CLI's main, then says which heavy packages it imported (on stderr).
PROBE = ("import json, sys\nfrom studio.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)")
# `studio serve`'s path up to building the studio: its arguments parsed, the launcher imported.
SERVE_CHAIN = ("import json, sys\nfrom studio.cli import build_parser\nbuild_parser(['serve']).parse_args(['serve'])\n"
               "import studio.ui.launch\nprint(json.dumps('torch' in sys.modules))")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(CPU seconds of the child, wall seconds, the result) of one run of `command`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return cpu, wall, result


def median_of(command: list[str], env: dict[str, str], repeats: int) -> dict[str, float]:
    runs = [timed(command, env)[:2] for _ in range(repeats)]
    return {"cpu_s": statistics.median(r[0] for r in runs), "wall_s": statistics.median(r[1] for r in runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STUDIO_HOME": home, "STUDIO_MODEL_CACHE": str(Path(home) / "hf"),
               "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        timed([py, "-m", "studio", "models", "list"], env)  # once untimed: the database is created, files cached
        figures = {
            "python -c pass": median_of([py, "-c", "pass"], env, args.repeats),
            "studio --help": median_of([py, "-m", "studio", "--help"], env, args.repeats),
            "studio models list": median_of([py, "-m", "studio", "models", "list"], env, args.repeats),
        }
        imported = {name: json.loads(timed([py, "-c", PROBE, *argv], env)[2].stderr.strip().splitlines()[-1])
                    for name, argv in (("studio --help", ["--help"]), ("studio models list", ["models", "list"]),
                                       ("studio serve --help", ["serve", "--help"]))}
        serve_torch = json.loads(timed([py, "-c", SERVE_CHAIN], env)[2].stdout)

    print(f"median of {args.repeats} runs each ({py})")
    print(f"{'command':<22}{'CPU s':>8}{'wall s':>8}  imports")
    for name, fig in figures.items():
        print(f"{name:<22}{fig['cpu_s']:>8.3f}{fig['wall_s']:>8.3f}  {', '.join(imported.get(name, [])) or '-'}")
    print(f"{'studio serve --help':<22}{'':>16}  {', '.join(imported['studio serve --help']) or '-'}")
    print(f"serve's import chain (its arguments parsed, studio.ui.launch imported) pulls torch: {serve_torch}")

    help_cpu, list_cpu = figures["studio --help"]["cpu_s"], figures["studio models list"]["cpu_s"]
    measures = [
        {"measure": "studio --help CPU", "value": round(help_cpu, 3), "unit": "s", "goal": "<= 0.3",
         "met": help_cpu <= 0.3},
        {"measure": "studio --help wall", "value": round(figures["studio --help"]["wall_s"], 3), "unit": "s",
         "goal": "", "met": None},
        {"measure": "studio models list CPU", "value": round(list_cpu, 3), "unit": "s", "goal": "<= 1.0",
         "met": list_cpu <= 1.0},
        {"measure": "studio models list wall", "value": round(figures["studio models list"]["wall_s"], 3),
         "unit": "s", "goal": "", "met": None},
        {"measure": "python start CPU (floor)", "value": round(figures["python -c pass"]["cpu_s"], 3), "unit": "s",
         "goal": "", "met": None},
        {"measure": "serve import chain pulls torch", "value": int(serve_torch), "unit": "bool", "goal": "== 0",
         "met": not serve_torch},
        {"measure": "models list imports torch", "value": int("torch" in imported["studio models list"]),
         "unit": "bool", "goal": "== 0", "met": "torch" not in imported["studio models list"]},
    ]
    result = {"bench": "cli_start", "repeats": args.repeats, "figures": figures, "imported": imported,
              "serve_chain_torch": serve_torch, "measures": measures}
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
