"""Text-to-image end to end through the one job path: files, embedded metadata, history rows, determinism."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from studio.history import JobStatus
from studio.job import Stage
from studio.media import read_png_metadata

from helpers import FAST_STEPS, image_params

MODELS = ["tiny-lumina-next", "tiny-lumina2"]


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("model", MODELS)
def test_generates_a_png_with_metadata_and_history(studio, model):
    job = studio.run("image", image_params(model=model, negative_prompt="blurry, low quality", cfg=5.0,
                                           width=384, height=256))
    assert job.status is JobStatus.DONE, job.error
    [saved] = job.outputs
    assert saved.path.is_file() and saved.path.suffix == ".png"
    assert saved.path.is_relative_to(studio.settings.outputs_dir)
    assert job.id in saved.path.name and "lighthouse" not in str(saved.path)  # named by job, never by prompt
    with Image.open(saved.path) as im:
        assert im.size == (384, 256)

    meta = read_png_metadata(saved.path)
    assert meta.infotext.prompt == "a lighthouse at dusk, oil on canvas"
    assert meta.infotext.negative_prompt == "blurry, low quality"
    assert meta.infotext.fields["Steps"] == str(FAST_STEPS)
    assert meta.infotext.fields["CFG scale"] == "5.0"
    assert meta.infotext.fields["Seed"] == "1234"
    assert meta.infotext.fields["Size"] == "384x256"
    assert meta.infotext.fields["Model"] == model
    # Lumina-Next samples as its authors do (midpoint); Lumina-Image 2.0 through diffusers' Euler.
    assert meta.infotext.fields["Sampler"] == {"tiny-lumina-next": "Midpoint", "tiny-lumina2": "Euler"}[model]
    assert meta.job["job_id"] == job.id and meta.job["params"]["seed"] == 1234

    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.DONE and record.model_id == model and record.seed == 1234
    assert record.params["steps"] == FAST_STEPS and record.params["width"] == 384
    assert record.duration_s is not None and record.duration_s >= 0
    asset, thumb = record.assets
    assert asset.path == saved.relpath and asset.mime == "image/png"
    assert (asset.width, asset.height) == (384, 256)
    assert asset.sha256 == hashlib.sha256(saved.path.read_bytes()).hexdigest()
    # The gallery's thumbnail was made at save time: a small WebP of the same picture.
    assert thumb.kind == "thumbnail" and thumb.mime == "image/webp" and thumb.path.endswith(f"{job.id}.webp")
    with Image.open(studio.settings.outputs_dir / thumb.path) as im:
        assert im.format == "WEBP" and im.size == (thumb.width, thumb.height) == (320, 213)


@pytest.mark.parametrize("model", MODELS)
def test_same_seed_same_pixels_and_another_seed_differs(studio, model):
    first = studio.run("image", image_params(model=model, seed=42))
    again = studio.run("image", image_params(model=model, seed=42))
    other = studio.run("image", image_params(model=model, seed=43))
    assert np.array_equal(pixels(first.outputs[0].path), pixels(again.outputs[0].path))
    assert not np.array_equal(pixels(first.outputs[0].path), pixels(other.outputs[0].path))


def test_random_seed_is_recorded_and_reproduces(studio):
    job = studio.run("image", image_params(seed=-1))
    seed = studio.history.get_job(job.id).seed
    assert 0 <= seed < 2**32 and read_png_metadata(job.outputs[0].path).infotext.fields["Seed"] == str(seed)
    rerun = studio.run("image", studio.history.get_job(job.id).params)  # a re-run from the recorded params
    assert np.array_equal(pixels(job.outputs[0].path), pixels(rerun.outputs[0].path))


def test_card_defaults_fill_what_the_user_left_out(studio):
    job = studio.run("image", {"model": "tiny-lumina2", "prompt": "a red kite", "seed": 5})
    params = studio.history.get_job(job.id).params
    card = studio.cards.get("tiny-lumina2")
    assert (params["width"], params["height"]) == (card.defaults["width"], card.defaults["height"])
    assert params["steps"] == card.defaults["steps"] and params["shift"] == card.defaults["shift"]


def test_several_images_per_prompt(studio):
    job = studio.run("image", image_params(num_images=2))
    assert [s.path.name for s in job.outputs] == [f"{job.id}-00.png", f"{job.id}-01.png"]
    assert not np.array_equal(pixels(job.outputs[0].path), pixels(job.outputs[1].path))
    assets = studio.history.get_job(job.id).assets
    assert [(a.index, a.kind) for a in assets] == [(0, "image"), (1, "image"), (2, "thumbnail")]


def test_progress_is_reported_per_step(studio):
    seen = []
    studio.jobs.add_listener(lambda job: seen.append((job.status, job.step, job.total_steps, job.stage)))
    studio.run("image", image_params(steps=4))
    # Step events (the last one starts the decoding); the saving stage that follows repeats the count.
    steps = [step for status, step, total, stage in seen
             if status is JobStatus.RUNNING and stage in (Stage.STEPS, Stage.DECODING)]
    assert steps == [1, 2, 3, 4]
    assert seen[-1][0] is JobStatus.DONE


def test_shift_changes_the_picture(studio):
    a = studio.run("image", image_params(shift=1.0))
    b = studio.run("image", image_params(shift=8.0))
    assert not np.array_equal(pixels(a.outputs[0].path), pixels(b.outputs[0].path))


def test_one_jobs_shift_does_not_carry_into_the_next(studio):
    """A model whose card sets no shift runs with its scheduler's own: after a job with a shift on the same
    loaded pipeline, such a job gives the picture it gave before."""
    from studio.tasks.image import ImageSpec, run_diffusers_image

    card = studio.cards.get("tiny-lumina2")
    spec = ImageSpec.parse(image_params(model="tiny-lumina2", width=64, height=64, steps=3)).resolved(card)
    unset = spec.model_copy(update={"shift": None})
    with studio.scheduler.acquire(card, 0) as lease:
        def picture(job):
            return np.asarray(run_diffusers_image(lease.pipeline, job, lambda *_: None).items[0])

        first = picture(unset)
        shifted = picture(spec.model_copy(update={"shift": 8.0}))
        after = picture(unset)
    assert not np.array_equal(first, shifted) and np.array_equal(first, after)


def test_unicode_prompts_survive_into_the_file(studio):
    prompt = "一只在雪地里的狐狸 🦊, «quoted», colon: yes"
    job = studio.run("image", image_params(prompt=prompt))
    assert read_png_metadata(job.outputs[0].path).infotext.prompt == prompt
    assert studio.history.get_job(job.id).prompt == prompt
