"""Lumina-Next as its authors run it (Alpha-VLLM/Lumina-T2X 1c60696; torchdiffeq 0.2.5): their text
encoding, their step grid, torchdiffeq's solvers, RoPE scaling only above the native size, an
unscaled compositional canvas. docs/lumina_next.md lists these and where Studio differs on purpose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import image_params

from studio.engines import lumina_next
from studio.engines.flow import integrate, sampling_grid, step
from studio.engines.lumina_next import LuminaNextOptions, rope_factors
from studio.errors import InvalidInput
from studio.history import JobStatus
from studio.media import read_png_metadata
from studio.runtime.loader import load_pipeline
from studio.settings import REPO_ROOT, Settings
from studio.zoo.cards import CardRegistry

torchdiffeq = pytest.importorskip("torchdiffeq")

NEXT = CardRegistry.load([REPO_ROOT / "model_zoo"]).get("tiny-lumina-next")  # native 256x256
A = torch.tensor([[-1.0, 2.0], [-2.0, -0.5]], dtype=torch.float64)
X0 = torch.tensor([1.0, -0.5], dtype=torch.float64)


def field(x: torch.Tensor, t: float) -> torch.Tensor:
    """A time-dependent linear field: solvers that evaluate at other times give other answers."""
    return (A @ x) * (1 + t)


def pixels(job) -> np.ndarray:
    assert job.status is JobStatus.DONE, job.error
    return np.asarray(Image.open(job.outputs[0].path))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, model_cache):
    return load_pipeline(NEXT, Settings.load(env={}, home=tmp_path_factory.mktemp("h"), model_cache=model_cache))


# -- the step grid and the solvers -----------------------------------------------------------------


@pytest.mark.parametrize("steps", [2, 5, 30])
@pytest.mark.parametrize("shift", [1.0, 4.0, 6.5])
def test_the_grid_is_the_authors(steps, shift):
    # lumina_next_t2i_mini/transport.py ODE: linspace(t0, t1, num_steps), then t / (t + s - s t).
    t = torch.linspace(0.0, 1.0, steps)
    t = t / (t + shift - shift * t)
    assert sampling_grid(steps, shift) == [float(v) for v in t]


@pytest.mark.parametrize("solver, evaluations", [("euler", 29), ("midpoint", 58), ("rk4", 116),
                                                 ("rk4_classic", 116)])
def test_evaluation_counts(solver, evaluations):
    result = integrate(field, X0.clone(), solver=solver, steps=30, shift=4.0)
    assert (result.evaluations, result.solver_steps) == (evaluations, 29)


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4"])
def test_fixed_solvers_are_torchdiffeqs_on_the_authors_grid(solver):
    """What the authors call: odeint(fn, z, linspace(0, 1, N) shifted, method=solver), the grid in
    float32 as their linspace makes it (so dt and the intermediate times are float32 too)."""
    ours_t, theirs_t = [], []

    def ours(x, t):
        ours_t.append(t)
        return field(x, t)

    def theirs(t, x):
        theirs_t.append(float(t))
        return field(x, float(t))

    grid = sampling_grid(7, 4.0)
    expected = torchdiffeq.odeint(theirs, X0.clone(), torch.tensor(grid, dtype=torch.float32), method=solver)[-1]
    got = integrate(ours, X0.clone(), solver=solver, steps=7, shift=4.0).x
    assert ours_t == theirs_t  # the model is asked at the very same times
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_rk4_evaluates_at_thirds():
    def times(solver, t0, t1):
        seen = []
        step(solver, lambda x, t: seen.append(t) or field(x, t), X0.clone(), t0, t1)
        return seen

    assert times("rk4", 0.0, 1.0) == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert times("rk4", 0.2, 0.5) == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert times("rk4_classic", 0.0, 1.0) == pytest.approx([0.0, 0.5, 0.5, 1.0])


def test_progress_counts_the_time_points_the_user_asked_for():
    seen = []
    integrate(field, X0.clone(), solver="midpoint", steps=5, on_step=lambda done, total, _x: seen.append((done, total)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]  # the noise, then one per solver step


def test_one_step_is_refused_by_the_engine():
    # linspace(0, 1, 1) is [0]: the authors' odeint hands back the starting noise.
    assert torchdiffeq.odeint(lambda t, x: A @ x, X0.clone(), torch.linspace(0, 1, 1), method="euler")[-1].equal(X0)
    with pytest.raises(InvalidInput, match="at least 2"):
        integrate(field, X0.clone(), solver="midpoint", steps=1)


def test_dopri8_is_accurate():
    exact = torch.linalg.matrix_exp(A) @ X0
    tight = integrate(lambda x, t: A @ x, X0.clone(), solver="dopri8", steps=2, atol=1e-10, rtol=1e-8)
    assert float(torch.linalg.norm(tight.x - exact)) < 1e-6
    # By default Lumina-T2I's tolerances (atol 1e-6, rtol 1e-3), through torchdiffeq itself.
    default = integrate(field, X0.clone(), solver="dopri8", steps=30)
    theirs = torchdiffeq.odeint(lambda t, x: field(x, float(t)), X0.clone(), torch.tensor([0.0, 1.0]),
                                method="dopri8", atol=1e-6, rtol=1e-3)[-1]
    assert torch.equal(default.x, theirs)
    assert default.solver_steps >= 1 and default.evaluations >= 13  # one dopri8 step is 13 evaluations


# -- RoPE scaling ----------------------------------------------------------------------------------


def test_no_rope_rescale_below_native():
    opts = LuminaNextOptions(solver="midpoint", steps=30, shift=4.0, cfg=4.0, cfg_mode="lumina",
                             rope_scaling="time_aware", watershed=0.3, proportional_attn=True)
    for scale in (0.5, 0.75, 1.0):  # 512², 768², 1024² on the 1024 model
        assert rope_factors(0.1, scale, opts) == rope_factors(0.9, scale, opts) == (1.0, 1.0)
    assert rope_factors(0.1, 1.5, opts) == (1.5, 1.0) and rope_factors(0.9, 1.5, opts) == (1.0, 1.5)


def test_below_native_the_rope_option_changes_nothing(studio):
    small = {"width": 128, "height": 128, "steps": 3}
    scaled = pixels(studio.run("image", image_params(**small)))
    unscaled = pixels(studio.run("image", image_params(**small, rope_scaling="none")))
    assert np.array_equal(scaled, unscaled)


def compose_params(**extra):
    params = {"model": "tiny-lumina-next", "grid_rows": 1, "grid_cols": 2, "captions": ["a forest", "a lake"],
              "cell_width": 256, "cell_height": 256, "steps": 2, "seed": 5}  # a 512x256 canvas: scale 1.41
    params.update(extra)
    return params


def test_the_canvas_is_not_rescaled_unless_asked(studio):
    default = studio.run("compose", compose_params())
    assert np.array_equal(pixels(default), pixels(studio.run("compose", compose_params(rope_scaling="none"))))
    assert studio.history.get_job(default.id).params["canvas_rope_scaling"] is False
    scaled = studio.run("compose", compose_params(canvas_rope_scaling=True))
    assert not np.array_equal(pixels(default), pixels(scaled))
    assert read_png_metadata(scaled.outputs[0].path).infotext.fields["Canvas RoPE scaling"] == "True"


def test_canvas_scaling_is_a_compose_option_only(studio):
    job = studio.run("image", image_params(canvas_rope_scaling=True))
    assert job.status is JobStatus.FAILED and "canvas_rope_scaling" in job.error


# -- text ------------------------------------------------------------------------------------------


def test_text_is_encoded_as_the_authors_encode_it(pipe):
    prompt, negative = "a cat", "blurry, low quality, watermark, jpeg artifacts"
    feats, mask = lumina_next.encode(pipe, [prompt], negative, 2, True)
    # lumina_next_t2i_mini/demo.py encode_prompt, on [cap, neg_cap]:
    inputs = pipe.tokenizer([prompt, negative], padding=True, pad_to_multiple_of=8, max_length=256,
                            truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref = pipe.text_encoder(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                                output_hidden_states=True).hidden_states[-2]
    rows = [0, 0, 1, 1]  # two images: the prompt's rows, then the negative's
    assert torch.equal(mask, inputs.attention_mask[rows])
    assert torch.equal(feats, ref[rows])
    assert int(mask[2].sum()) == len(pipe.tokenizer(negative).input_ids) > int(mask[0].sum())


def test_words_of_the_negative_beyond_the_prompts_length_count(studio):
    # "a cat" is 6 tokens, padded to 8: diffusers' encode_prompt would cut both negatives to 8 tokens.
    params = image_params(prompt="a cat", width=128, height=128)
    one = pixels(studio.run("image", {**params, "negative_prompt": "blurry, low quality, watermark"}))
    other = pixels(studio.run("image", {**params, "negative_prompt": "blurry, low quality, oversaturated"}))
    assert not np.array_equal(one, other)


def test_a_text_over_256_tokens_is_refused(studio):
    job = studio.run("image", image_params(negative_prompt="x" * 300))  # the tiny tokenizer: a token a letter
    assert job.status is JobStatus.FAILED
    assert "negative prompt is 301 tokens" in job.error and "256" in job.error
    job = studio.run("compose", compose_params(captions=["a forest", "y" * 300], cell_width=64, cell_height=64))
    assert job.status is JobStatus.FAILED and "caption 2 is 301 tokens" in job.error
    # The joined caption (adaLN's pooled text) is Studio's own: cut at 256 as the authors cut it.
    long = ["a forest " * 10, "a lake " * 12, "a hill " * 12]
    job = studio.run("compose", compose_params(grid_cols=3, captions=long, cell_width=64, cell_height=64))
    assert job.status is JobStatus.DONE, job.error


# -- steps end to end ------------------------------------------------------------------------------


def test_thirty_midpoint_steps_are_58_evaluations(studio):
    job = studio.run("image", image_params(steps=30, width=64, height=64))
    meta = read_png_metadata(job.outputs[0].path)
    assert meta.infotext.fields["Steps"] == "30" and meta.infotext.fields["Sampler"] == "Midpoint"
    assert meta.job["used"]["model_evaluations"] == 58 and meta.job["used"]["solver_steps"] == 29


@pytest.mark.parametrize("task, params", [("image", image_params(steps=1)), ("compose", compose_params(steps=1))])
def test_one_step_is_refused_with_the_reason(studio, task, params):
    job = studio.run(task, params)
    assert job.status is JobStatus.FAILED
    assert "steps: Lumina-Next needs at least 2" in job.error and "starting noise" in job.error


def test_dopri8_runs_end_to_end(studio):
    job = studio.run("image", image_params(solver="dopri8", steps=2, width=64, height=64))
    meta = read_png_metadata(job.outputs[0].path)
    assert job.status is JobStatus.DONE, job.error
    assert meta.infotext.fields["Sampler"] == "DOPRI8" and meta.job["used"]["model_evaluations"] >= 13


def test_rk4_classic_is_offered_beside_the_authors_rk4(studio):
    authors = studio.run("image", image_params(solver="rk4", width=64, height=64))
    classic = studio.run("image", image_params(solver="rk4_classic", width=64, height=64))
    assert read_png_metadata(classic.outputs[0].path).infotext.fields["Sampler"] == "RK4 classic"
    assert not np.array_equal(pixels(authors), pixels(classic))
