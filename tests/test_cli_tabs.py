"""`studio generate <task>` for every tab, run in-process through `studio.cli.main` with the built-in
tiny models (smallest sizes, one or two steps), and read-only commands that leave the job queue alone."""

from __future__ import annotations

import hashlib

import pytest
import yaml
from PIL import Image

from fakehub import FakeHub, hub_online
from helpers import files_under, image_params, kept

from studio.cli import build_parser, main
from studio.history import HistoryStore, JobStatus
from studio.media import read_png_metadata
from studio.media_av import read_audio, read_video
from studio.services import Studio
from studio.settings import Settings
from studio.zoo.cards import CardRegistry


def cli(capsys, home, model_cache, *args):
    """`studio <command> <action> --home … --model-cache … ARGS`: (exit status, stdout lines, stderr)."""
    argv = [*args[:2], "--home", str(home), "--model-cache", str(model_cache), *args[2:]]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse refusing a flag
        code = exit.code
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def finished(home, lines):
    """The job the printed lines name, read back from the history, and the printed output paths."""
    job_id, status = lines[0].removeprefix("job ").split(": ")
    assert status == "done" and lines[1].startswith("seed ")
    store = HistoryStore(home / "studio.db")
    try:
        record = store.get_job(job_id)
    finally:
        store.close()
    assert record.status is JobStatus.DONE
    paths = [home / "outputs" / a.path for a in record.assets if a.kind != "thumbnail"]
    assert [str(p) for p in paths] == lines[2:] and all(p.is_file() for p in paths)
    return record, paths


def test_video_from_a_start_image_given_as_a_relative_path(tmp_path, model_cache, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 48), (200, 120, 40)).save(tmp_path / "start.png")
    home = tmp_path / "home"
    code, lines, err = cli(capsys, home, model_cache, "generate", "video", "--model", "tiny-wan-i2v", "--prompt",
                           "waves at dusk", "--image", "start.png", "--frames", "5", "--fps", "8", "--steps", "1",
                           "--seed", "5", "--shift", "2.5")
    assert code == 0, err
    assert lines[1] == "seed 5"
    record, paths = finished(home, lines)
    assert [p.suffix for p in paths] == [".mp4", ".png", ".png"]  # the clip, its poster, the start image
    info = read_video(paths[0])
    assert (info.frames, info.fps, info.width, info.height) == (5, 8, 64, 48)
    # Recorded as an absolute path to the job's own copy: the job may run in the studio serving this folder.
    assert kept(record.params["image"], tmp_path / "start.png")
    assert record.params["shift"] == 2.5 and record.params["frames"] == 5


def test_audio_with_its_length_steps_and_format(tmp_path, model_cache, capsys):
    home = tmp_path / "home"
    code, lines, err = cli(capsys, home, model_cache, "generate", "audio", "--model", "tiny-stable-audio",
                           "--prompt", "rain on a tin roof", "--negative", "wind", "--seconds", "1", "--steps", "2",
                           "--format", "flac")
    assert code == 0, err
    record, paths = finished(home, lines)
    assert [p.suffix for p in paths] == [".flac", ".png"]  # the sound and its waveform picture
    audio = read_audio(paths[0])
    assert audio.samples == pytest.approx(audio.sample_rate * 1.0, rel=0.05)
    assert (record.params["seconds"], record.params["steps"], record.negative_prompt) == (1.0, 2, "wind")


def test_music_with_its_familys_sampling_flags(tmp_path, model_cache, capsys):
    home = tmp_path / "home"
    code, lines, err = cli(capsys, home, model_cache, "generate", "music", "--model", "tiny-musicgen", "--prompt",
                           "lo-fi piano", "--seconds", "1", "--top-k", "10", "--temperature", "0.9", "--seed", "2")
    assert code == 0, err
    record, paths = finished(home, lines)
    assert [p.suffix for p in paths] == [".wav", ".png"]
    assert (record.params["top_k"], record.params["temperature"], record.seed) == (10, 0.9, 2)


