"""Property-based fuzzing: any parameters, for any task, through validation and submission give a
job that is either waiting to run or failed with a clear reason — never a crash, never a dead worker."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from studio.history import JobStatus
from studio.services import Studio
from studio.settings import Settings
from studio.tasks import TASKS

from helpers import image_params

FIELDS = sorted({name for task in TASKS.values() for name in task.spec_type.model_fields} | {"junk", "", "__class__"})

values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


# A valid job per task: half the examples start here and change a field or two, so both the accepted
# and the refused paths are explored (pure noise is refused almost always).
VALID = {
    "image": image_params(),
    "video": {"model": "tiny-wan", "prompt": "waves", "width": 64, "height": 48, "frames": 5, "steps": 2},
    "audio": {"model": "tiny-stable-audio", "prompt": "rain", "seconds": 1.0, "steps": 2},
    "music": {"model": "tiny-musicgen", "prompt": "lo-fi piano", "seconds": 1.0},
    "compose": {"model": "tiny-lumina-next", "grid_rows": 1, "grid_cols": 2, "captions": ["a moon", "a sea"],
                "steps": 2},
    "anagram": {"model": "tiny-lumina-next", "prompts": ["an old man", "a mountain"],
                "views": ["identity", "rotate_180"], "steps": 2},
}
plausible = (st.integers(min_value=-10, max_value=300) | st.floats(min_value=-10, max_value=300)
             | st.sampled_from(["", "a lighthouse", "identity", "rotate_180", "wav", "midpoint"]) | values)


@st.composite
def job_requests(draw):
    if draw(st.booleans()):
        task = draw(st.sampled_from(sorted(VALID)))
        params = dict(VALID[task])
        own = sorted(TASKS[task].spec_type.model_fields)
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            params[draw(st.sampled_from(own) | st.sampled_from(FIELDS))] = draw(plausible)
        return task, params
    task = draw(st.sampled_from([*TASKS, "hologram", ""]))
    params = draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8))
    if draw(st.booleans()):
        params["model"] = draw(st.sampled_from(["tiny-lumina-next", "tiny-lumina2", "tiny-wan", "tiny-stable-audio",
                                                "tiny-musicgen", "lumina-next-sft", "no-such-model"]))
    if draw(st.booleans()):
        params["prompt"] = draw(st.text(max_size=60))
    return task, params


@pytest.fixture(scope="module")
def paused_studio(tmp_path_factory, model_cache):
    """A studio whose queue is paused: valid fuzzed jobs wait in line and are cancelled, never run."""
    settings_ = Settings.load(env={}, home=tmp_path_factory.mktemp("fuzz-home"), model_cache=model_cache)
    with Studio(settings_) as studio:
        studio.jobs.pause()
        yield studio


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(request=job_requests())
def test_any_parameters_give_a_waiting_job_or_a_clear_reason(paused_studio, request):
    task, params = request
    job = paused_studio.jobs.submit(task, params)
    event(f"{task or '(none)'}: {job.status.value}")  # pytest --hypothesis-show-statistics shows the mix
    record = paused_studio.history.get_job(job.id)
    assert record is not None and record.status is job.status
    if job.status is JobStatus.FAILED:
        assert job.error and not job.error.startswith("Internal error") and len(job.error) < 4000, job.error
        assert record.error == job.error
    else:
        assert job.status is JobStatus.PENDING  # valid: resolved against its card, seed drawn
        assert 0 <= record.seed < 2**32 and all(not (isinstance(v, float) and math.isnan(v))
                                                 for v in record.params.values())
        assert paused_studio.jobs.cancel(job.id)


def test_after_the_fuzzing_the_worker_still_runs_jobs(paused_studio):
    paused_studio.jobs.resume()
    job = paused_studio.run("image", image_params(), timeout=120)
    assert job.status is JobStatus.DONE, job.error
