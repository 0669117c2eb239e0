"""The command line runs the same job path headless: `studio generate image ...` (the other tabs:
test_cli_tabs.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from studio.history import HistoryStore, JobStatus
from studio.media import read_png_metadata

from helpers import FAST_STEPS, files_under

STUDIO = Path(sys.executable).with_name("studio")  # the installed console script


def run_cli(args, home, model_cache):
    command = [str(STUDIO)] if STUDIO.exists() else [sys.executable, "-m", "studio.cli"]
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_MODEL_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command + args, capture_output=True, text=True, env=env, timeout=300)


class InProcess:
    """`studio ...` run by calling the CLI's main in this process (the same code a console script runs,
    without a new interpreter importing torch each time); what it printed and its exit status (argparse's
    SystemExit included, as the console script would exit with it). The console script itself, in a
    process of its own, is test_generate_prints_job_seed_and_file's."""

    def __init__(self, capsys, monkeypatch, home, model_cache):
        self.capsys = capsys
        for name, value in (("STUDIO_HOME", home), ("STUDIO_MODEL_CACHE", model_cache), ("HF_HUB_OFFLINE", "1")):
            monkeypatch.setenv(name, str(value))

    def __call__(self, args):
        from studio.cli import main

        self.capsys.readouterr()
        try:
            code = main(args)
        except SystemExit as exit_:
            code = exit_.code
        out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)


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
        assert record.status is JobStatus.DONE
        assert record.assets[0].path == output.relative_to(home / "outputs").as_posix()
    finally:
        store.close()


def test_generate_with_llamagen_by_class_name_and_its_sampling_flags(tmp_path, model_cache, capsys, monkeypatch):
    studio = InProcess(capsys, monkeypatch, tmp_path / "home", model_cache)
    result = studio(["generate", "image", "--model", "tiny-llamagen-c2i", "--prompt", "tabby", "--temperature",
                     "0.8", "--top-k", "16", "--top-p", "0.9", "--seed", "3"])
    assert result.returncode == 0, result.stderr
    fields = read_png_metadata(Path(result.stdout.strip().splitlines()[2])).infotext.fields
    assert (fields["Class"], fields["Temperature"], fields["Top-k"], fields["Top-p"]) == ("281", "0.8", "16", "0.9")
    refused = studio(["generate", "image", "--model", "tiny-llamagen-c2i", "--prompt", "x", "--class", "1000"])
    assert refused.returncode == 1 and "class_id" in refused.stderr


def test_bad_input_exits_non_zero_with_the_reason_and_records_it(tmp_path, model_cache, capsys, monkeypatch):
    home = tmp_path / "home"
    result = InProcess(capsys, monkeypatch, home, model_cache)(["generate", "image", "--model", "tiny-lumina-next",
                                                               "--prompt", "x", "--steps", "0"])
    assert result.returncode == 1
    assert "steps" in result.stderr and "greater than or equal to 1" in result.stderr
    store = HistoryStore(home / "studio.db")
    try:
        [record] = store.list_jobs()
        assert record.status is JobStatus.FAILED and "steps" in record.error
    finally:
        store.close()
    assert files_under(home / "outputs") == []


def test_unknown_model_and_malformed_size(tmp_path, model_cache, capsys, monkeypatch):
    studio = InProcess(capsys, monkeypatch, tmp_path, model_cache)
    unknown = studio(["generate", "image", "--model", "nope", "--prompt", "x"])
    assert unknown.returncode == 1 and "Unknown model 'nope'" in unknown.stderr
    malformed = studio(["generate", "image", "--model", "tiny-lumina2", "--prompt", "x", "--size", "big"])
    assert malformed.returncode == 2 and "WIDTHxHEIGHT" in malformed.stderr


def test_models_list_shows_the_cards(tmp_path, model_cache, capsys, monkeypatch):
    result = InProcess(capsys, monkeypatch, tmp_path, model_cache)(["models", "list"])
    assert result.returncode == 0
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["ID", "TASKS", "STATUS", "ON", "DISK", "TITLE"]
    assert any(row.startswith("tiny-lumina-next ") and "built in" in row for row in rows)


def test_history_list_rerun_show_export_and_delete(tmp_path, model_cache, capsys, monkeypatch):
    studio = InProcess(capsys, monkeypatch, tmp_path / "home", model_cache)
    for prompt in ("a paper boat", "a red kite"):
        assert studio(["generate", "image", "--model", "tiny-lumina-next", "--prompt", prompt, "--steps",
                       str(FAST_STEPS), "--size", "256x256"]).returncode == 0
    listed = studio(["history", "list", "--search", "kite"])
    assert listed.returncode == 0, listed.stderr
    [row, footer] = listed.stdout.strip().splitlines()
    job_id = row.split()[0]
    assert "'a red kite'" in row and footer == "page 1: 1 of 1 jobs"

    again = studio(["history", "rerun", job_id])
    assert again.returncode == 0, again.stderr
    rerun_file = Path(again.stdout.strip().splitlines()[1])
    original = Path(json.loads(studio(["history", "show", job_id]).stdout)["files"][0])
    assert rerun_file != original  # a new job and file, with the same picture
    assert np.array_equal(np.asarray(Image.open(original)), np.asarray(Image.open(rerun_file)))

    exported = studio(["history", "export", job_id])
    assert exported.returncode == 0 and Path(exported.stdout.strip()).suffix == ".zip"
    deleted = studio(["history", "delete", job_id])
    assert deleted.returncode == 0 and "2 files" in deleted.stdout and not original.exists()
    missing = studio(["history", "show", job_id])
    assert missing.returncode == 2 and "not in the history" in missing.stderr
