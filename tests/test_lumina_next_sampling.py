"""Lumina-Next's own sampling: solvers, time shift, time-aware RoPE, proportional attention, CFG forms."""

from __future__ import annotations


import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import image_params

from studio.engines.flow import EVALS_PER_STEP, FIXED_SOLVERS, integrate, time_grid, time_shift
from studio.engines.lumina_next import LuminaNextOptions, guided, rope_factors
from studio.families import FAMILIES
from studio.history import JobStatus
from studio.media import read_png_metadata

# dx/dt = A x has the closed form x(1) = expm(A) x(0): a linear velocity field to measure solvers on.
A = torch.tensor([[-1.0, 2.0], [-2.0, -0.5]], dtype=torch.float64)
X0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
EXACT = torch.linalg.matrix_exp(A) @ X0
ORDER = {"euler": 1, "midpoint": 2, "rk4": 4, "rk4_classic": 4}


def error(solver: str, steps: int) -> float:
    x = integrate(lambda x, t: A @ x, X0.clone(), solver=solver, steps=steps, shift=1.0).x
    return float(torch.linalg.norm(x - EXACT))


@pytest.mark.parametrize("solver", FIXED_SOLVERS)
def test_error_shrinks_at_the_solvers_order(solver):
    ratio = error(solver, 17) / error(solver, 33)  # 16 and 32 solver steps
    assert ratio == pytest.approx(2 ** ORDER[solver], rel=0.2)


def test_higher_order_is_more_accurate_for_the_same_steps():
    errors = [error(s, 11) for s in ("euler", "midpoint", "rk4")]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4


@pytest.mark.parametrize("solver", FIXED_SOLVERS)
def test_model_evaluations_are_counted(solver):
    result = integrate(lambda x, t: A @ x, X0.clone(), solver=solver, steps=7)
    assert (result.evaluations, result.solver_steps) == (6 * EVALS_PER_STEP[solver], 6)


def test_adaptive_dopri5_is_accurate_and_counts_its_evaluations():
    x, evaluations, _ = integrate(lambda x, t: A @ x, X0.clone(), solver="dopri5", steps=2, atol=1e-7,
                                  rtol=1e-6)
    assert float(torch.linalg.norm(x.double() - EXACT)) < 1e-4
    assert evaluations >= 6  # one dopri5 step alone evaluates the field six times


def test_time_shift_schedule():
    for shift in (1.0, 4.0, 20.0):
        grid = time_grid(30, shift)
        assert grid[0] == 0.0 and grid[-1] == 1.0
        assert all(a < b for a, b in zip(grid, grid[1:]))
    assert time_grid(10, 1.0) == pytest.approx([i / 10 for i in range(11)])
    # s > 1 puts the steps closer to the noise end (t = 0).
    assert all(s < t for s, t in zip(time_grid(10, 4.0)[1:-1], time_grid(10, 1.0)[1:-1]))
    # It is the FlowMatch shift on sigma = 1 - t, the form diffusers uses.
    for t in (0.1, 0.5, 0.9):
        sigma = 1 - t
        assert 1 - time_shift(t, 3.0) == pytest.approx(3.0 * sigma / (1 + 2.0 * sigma))


def demo_options(**changes) -> LuminaNextOptions:
    """The Lumina-Next family's defaults (the demo's) as engine options, with `changes`."""
    fields = {f.name for f in dataclasses.fields(LuminaNextOptions)}
    defaults = {o.name: o.default for o in FAMILIES.get("lumina-next").options if o.name in fields}
    return LuminaNextOptions(**{"steps": 30, "cfg": 4.0, **defaults, **changes})


def test_the_family_defaults_are_the_lumina_next_demos():
    assert demo_options() == LuminaNextOptions(solver="midpoint", steps=30, shift=4.0, cfg=4.0, cfg_mode="lumina",
                                               rope_scaling="time_aware", watershed=0.3, proportional_attn=True)


def test_rope_switches_from_linear_to_ntk_at_the_watershed():
    opts = demo_options(watershed=0.3)
    assert rope_factors(0.0, 2.0, opts) == (2.0, 1.0)
    assert rope_factors(0.2999, 2.0, opts) == (2.0, 1.0)
    assert rope_factors(0.3, 2.0, opts) == (1.0, 2.0)
    assert rope_factors(0.9, 2.0, opts) == (1.0, 2.0)
    assert rope_factors(0.1, 2.0, demo_options(rope_scaling="none")) == (1.0, 1.0)
    assert rope_factors(0.1, 1.0, opts) == (1.0, 1.0)  # at the native size there is nothing to scale


def test_cfg_forms():
    cond, uncond = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    pred = torch.cat([cond, uncond])
    lumina, plain = guided(pred, 3.0, "lumina"), guided(pred, 3.0, "plain")
    assert torch.all(lumina[:, :3] == 3.0) and torch.all(lumina[:, 3] == 1.0)  # channel 3 unguided
    assert torch.all(plain == 3.0)


