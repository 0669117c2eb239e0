"""Bad input: a clear message, the job row failed with the reason, nothing written, the worker keeps going."""

import math

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from studio.errors import MediaError
from studio.history import JobStatus

from helpers import files_under, image_params

BAD = {
    "empty prompt": ({"prompt": "   "}, "prompt is empty"),
    "size not a multiple": ({"width": 250}, "multiples of 16"),
    "size too large": ({"width": 4096, "height": 4096}, "between 64 and 1024"),
    "zero steps": ({"steps": 0}, "steps: Input should be greater than or equal to 1"),
    "too many steps": ({"steps": 1001}, "steps: Input should be less than or equal to 1000"),
    "cfg nan": ({"cfg": math.nan}, "cfg: Input should be a finite number"),
    "cfg inf": ({"cfg": math.inf}, "cfg: Input should be a finite number"),
    "cfg text": ({"cfg": "lots"}, "cfg: Input should be a valid number"),
    "unknown model": ({"model": "sdxl-turbo"}, "Unknown model 'sdxl-turbo'"),
    "unknown parameter": ({"sampler": "dpm"}, "sampler: not a parameter"),
    "seed out of range": ({"seed": 2**40}, "seed: Input should be less than or equal to"),
}


@pytest.mark.parametrize("change, message", BAD.values(), ids=BAD.keys())
def test_bad_input_fails_the_job_with_the_reason(studio, change, message):
    job = studio.jobs.submit("image", image_params(**change))
    assert job.finished and job.status is JobStatus.FAILED
    assert message in job.error
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.FAILED and message in record.error
    assert files_under(studio.settings.outputs_dir) == []
    # The worker is still there for the next good job.
    assert studio.run("image", image_params()).status is JobStatus.DONE


def test_a_refused_request_is_never_seen_waiting_so_no_worker_can_take_it(studio, monkeypatch):
    # The worker claims the oldest pending row the moment it sees one. Claim as it would, right after
    # the refused request's row is written: a refused row must already read failed by then.
    claimed = []
    create_job = studio.history.create_job

    def create_then_claim(**kwargs):
        job_id = create_job(**kwargs)
        claimed.append(studio.history.claim_next())
        return job_id

    monkeypatch.setattr(studio.history, "create_job", create_then_claim)
    job = studio.jobs.submit("image", image_params(prompt="   "))
    assert claimed == [None]
    assert job.status is JobStatus.FAILED and "prompt is empty" in job.error
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.FAILED and record.error == job.error and record.finished_at is not None


def test_model_not_downloaded_says_how_to_get_it(studio):
    job = studio.run("image", image_params(model="lumina-next-sft", width=1024, height=1024))
    assert job.status is JobStatus.FAILED
    assert "not in the model cache" in job.error and "studio models download lumina-next-sft" in job.error
    assert studio.history.get_job(job.id).error == job.error
    assert files_under(studio.settings.outputs_dir) == []


def test_a_write_failure_midway_leaves_no_file_of_the_job(studio, monkeypatch):
    import studio.media as image_module  # the PNG writer every image task uses

    real_save = image_module.save_png
    calls = []

    def disk_full_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MediaError("No space left on device while writing the output")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(image_module, "save_png", disk_full_on_second)
    job = studio.run("image", image_params(num_images=2))
    assert len(calls) == 2  # the first image was really written before the failure
    assert job.status is JobStatus.FAILED and "No space left" in job.error
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.FAILED and record.assets == ()
    assert files_under(studio.settings.outputs_dir) == []
    monkeypatch.setattr(image_module, "save_png", real_save)
    assert studio.run("image", image_params()).status is JobStatus.DONE


def test_an_unexpected_error_inside_a_pipeline_fails_only_that_job(studio, monkeypatch):
    from studio.tasks.image import ImageTask

    def explode(self, pipeline, spec, card, on_step):
        on_step(1, spec.steps)
        raise RuntimeError("CUDA error: device-side assert triggered")

    with monkeypatch.context() as patch:
        patch.setattr(ImageTask, "run", explode)
        job = studio.run("image", image_params())
    assert job.status is JobStatus.FAILED and "Internal error (RuntimeError)" in job.error
    assert "server log" in job.error and "device-side" not in job.error  # the log has the internals
    assert studio.run("image", image_params()).status is JobStatus.DONE


@pytest.mark.parametrize("raised, says", [
    (lambda: OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")),
     "stayed locked by another program"),
    (lambda: OperationalError("INSERT INTO jobs ...", {}, sqlite3.OperationalError("database or disk is full")),
     "The disk is full"),
    (lambda: AttributeError("'list' object has no attribute 'get'"), "Internal error (AttributeError)"),
])
def test_what_a_client_reads_of_an_internal_failure_says_what_to_do_not_the_internals(studio, monkeypatch,
                                                                                      raised, says):
    from studio.tasks.image import ImageTask

    def fail(self, pipeline, spec, card, on_step):
        raise raised()

    with monkeypatch.context() as patch:
        patch.setattr(ImageTask, "run", fail)
        job = studio.run("image", image_params())
    assert job.status is JobStatus.FAILED and says in job.error, job.error
    assert "SQL" not in job.error and "INSERT" not in job.error and "attribute 'get'" not in job.error
    assert studio.history.get_job(job.id).error == job.error


def test_a_task_that_does_not_exist(studio):
    job = studio.jobs.submit("hologram", {"model": "tiny-lumina-next", "prompt": "waves"})
    assert job.status is JobStatus.FAILED and "Unknown task 'hologram'" in job.error
    assert studio.history.get_job(job.id).status is JobStatus.FAILED


def test_a_card_with_a_bad_default_fails_the_job_not_the_app(tmp_path, model_cache):
    from studio.services import Studio
    from studio.settings import REPO_ROOT, Settings

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    card = (REPO_ROOT / "model_zoo" / "tiny-lumina-next.yaml").read_text()
    (zoo / "broken.yaml").write_text(card.replace("steps: 30", "steps: many"))
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache, model_zoo_dir=zoo)
    with Studio(settings) as studio:
        job = studio.jobs.submit("image", {"model": "tiny-lumina-next", "prompt": "a boat"})
        assert job.status is JobStatus.FAILED and "bad default" in job.error and "steps" in job.error
