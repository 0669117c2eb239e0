"""Live previews while sampling (runtime/preview.py): every N steps a small picture of the current
prediction lands on the job's handle, the Image tab's handler streams it into the result gallery,
and the final output is pixel for pixel the one made with previews off."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from studio.errors import InvalidInput
from studio.runtime import preview
from studio.services import Studio
from studio.settings import Settings
from studio.zoo.builtin import ensure_builtin

MODELS = ("tiny-lumina-next", "tiny-wan", "tiny-cogvideox")
IMAGE = {"model": "tiny-lumina-next", "prompt": "a lighthouse at dusk", "width": 128, "height": 128, "steps": 6,
         "seed": 7}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Only the tiny models these tests run (the session's cache builds them all)."""
    folder = tmp_path_factory.mktemp("preview-cache")
    for name in MODELS:
        ensure_builtin(name, folder)
    return folder


def _studio(tmp_path, cache, every: int, name: str) -> Studio:
    return Studio(Settings.load(env={}, home=tmp_path / name, model_cache=cache, preview_every=every))


def _previews(studio: Studio) -> list[preview.Preview]:
    """Each distinct preview the running jobs showed, in order (read at every progress report)."""
    seen: list[preview.Preview] = []
    studio.jobs.add_listener(lambda job: seen.append(job.preview)
                             if job.preview is not None and (not seen or seen[-1] is not job.preview) else None)
    return seen


def _pixels(job) -> np.ndarray:
    return np.asarray(Image.open(job.outputs[0].path).convert("RGB"))


def test_previews_come_every_n_steps_resemble_the_output_and_change_nothing(tmp_path, cache):
    with _studio(tmp_path, cache, 2, "on") as on:
        shown = _previews(on)
        job = on.run("image", IMAGE)
        assert job.error is None
    # Rule: a preview at every step k with k % N == 0 (steps 2, 4, 6 of 6), each of the whole batch.
    assert [(p.step, p.total) for p in shown] == [(2, 6), (4, 6), (6, 6)]
    assert job.preview is shown[-1]
    final = _pixels(job)
    for p in shown:
        [picture] = p.images
        assert picture.size == (128, 128)  # the output's size, within 256 px
        assert np.asarray(picture).std() > 1  # a picture, not a flat colour
    # The last preview is the clean sample the VAE decodes, through the fitted projection (a tiny random
    # VAE has no published factors): measured r = 0.25; a linear map cannot follow a random decoder far.
    last = np.asarray(shown[-1].images[0], dtype=float)
    r = np.corrcoef(last.ravel(), final.astype(float).ravel())[0, 1]
    assert r > 0.1

    with _studio(tmp_path, cache, 0, "off") as off:
        none = _previews(off)
        plain = off.run("image", IMAGE)
    assert none == [] and plain.preview is None
    assert np.array_equal(_pixels(plain), final)  # same seed, previews off: the same pixels


def test_a_batch_gets_a_preview_per_image_and_a_video_its_first_frame(tmp_path, cache):
    with _studio(tmp_path, cache, 3, "batch") as studio:
        shown = _previews(studio)
        job = studio.run("image", {**IMAGE, "width": 192, "height": 64, "num_images": 2})
        assert job.error is None
        assert [p.step for p in shown] == [3, 6]
        assert [im.size for im in shown[-1].images] == [(192, 64), (192, 64)]
        for model in ("tiny-wan", "tiny-cogvideox"):  # (B, C, F, H, W) and CogVideoX's (B, F, C, H, W)
            del shown[:]
            clip = studio.run("video", {"model": model, "prompt": "waves", "steps": 3, "seed": 1})
            assert clip.error is None, clip.error
            card = studio.cards.get(model)
            assert [p.step for p in shown] == [3]
            assert [im.size for im in shown[0].images] == [(card.defaults["width"], card.defaults["height"])]