def test_compose_from_captions_in_one_row_by_default(tmp_path, model_cache, capsys):
    home = tmp_path / "home"
    code, lines, err = cli(capsys, home, model_cache, "generate", "compose", "--model", "tiny-lumina-next",
                           "--caption", "a moon", "--caption", "a tree", "--cell-size", "64x64", "--steps", "2")
    assert code == 0, err
    record, [picture] = finished(home, lines)
    assert Image.open(picture).size == (128, 64)
    assert (record.params["grid_rows"], record.params["grid_cols"]) == (1, 2)
    assert record.params["captions"] == ["a moon", "a tree"] and record.prompt == "a moon | a tree"


def test_anagram_from_two_readings_with_the_default_views(tmp_path, model_cache, capsys):
    home = tmp_path / "home"
    code, lines, err = cli(capsys, home, model_cache, "generate", "anagram", "--model", "tiny-lumina-next",
                           "--prompt", "an old man", "--prompt", "a snowy mountain", "--size", "64x64", "--steps", "2")
    assert code == 0, err
    record, paths = finished(home, lines)
    assert [p.suffix for p in paths] == [".png", ".png", ".png", ".gif"]  # the picture, turned, the preview, the GIF
    assert record.params["views"] == ["identity", "rotate_180"]
    assert record.params["prompts"] == ["an old man", "a snowy mountain"]


def test_a_class_alone_draws_a_class_conditional_model(tmp_path, model_cache, capsys):
    home = tmp_path / "home"
    code, lines, err = cli(capsys, home, model_cache, "generate", "image", "--model", "tiny-llamagen-c2i",
                           "--class", "207", "--seed", "3")
    assert code == 0, err
    record, [picture] = finished(home, lines)
    assert record.prompt == "207 · golden retriever" and record.params["class_id"] == 207
    assert read_png_metadata(picture).infotext.fields["Class"] == "207"


def test_param_sends_any_option_by_name_and_wins_over_a_flag(tmp_path, model_cache, capsys):
    home = tmp_path / "home"
    code, lines, err = cli(capsys, home, model_cache, "generate", "image", "--model", "tiny-lumina-next",
                           "--prompt", "a kite", "--size", "64x64", "--steps", "4", "--param", "steps=2",
                           "--param", "solver=euler", "--param", 'cfg_mode="plain"', "--param", "num_images=2")
    assert code == 0, err
    record, paths = finished(home, lines)
    assert len(paths) == 2
    assert (record.params["steps"], record.params["solver"], record.params["cfg_mode"]) == (2, "euler", "plain")


@pytest.mark.parametrize("args, message", [
    (["video", "--model", "tiny-wan", "--prompt", "x", "--frames", "abc"], "--frames: expected int, got 'abc'"),
    (["video", "--model", "tiny-wan-i2v", "--prompt", "x", "--image", "nope.png"], "--image: no such file: nope.png"),
    (["video", "--model", "tiny-wan-i2v", "--prompt", "x", "--control-video", "."], "--control-video: not a file: ."),
    (["audio", "--model", "tiny-stable-audio", "--prompt", "x", "--format", "mp3"], "--format: invalid choice: 'mp3'"),
    (["compose", "--model", "tiny-lumina-next", "--caption", "a", "--grid", "big"], "--grid: must look like ROWSxCOLS"),
    (["image", "--model", "tiny-lumina-next", "--prompt", "x", "--param", "steps"], "--param: expected KEY=VALUE"),
    (["image", "--model", "tiny-lumina-next", "--prompt", "x", "--param", "sampler=euler"],
     "--param sampler: not a parameter of image jobs"),
], ids=["number", "missing-file", "folder", "choice", "grid", "param-form", "param-name"])
def test_a_bad_flag_value_exits_2_with_the_reason_and_runs_nothing(tmp_path, model_cache, capsys, monkeypatch, args,
                                                                   message):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    code, _, err = cli(capsys, home, model_cache, "generate", *args)
    assert code == 2 and message in err
    assert not (home / "studio.db").exists()  # refused before any studio opened the folder


