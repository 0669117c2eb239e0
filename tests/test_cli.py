"""The command line runs the same job path headless: `studio generate image ...`."""

import os
import subprocess
import sys
from pathlib import Path

from studio.history import HistoryStore, JobStatus
from studio.media import read_png_metadata

from helpers import FAST_STEPS, files_under

STUDIO = Path(sys.executable).with_name("studio")  # the installed console script


def run_cli(args, home, model_cache):
    command = [str(STUDIO)] if STUDIO.exists() else [sys.executable, "-m", "studio.cli"]
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_MODEL_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command + args, capture_output=True, text=True, env=env, timeout=300)


def test_generate_prints_job_seed_and_file(tmp_path, model_cache):
    home = tmp_path / "home"
    result = run_cli(["generate", "image", "--model", "tiny-lumina2", "--prompt", "a paper boat",
                      "--negative", "rain", "--steps", str(FAST_STEPS), "--seed", "77", "--size", "256x384"],
                     home, model_cache)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    job_id = lines[0].split()[1].rstrip(":")
    assert lines[0].endswith("done") and lines[1] == "seed 77"
    output = Path(lines[2])
    assert output.is_file() and output.is_relative_to(home / "outputs")
    meta = read_png_metadata(output)
    assert meta.infotext.fields["Size"] == "256x384" and meta.infotext.negative_prompt == "rain"
    store = HistoryStore(home / "studio.db")
    try:
        record = store.get_job(job_id)
        assert record.status is JobStatus.DONE and record.assets[0].path == output.relative_to(home / "outputs").as_posix()
    finally:
        store.close()


def test_bad_input_exits_non_zero_with_the_reason_and_records_it(tmp_path, model_cache):
    home = tmp_path / "home"
    result = run_cli(["generate", "image", "--model", "tiny-lumina-next", "--prompt", "x", "--steps", "0"],
                     home, model_cache)
    assert result.returncode == 1
    assert "steps" in result.stderr and "greater than or equal to 1" in result.stderr
    store = HistoryStore(home / "studio.db")
    try:
        [record] = store.list_jobs()
        assert record.status is JobStatus.FAILED and "steps" in record.error
    finally:
        store.close()
    assert files_under(home / "outputs") == []


def test_unknown_model_and_malformed_size(tmp_path, model_cache):
    unknown = run_cli(["generate", "image", "--model", "nope", "--prompt", "x"], tmp_path, model_cache)
    assert unknown.returncode == 1 and "Unknown model 'nope'" in unknown.stderr
    malformed = run_cli(["generate", "image", "--model", "tiny-lumina2", "--prompt", "x", "--size", "big"],
                        tmp_path, model_cache)
    assert malformed.returncode == 2 and "WIDTHxHEIGHT" in malformed.stderr


def test_models_list_shows_the_cards(tmp_path, model_cache):
    result = run_cli(["models", "list"], tmp_path, model_cache)
    assert result.returncode == 0
    assert "tiny-lumina-next" in result.stdout and "random weights" in result.stdout
