"""The `studio` command starts light: help and `models list` import only what they show (an
import-graph check in fresh interpreters, not a timing test: bench/cli_start.py has the figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from studio.cli import build_parser, main
from studio.cli.generate import TASK_HELP

HEAVY = ("torch", "sqlalchemy", "gradio", "diffusers", "transformers")
PROBE = """
import json, sys
from studio.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
""" % (HEAVY,)


def fresh(args: list[str], home) -> tuple[subprocess.CompletedProcess, dict]:
    """`studio ARGS` run through the CLI's main in a new interpreter; what it printed, and its exit
    code and which heavy packages were imported by the end."""
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_MODEL_CACHE": str(home / "hf"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                            timeout=120)
    return result, json.loads(result.stderr.strip().splitlines()[-1])


def test_python_m_studio_help_lists_the_commands(tmp_path):
    result = subprocess.run([sys.executable, "-m", "studio", "--help"], capture_output=True, text=True,
                            env={**os.environ, "STUDIO_HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "generate", "models", "history"):
        assert command in result.stdout


HELPS = [["--help"], ["serve", "--help"], ["generate", "--help"], ["models", "--help"], ["history", "--help"],
         ["models", "list", "--help"], ["history", "show", "--help"]]


@pytest.mark.parametrize("args", HELPS, ids=[" ".join(a) for a in HELPS])
def test_help_imports_neither_the_database_nor_torch_nor_gradio(tmp_path, args):
    result, seen = fresh(args, tmp_path)
    assert seen == {"code": 0, "heavy": []}
    assert result.stdout.startswith("usage: studio")


def test_models_list_reads_the_cards_without_torch(tmp_path):
    result, seen = fresh(["models", "list"], tmp_path)
    assert seen["code"] == 0, result.stderr
    assert not {"torch", "diffusers", "transformers", "gradio"} & set(seen["heavy"])
    row = next(line for line in result.stdout.splitlines() if line.startswith("tiny-lumina-next "))
    assert "built in" in row
    assert any("not downloaded" in line for line in result.stdout.splitlines())


def test_serves_import_chain_does_not_pull_torch(tmp_path):
    """What `studio serve` runs before it builds the studio: its arguments parsed, the launcher
    module imported (the Studio's memory scheduler brings torch, and a job the rest)."""
    code = ("import sys\nfrom studio.cli import build_parser\nbuild_parser(['serve']).parse_args(['serve'])\n"
            "import studio.ui.launch\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "STUDIO_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_generate_help_lists_every_task_without_importing_them():
    from studio.tasks import TASKS

    assert set(TASK_HELP) == set(TASKS)  # the names `studio generate --help` lists without the specs


@pytest.mark.parametrize("task", sorted(TASK_HELP))
def test_every_task_has_working_help(task, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["generate", task, "--help"])
    assert exit_.value.code == 0
    assert "--model" in capsys.readouterr().out


def test_a_partly_built_parser_reads_a_command_as_the_full_one_does():
    for argv in (["generate", "image", "--model", "m", "--prompt", "p", "--size", "320x256", "--solver", "rk4",
                  "--param", "watershed=0.5"],
                 ["generate", "compose", "--model", "m", "--caption", "a", "--caption", "b", "--grid", "1x2"],
                 ["models", "info", "tiny-lumina-next", "--device", "cpu"],
                 ["history", "list", "--status", "done", "--page", "2"],
                 ["history", "export", "a", "b"], ["serve", "--port", "7000", "--share"], ["-v"]):
        assert vars(build_parser(argv).parse_args(argv)) == vars(build_parser().parse_args(argv)), argv


def test_a_mistyped_command_or_task_is_refused_by_name(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path))
    for argv, words in ((["generate", "imag"], "invalid choice: 'imag'"),
                        (["modles", "list"], "invalid choice: 'modles'"),
                        (["history", "list", "--status", "finished"], "invalid choice: 'finished'")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and words in capsys.readouterr().err


def test_the_catalog_shows_what_the_studio_shows(tmp_path):
    """`models list` and `info` read a Catalog, the Studio's cards and install records without its job
    side: each card's status line is the one the Models tab shows from the Studio."""
    from studio.model_manager import Catalog, status_text
    from studio.services import Studio
    from studio.settings import Settings

    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=tmp_path / "hf")
    catalog, studio = Catalog(settings), Studio(settings)
    try:
        assert sorted(catalog.cards.cards) == sorted(studio.cards.cards)
        for card in studio.cards.cards.values():
            assert status_text(catalog, card, detailed=True) == status_text(studio, card, detailed=True), card.id
    finally:
        catalog.close()
        studio.close()