EXTRAPOLATED = {"width": 512, "height": 512, "steps": 3, "cfg": 4.0}


def pixels(job):
    assert job.status is JobStatus.DONE, job.error
    return np.asarray(Image.open(job.outputs[0].path))


CHANGES = {
    "solver": {"solver": "rk4"},
    "shift": {"shift": 1.0},
    "rope_scaling": {"rope_scaling": "none"},
    "watershed": {"watershed": 0.9},
    "proportional_attn": {"proportional_attn": False},
    "cfg_mode": {"cfg_mode": "plain"},
}


def test_defaults_are_lumina_nexts_own(studio):
    job = studio.run("image", image_params(**EXTRAPOLATED))
    params = studio.history.get_job(job.id).params
    assert {k: params[k] for k in ("solver", "shift", "rope_scaling", "watershed", "proportional_attn",
                                   "cfg_mode")} == {"solver": "midpoint", "shift": 4.0, "rope_scaling": "time_aware",
                                                    "watershed": 0.3, "proportional_attn": True, "cfg_mode": "lumina"}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_every_option_reaches_the_sampler(studio, change):
    base = pixels(studio.run("image", image_params(**EXTRAPOLATED)))
    again = pixels(studio.run("image", image_params(**EXTRAPOLATED)))
    changed = pixels(studio.run("image", image_params(**EXTRAPOLATED, **change)))
    assert np.array_equal(base, again)
    assert not np.array_equal(base, changed)


def test_extrapolation_presets_run_on_the_tiny_model(studio):
    card = studio.cards.get("tiny-lumina-next")
    assert card.extrapolation
    for preset in card.extrapolation:
        width, height = map(int, preset.split("x"))
        job = studio.run("image", image_params(width=width, height=height, steps=2, solver="euler"))
        assert job.status is JobStatus.DONE, job.error
        assert Image.open(job.outputs[0].path).size == (width, height)


def test_what_ran_is_recorded_in_the_file_and_the_job(studio):
    job = studio.run("image", image_params(solver="rk4", steps=2, shift=6.0, watershed=0.5, cfg_mode="plain",
                                           proportional_attn=False, width=384, height=384))
    meta = read_png_metadata(job.outputs[0].path)
    fields = meta.infotext.fields
    assert fields["Sampler"] == "RK4" and fields["Shift"] == "6.0" and fields["Watershed"] == "0.5"
    assert fields["RoPE scaling"] == "time_aware" and fields["Proportional attention"] == "False"
    assert fields["CFG mode"] == "plain"
    assert meta.job["used"]["model_evaluations"] == (2 - 1) * 4  # 2 time points: one rk4 step
    rerun = studio.run("image", studio.history.get_job(job.id).params)
    assert np.array_equal(pixels(job), pixels(rerun))


def test_lumina_next_options_are_refused_for_other_models(studio):
    job = studio.run("image", image_params(model="tiny-lumina2", watershed=0.5))
    assert job.status is JobStatus.FAILED and "apply to Lumina-Next models only" in job.error
    # The solver is Lumina-T2I's option too: the message names both families.
    job = studio.run("image", image_params(model="tiny-lumina2", solver="rk4"))
    assert job.status is JobStatus.FAILED and "an option of Lumina-Next and Lumina-T2I models" in job.error


def test_bad_option_values_are_explained(studio):
    for change, message in (({"solver": "heun"}, "solver"), ({"watershed": 1.5}, "watershed"),
                            ({"cfg_mode": "strong"}, "cfg_mode")):
        job = studio.run("image", image_params(**change))
        assert job.status is JobStatus.FAILED and message in job.error


def test_dopri5_runs_end_to_end(studio):
    job = studio.run("image", image_params(solver="dopri5", steps=2))
    assert job.status is JobStatus.DONE, job.error
    meta = read_png_metadata(job.outputs[0].path)
    assert meta.infotext.fields["Sampler"] == "DOPRI5" and meta.job["used"]["model_evaluations"] >= 6


def test_a_dynamic_shift_scheduler_is_recorded_as_such(studio, monkeypatch):
    """Lumina-Image 2.0 checkpoints whose scheduler shifts by resolution: the job says so."""
    with studio.scheduler.acquire(studio.cards.get("tiny-lumina2")) as lease:
        scheduler = lease.pipeline.scheduler
        lease.pipeline.scheduler = type(scheduler).from_config(scheduler.config, use_dynamic_shifting=True)
    job = studio.run("image", image_params(model="tiny-lumina2"))
    assert job.status is JobStatus.DONE, job.error
    assert read_png_metadata(job.outputs[0].path).job["used"]["schedule"] == "dynamic shift from the resolution"
