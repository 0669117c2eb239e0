"""What a job says while it runs: its stages in order (loading the model, and from where; encoding the
prompt; steps N/M; decoding; saving), and step progress from token models too."""

from __future__ import annotations

from studio.job import Stage
from studio.jobs import Job


def _record(studio) -> list[tuple[str, Stage, str, int, int]]:
    events: list[tuple[str, Stage, str, int, int]] = []
    studio.jobs.add_listener(lambda job: events.append((job.id, job.stage, job.stage_detail, job.step,
                                                        job.total_steps)))
    return events


def _stages(events, job: Job) -> list[Stage]:
    seen: list[Stage] = []
    for job_id, stage, *_ in events:
        if job_id == job.id and (not seen or seen[-1] is not stage):
            seen.append(stage)
    return seen


def test_a_job_goes_through_readable_stages_and_says_where_its_model_comes_from(studio):
    events = _record(studio)
    params = {"model": "tiny-lumina-next", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 3,
              "seed": 1}
    first = studio.run("image", params)
    assert first.error is None
    assert _stages(events, first) == [Stage.QUEUED, Stage.LOADING, Stage.ENCODING, Stage.STEPS, Stage.DECODING,
                                      Stage.SAVING]
    loading = [detail for job_id, stage, detail, *_ in events if job_id == first.id and stage is Stage.LOADING]
    assert loading and loading[0].endswith("from disk") and "Tiny Lumina-Next" in loading[0]
    steps = [(step, total) for job_id, stage, _, step, total in events if job_id == first.id and stage is Stage.STEPS]
    assert steps == [(1, 3), (2, 3)]  # then (3, 3): the last step, after which it decodes

    second = studio.run("image", params)
    loading = [detail for job_id, stage, detail, *_ in events if job_id == second.id and stage is Stage.LOADING]
    assert loading[0].endswith("already on cpu")
    assert first.describe() == "saving"  # the last stage it reported before it was done


def test_a_token_model_reports_its_token_steps_as_it_makes_them(studio):
    events = _record(studio)
    job = studio.run("music", {"model": "tiny-musicgen", "prompt": "a drum loop", "seconds": 1.0, "seed": 3})
    assert job.error is None
    steps = [(step, total) for job_id, stage, _, step, total in events if job_id == job.id and stage is Stage.STEPS]
    assert len(steps) > 10  # one per token step, not a single jump at the end
    assert [s for s, _ in steps] == sorted(s for s, _ in steps)
    assert job.step_unit == "token steps"
    assert job.total_steps == steps[0][1] > 0
