"""The benchmark scripts a reviewer runs: the GPU check runs end to end on the CPU in its dry-run mode (tiny
configs of the same classes), so it cannot rot between the times a GPU is at hand; the figures are not
asserted (speed targets live in bench/, never in tests), only that every check produced its rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _load("gpu_check")


def test_the_gpu_check_dry_run_times_every_path_and_writes_its_table(gpu_check, tmp_path, capsys):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry-run", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["device"] == "cpu"
    rows = {(r["check"].split(" ")[0], r["path"]): r for r in report["rows"]}
    assert not [r for r in report["rows"] if r.get("failed")]

    timed = [r for r in report["rows"] if r["s"] is not None]
    assert all(r["s"] > 0 for r in timed)
    lumina = {path: r for (check, path), r in rows.items() if check == "Lumina-Next"}
    # diffusers' Euler makes one (CFG-batched) transformer call per step; the studio's midpoint two per solver step
    assert lumina["diffusers LuminaPipeline (Euler)"]["calls"] == 2
    assert lumina["studio image task, midpoint (default)"]["calls"] == 2 * lumina["studio image task, Euler"]["calls"]
    assert lumina["studio + fp8 storage, Euler"]["s"] > 0
    assert "skipped" in lumina["studio + compile"]["note"]
    wan = {path: r for (check, path), r in rows.items() if check == "Wan"}
    assert {"diffusers WanPipeline", "studio video task, step cache off", "studio video task, step cache balanced",
            "studio video task, step cache fast"} <= {p for p, r in wan.items() if r["s"]}
    switch = [r for r in report["rows"] if r["check"].startswith("scheduler")]
    assert len([r for r in switch if r["path"].startswith("switch to")]) == 3
    assert switch[-1]["note"] == "none"  # no out-of-memory or other error escaped the scheduler

    printed = capsys.readouterr().out
    assert "DRY RUN" in printed and "studio video task, step cache fast" in printed


def test_the_gpu_check_refuses_to_run_for_real_without_a_gpu(gpu_check, capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--json", "/dev/null"])
    assert exc.value.code == 2
    assert "--dry-run" in capsys.readouterr().err


def test_run_all_collects_each_benchs_measures_and_flags_a_missed_goal_or_a_broken_bench(tmp_path, monkeypatch,
                                                                                          capsys):
    run_all = _load("run_all")
    (tmp_path / "fast.py").write_text(
        "import json\nprint('a table')\nprint('RESULT ' + json.dumps({'measures': [\n"
        " {'measure': 'queries', 'value': 12.5, 'unit': 'ms', 'goal': '<= 50', 'met': True},\n"
        " {'measure': 'ratio', 'value': 1.2, 'unit': 'x', 'goal': '<= 1.03', 'met': False}]}))\n")
    (tmp_path / "broken.py").write_text("raise SystemExit('no model here')\n")
    monkeypatch.setattr(run_all, "BENCH", tmp_path)
    monkeypatch.setattr(run_all, "BENCHES", {"fast": ([], 60), "broken": ([], 60)})
    out = tmp_path / "table.json"
    assert run_all.main(["--json", str(out)]) == 1
    table = json.loads(out.read_text())
    assert [(r["bench"], r["measure"], r["met"]) for r in table] == [
        ("fast", "queries", True), ("fast", "ratio", False), ("broken", "(bench)", False)]
    assert "no model here" in table[-1]["error"]
    printed = capsys.readouterr().out
    assert "1 of 3 rows meet their goal or have none; 2 do not" in printed