def test_the_image_tabs_handler_streams_previews_into_the_gallery_then_the_images(tmp_path, cache):
    from studio.ui.app import build_app

    with _studio(tmp_path, cache, 2, "ui") as studio:
        # The worker waits a moment after each new preview, so the handler's 0.1 s look surely sees it
        # on any machine (real progress reports, no stand-in).
        last: list[object] = [None]

        def linger(job):
            if job.preview is not None and job.preview is not last[0]:
                last[0] = job.preview
                time.sleep(0.3)

        studio.jobs.add_listener(linger)
        demo = build_app(studio)
        handler = next(f for f in demo.fns.values() if f.name == "on_generate"
                       and any(getattr(c, "elem_id", None) == "image-model" for c in f.inputs))
        values = {getattr(c, "elem_id", None) or id(c): c.value for c in handler.inputs}
        values.update({"image-model": IMAGE["model"], "image-prompt": IMAGE["prompt"], "image-size": "128x128",
                       "image-steps": IMAGE["steps"], "image-seed": IMAGE["seed"]})
        updates = list(handler.fn(None, *values.values(), progress=lambda *a, **k: None))
    *live, (gallery, status) = updates
    assert [[caption for _, caption in items] for items, _ in live] == [
        ["preview · step 2/6"], ["preview · step 4/6"], ["preview · step 6/6"]]
    assert all(isinstance(image, Image.Image) and image.size == (128, 128) for items, _ in live for image, _ in items)
    assert "Done" in status and len(gallery) == 1  # the finished image replaces the preview


def test_published_factors_for_known_vaes_a_fit_otherwise():
    from diffusers import AutoencoderKL

    def vae(**config):
        return AutoencoderKL(block_out_channels=[8], norm_num_groups=8, layers_per_block=1, **config)

    sdxl = preview.projection_for(vae(latent_channels=4, scaling_factor=0.13025))
    assert sdxl.source.startswith("SDXL") and sdxl.matrix.shape == (3, 4)
    flux = preview.projection_for(vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159))
    assert flux.source.startswith("FLUX") and flux.matrix.shape == (3, 16)
    unknown = vae(latent_channels=4, scaling_factor=0.18215)
    fitted = preview.projection_for(unknown)
    assert fitted.source == "fitted from the VAE" and fitted.matrix.shape == (3, 4) and fitted.scale == 1
    assert preview.projection_for(unknown) is fitted  # made once per VAE
    # A tiny stand-in of the SDXL VAE is fitted, never given the real VAE's factors.
    assert preview.projection_for(vae(latent_channels=4, scaling_factor=0.13025), published=False).source == \
        "fitted from the VAE"


def test_nothing_is_done_while_previews_are_off():
    assert preview.hook(object()) is None
    preview.offer(2, 2, torch.zeros(1, 4, 2, 2), object())  # off: not even looked at
    got = []
    with preview.previews(2, got.append):
        assert preview.hook(None) is not None
        preview.offer(1, 4, torch.zeros(1, 4, 2, 2), None)  # not due
    assert got == []


def test_the_interval_is_a_setting(tmp_path):
    assert Settings.load(env={"STUDIO_PREVIEW_EVERY": "5"}, home=tmp_path).preview_every == 5
    assert Settings.load(env={"STUDIO_PREVIEW_EVERY": "5"}, home=tmp_path, preview_every=0).preview_every == 0
    for bad in ("often", "-1"):
        with pytest.raises(InvalidInput, match="preview_every"):
            Settings.load(env={"STUDIO_PREVIEW_EVERY": bad}, home=tmp_path)


def test_the_cli_flag_sets_it(tmp_path):
    import argparse

    from studio.cli.flags import add_settings_flags, settings_from

    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    args = parser.parse_args(["--home", str(tmp_path), "--preview-every", "3"])
    assert settings_from(args).preview_every == 3


def test_a_preview_that_fails_costs_the_job_nothing_but_its_previews(caplog):
    class Unreadable(torch.nn.Module):
        """A VAE without published factors whose decoder fails (as one might on a device it cannot reach)."""

        config = {"latent_channels": 4}

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def decode(self, z):
            raise RuntimeError("cannot decode here")

    got = []
    vae = Unreadable()
    with preview.previews(1, got.append):
        for step in (1, 2):
            preview.offer(step, 2, torch.zeros(1, 4, 2, 2), vae)
    assert got == [] and caplog.text.count("continues without previews") == 1
    with preview.previews(1, got.append):  # the next job: that VAE is not tried (nor logged) again
        preview.offer(1, 2, torch.zeros(1, 4, 2, 2), vae)
    assert got == [] and caplog.text.count("continues without previews") == 1


def test_packed_latents_make_no_preview_and_no_noise(caplog):
    """A pipeline whose latents are tokens (B, sequence, C: Flux-style packing) has no picture to show."""
    got = []
    with preview.previews(1, got.append):
        preview.offer(1, 2, torch.zeros(1, 16, 64), object())
    assert got == [] and caplog.text == ""