def test_pairs_and_lists_become_the_specs_fields():
    from studio.cli.generate import job_params

    parse = build_parser().parse_args
    assert job_params(parse(["generate", "compose", "--model", "m", "--grid", "2x1", "--caption", "a", "--caption",
                             "", "--cell-size", "64x32"])) == {
        "model": "m", "grid_rows": 2, "grid_cols": 1, "captions": ["a", ""], "cell_width": 64, "cell_height": 32}
    assert job_params(parse(["generate", "anagram", "--model", "m", "--prompt", "a", "--view", "identity", "--prompt",
                             "b", "--view", "flip_vertical", "--style", "an oil painting of"])) == {
        "model": "m", "prompts": ["a", "b"], "views": ["identity", "flip_vertical"], "style": "an oil painting of"}
    assert job_params(parse(["generate", "image", "--model", "m", "--class-id", "5", "--size", "64x32"])) == {
        "model": "m", "class_id": 5, "width": 64, "height": 32}


# -- read-only commands never take the job queue -------------------------------------------------------


def pending_job(home, model_cache) -> str:
    """A job left pending in the history (submitted by a studio that does not run the queue)."""
    studio = Studio(Settings.load(env={}, home=home, model_cache=model_cache))
    try:
        job = studio.jobs.submit("image", image_params(width=64, height=64, steps=2))
        assert job.status is JobStatus.PENDING
        return job.id
    finally:
        studio.close()


def assert_still_pending(home, job_id):
    store = HistoryStore(home / "studio.db")
    try:
        record = store.get_job(job_id)
    finally:
        store.close()
    assert record.status is JobStatus.PENDING and record.started_at is None
    assert files_under(home / "outputs" / "image") == []  # (an export's zip lands in outputs/exports)
    assert not (home / "studio.lock").exists()  # the queue's ownership was never even tried


def test_models_list_prints_aligned_columns_and_leaves_a_pending_job_alone(tmp_path, model_cache, capsys):
    home = tmp_path / "home"
    job_id = pending_job(home, model_cache)
    code, lines, err = cli(capsys, home, model_cache, "models", "list")
    assert code == 0, err
    assert_still_pending(home, job_id)
    header, rows = lines[0], lines[1:]
    assert header.split() == ["ID", "TASKS", "STATUS", "ON", "DISK", "TITLE"]
    for row in rows:  # every left-aligned column starts where its heading does
        for column in ("TASKS", "STATUS", "TITLE"):
            start = header.index(column)
            assert row[start - 2:start] == "  " and row[start] != " ", (column, row)
    title = CardRegistry.load([Settings.load(env={}).model_zoo_dir]).get("tiny-lumina-next").title
    lumina = next(row for row in rows if row.startswith("tiny-lumina-next "))
    assert lumina.split()[1:3] == ["image,compose,anagram", "built"] and lumina.endswith(f"  {title}")


def test_models_info_and_history_commands_leave_a_pending_job_alone(tmp_path, model_cache, capsys):
    home = tmp_path / "home"
    job_id = pending_job(home, model_cache)
    for args in (("models", "info", "tiny-lumina-next"), ("history", "list"), ("history", "show", job_id),
                 ("history", "export", job_id)):
        code, lines, err = cli(capsys, home, model_cache, *args)
        assert code == 0, (args, err)
    assert_still_pending(home, job_id)


def test_models_download_runs_the_download_queue_but_no_job(tmp_path, model_cache, capsys, monkeypatch):
    home = tmp_path / "home"
    job_id = pending_job(home, model_cache)
    (home / "model_cards").mkdir(parents=True, exist_ok=True)
    (home / "model_cards" / "small-model.yaml").write_text(yaml.safe_dump({
        "id": "small-model", "title": "Small test model", "family": "diffusers", "tasks": ["image"],
        "source": {"repo": "test-org/small-model"}, "pipeline": "LuminaPipeline", "memory_gb": 1, "license": "mit"}))
    weights = hashlib.sha256(b"small").digest() * 4096
    with FakeHub() as hub, hub_online():
        hub.add_repo("test-org/small-model", {"model_index.json": b'{"_class_name": "LuminaPipeline"}',
                                              "transformer/diffusion_pytorch_model.safetensors": weights})
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        code, lines, err = cli(capsys, home, tmp_path / "cache", "models", "download", "small-model")
    assert code == 0, err
    assert lines[-1].startswith("small-model ready")
    assert_still_pending(home, job_id)
