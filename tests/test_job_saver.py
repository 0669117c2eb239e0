"""Saving off the sampling thread (studio/job_saver.py): a job's files, thumbnail and rows are written
while the next job samples, and everything a user could observe stays as before — the handle says
done only once its files and rows are there, a failed save leaves no file and says why, a stop waits
for the saves it was handed, and the jobs finish in the order they ran."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from PIL import Image

from studio.errors import MediaError
from studio.history import JobStatus
from studio.job import Stage
from studio.services import Studio
from studio.settings import Settings

from helpers import files_under, image_params


def test_back_to_back_jobs_finish_in_order_each_with_its_files_and_rows(studio):
    outputs = studio.settings.outputs_dir
    seen_done: list[tuple[str, bool, JobStatus]] = []

    def on_change(job) -> None:
        if job.finished:  # the moment a front end hears "done": the files and the row must agree already
            record = studio.history.get_job(job.id)
            files = [outputs / a.path for a in record.assets]
            seen_done.append((job.id, bool(files) and all(p.is_file() for p in files), record.status))

    studio.jobs.add_listener(on_change)
    studio.jobs.pause()
    jobs = [studio.jobs.submit("image", image_params(seed=s)) for s in (1, 2, 3)]
    studio.jobs.resume()
    for job in jobs:
        assert job.wait(120) and job.status is JobStatus.DONE, job.error
    deadline = time.monotonic() + 10  # the listeners hear the end just after the done event is set
    while len(seen_done) < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [d[0] for d in seen_done] == [j.id for j in jobs]  # in the order they ran
    assert all(has_files and status is JobStatus.DONE for _, has_files, status in seen_done)
    for job in jobs:
        record = studio.history.get_job(job.id)
        assert sorted(a.kind for a in record.assets) == ["image", "thumbnail"]
        for asset in record.assets:
            assert hashlib.sha256((outputs / asset.path).read_bytes()).hexdigest() == asset.sha256
        [image] = job.outputs
        assert image.picture is None  # the handle keeps the file's facts, not the pixels
        with Image.open(image.path) as png, Image.open(outputs / record.assets[1].path) as thumb:
            assert png.size == (256, 256) and max(thumb.size) <= 320
    finished = [studio.history.get_job(j.id).finished_at for j in jobs]
    assert finished == sorted(finished)


def test_the_thumbnail_made_from_memory_is_the_one_the_file_makes(studio, tmp_path):
    from studio.media import save_thumbnail

    job = studio.run("image", image_params(), timeout=120)
    record = studio.history.get_job(job.id)
    [thumb_asset] = [a for a in record.assets if a.kind == "thumbnail"]
    from_file = save_thumbnail(job.outputs[0].path, tmp_path, "from-file.webp")  # decoding the PNG written
    made = (studio.settings.outputs_dir / thumb_asset.path).read_bytes()
    assert made == from_file.path.read_bytes() and thumb_asset.sha256 == from_file.sha256
    with Image.open(from_file.path) as thumb:
        assert thumb.size == (256, 256)  # no larger than THUMBNAIL_PX: a 256 picture stays 256


def test_a_failed_save_fails_the_job_leaves_no_file_and_the_next_job_runs(studio, monkeypatch):
    import studio.media as media

    real_save_png = media.save_png
    calls = []

    def second_image_fails(image, outputs_dir, relpath, **kwargs):
        calls.append(relpath)
        if len(calls) == 2:
            raise MediaError(f"disk full while writing {relpath}; free some space and retry")
        return real_save_png(image, outputs_dir, relpath, **kwargs)

    monkeypatch.setattr(media, "save_png", second_image_fails)
    job = studio.run("image", image_params(num_images=2), timeout=120)
    assert job.status is JobStatus.FAILED and "disk full" in job.error and job.outputs == []
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.FAILED and "disk full" in record.error and record.assets == ()
    assert not [p for p in files_under(studio.settings.outputs_dir) if job.id in p.name]  # the first image too
    monkeypatch.setattr(media, "save_png", real_save_png)
    after = studio.run("image", image_params(), timeout=120)
    assert after.status is JobStatus.DONE and after.outputs[0].path.is_file()


def test_a_stop_waits_for_the_save_it_was_handed(settings, monkeypatch):
    from studio.tasks.image import ImageTask

    real_save = ImageTask.save
    saving = threading.Event()

    def slow_save(self, *args, **kwargs):
        saving.set()
        time.sleep(1.5)  # a big picture on a slow disk
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(ImageTask, "save", slow_save)
    studio = Studio(settings).start()
    try:
        job = studio.jobs.submit("image", image_params())
        assert saving.wait(120) and job.stage is Stage.SAVING and not job.finished
    finally:
        studio.close()
    assert job.finished and job.status is JobStatus.DONE, job.error
    with Studio(settings) as again:  # what the next start finds: the row done, its files there
        record = again.history.get_job(job.id)
        assert record.status is JobStatus.DONE and len(record.assets) == 2
        assert all((settings.outputs_dir / a.path).is_file() for a in record.assets)


def test_a_stop_with_saves_backed_up_saves_what_was_sampled_and_cancels_nothing(settings, monkeypatch):
    """A saves while B waits in the hand-off and C, sampled, waits for room: a stop that runs out of time
    must not record C as cancelled (nobody cancelled it), and every handle ends as its row says."""
    from studio.tasks.image import ImageTask

    real_save = ImageTask.save
    release = threading.Event()

    def held_save(self, *args, **kwargs):
        release.wait(60)
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(ImageTask, "save", held_save)
    studio = Studio(settings).start()
    jobs = [studio.jobs.submit("image", image_params(seed=s)) for s in (1, 2, 3)]
    deadline = time.monotonic() + 120
    while jobs[2].stage is not Stage.SAVING:
        assert time.monotonic() < deadline, "the third job never finished sampling"
        time.sleep(0.02)
    threading.Timer(0.5, release.set).start()  # the saves go on once the stop has given up waiting
    studio.close(job_grace_s=0.2)
    for job in jobs:
        assert job.finished
    with Studio(settings) as again:
        rows = [again.history.get_job(j.id) for j in jobs]
    assert [r.status for r in rows] == [j.status for j in jobs]
    assert JobStatus.CANCELLED not in [r.status for r in rows]
    assert {r.status for r in rows} <= {JobStatus.DONE, JobStatus.INTERRUPTED}
    for record in rows:
        assert (record.status is JobStatus.DONE) == bool(record.assets)
        assert all((settings.outputs_dir / a.path).is_file() for a in record.assets)


def test_a_job_cancelled_while_it_waits_for_the_saver_writes_nothing(studio, monkeypatch):
    from studio.tasks.image import ImageTask

    real_save = ImageTask.save
    release = threading.Event()

    def held_save(self, *args, **kwargs):
        release.wait(60)  # the first job's save holds the saver while the second one finishes sampling
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(ImageTask, "save", held_save)
    first = studio.jobs.submit("image", image_params(seed=1))
    second = studio.jobs.submit("image", image_params(seed=2))
    deadline = time.monotonic() + 120
    while second.stage is not Stage.SAVING:
        assert time.monotonic() < deadline, "the second job never finished sampling"
        time.sleep(0.02)
    assert [e.job_id for e in studio.jobs.snapshot()] == [first.id, second.id]  # both still shown, saving
    assert studio.jobs.cancel(second.id)
    release.set()
    assert first.wait(120) and first.status is JobStatus.DONE, first.error
    assert second.wait(120) and second.status is JobStatus.CANCELLED
    record = studio.history.get_job(second.id)
    assert record.status is JobStatus.CANCELLED and record.assets == ()
    assert not [p for p in files_under(studio.settings.outputs_dir) if second.id in p.name]


def test_a_kill_in_the_middle_of_a_save_leaves_no_row_done_and_no_file_behind(tmp_path, model_cache):
    """The process dies after the saver wrote a job's picture and before its rows: the next start finds
    the row interrupted (never done without its files) and removes the file no row owns."""
    home = tmp_path / "home"
    script = textwrap.dedent(f"""
        import time
        from studio.services import Studio
        from studio.settings import Settings
        from studio.tasks.image import ImageTask
        real_save = ImageTask.save

        def save_then_hang(self, output, spec, card, ctx):
            saved = real_save(self, output, spec, card, ctx)
            print(ctx.job_id, saved[0].path, flush=True)
            time.sleep(600)

        ImageTask.save = save_then_hang
        studio = Studio(Settings.load(env={{}}, home={str(home)!r}, model_cache={str(model_cache)!r})).start()
        studio.jobs.submit("image", {image_params()!r})
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        ready = select.select([proc.stdout], [], [], 300)[0]  # a child that stalls must not hang the suite
        assert ready, "the child never reported its job"
        job_id, picture = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert Path(picture).is_file()  # written complete under its final name, its rows not yet
    with Studio(Settings.load(env={}, home=home, model_cache=model_cache)) as studio:
        record = studio.history.get_job(job_id)
        assert record.status is JobStatus.INTERRUPTED and record.assets == ()
        assert not Path(picture).exists()
        assert not [p for p in files_under(studio.settings.outputs_dir) if job_id in p.name]
