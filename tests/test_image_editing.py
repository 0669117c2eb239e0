"""Image editing on the flow families (docs/image_editing.md): image to image, inpainting, outpainting and the
hires fix, end to end through the one job path; the inputs kept with the job; bad inputs refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.history import JobStatus
from studio.media import read_png_metadata

from helpers import pixels, snapshot

FLOW = {"tiny-lumina-next": {"width": 128, "height": 128},
        "tiny-lumina2": {"width": 128, "height": 128},
        "tiny-lumina-t2i": {"width": 208, "height": 208, "solver": "euler"}}


def params(model: str, **extra):
    return {"model": model, "prompt": "a lighthouse at dusk", "steps": 4, "seed": 7, **FLOW[model], **extra}


def picture(path, width=128, height=128, seed=0):
    """A smooth test picture (gradients and a disc), as a photo would be more than noise."""
    y, x = np.mgrid[0:height, 0:width]
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 4) ** 2) * 120
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), 60 + disc + 0 * seed], -1)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return str(path)


def mask_file(path, width=128, height=128, box=(32, 32, 96, 96), mode="L"):
    array = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = 255
    if mode == "RGBA":
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., 3] = array
        Image.fromarray(rgba, "RGBA").save(path)
    else:
        Image.fromarray(array).save(path)
    return str(path)


def done(job):
    assert job.status is JobStatus.DONE, job.error
    return job.outputs[0].path


@pytest.mark.parametrize("model", list(FLOW))
def test_strength_one_is_text_to_image(studio, tmp_path, model):
    size = FLOW[model]
    start = picture(tmp_path / "in.png", size["width"], size["height"])
    plain = pixels(done(studio.run("image", params(model))))
    edited = studio.run("image", params(model, image=start, strength=1.0))
    assert np.array_equal(pixels(done(edited)), plain)
    meta = read_png_metadata(edited.outputs[0].path)
    assert meta.infotext.fields["Denoising strength"] == "1.0"
    assert meta.job["used"]["edit"] == "img2img"


def vae_round_trip(studio, path):
    """The start picture through the tiny Lumina-Next's VAE and back (its random weights lose a lot)."""
    import torch
    from diffusers import AutoencoderKL

    from studio.engines.flow_edit import pixels as as_tensor

    vae = AutoencoderKL.from_pretrained(snapshot(studio, "tiny-lumina-next") / "vae")
    with torch.no_grad():
        out = vae.decode(vae.encode(as_tensor([Image.open(path)])).latent_dist.mode()).sample
    return ((out[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().numpy().astype(int)


def test_low_strength_gives_back_the_input(studio, tmp_path):
    # strength 0.002 of 1000 points: the last 2, one Euler step from t = 0.998 to 1 (no shift). The tiny model's
    # random velocity is large, so only a step this short stays within the VAE's round trip (measured: 2.0 of
    # 255 on average, where the round trip itself is 70 from the input).
    start = picture(tmp_path / "in.png")
    job = studio.run("image", params("tiny-lumina-next", image=start, strength=0.002, steps=1000, solver="euler",
                                     shift=1.0, cfg=1.0))
    out = pixels(done(job)).astype(int)
    diff = np.abs(out - vae_round_trip(studio, start))
    assert diff.mean() < 4, diff.mean()
    assert out.shape == (128, 128, 3)


def test_rerun_of_an_edit_is_exact_after_the_upload_is_gone(studio, tmp_path):
    upload = tmp_path / "upload" / "in.png"
    upload.parent.mkdir()
    picture(upload)
    job = studio.run("image", params("tiny-lumina-next", image=str(upload), strength=0.6))
    first = pixels(done(job))
    record = studio.history.get_job(job.id)
    kept = record.params["image"]
    assert kept.startswith(str(studio.settings.outputs_dir / "inputs")) and kept.endswith(".png")
    upload.unlink()  # Gradio's temporary file is gone
    again = studio.gallery.rerun(job.id)
    again.wait()
    assert np.array_equal(pixels(done(again)), first)
    assert studio.history.get_job(again.id).params["image"] == kept  # the same copy, not a second one
    assert len(list((studio.settings.outputs_dir / "inputs").iterdir())) == 1
    meta = read_png_metadata(job.outputs[0].path)
    assert meta.infotext.fields["Denoising strength"] == "0.6"


@pytest.mark.parametrize("model", list(FLOW))
def test_inpainting_keeps_what_is_not_masked(studio, tmp_path, model):
    size = FLOW[model]
    w, h = size["width"], size["height"]
    start = picture(tmp_path / "in.png", w, h)
    mask = mask_file(tmp_path / "mask.png", w, h, (w // 4, h // 4, 3 * w // 4, 3 * h // 4), mode="RGBA")
    job = studio.run("image", params(model, image=start, mask=mask, strength=1.0, mask_blur=4))
    out, source = pixels(done(job)).astype(int), pixels(start).astype(int)
    outside = np.ones((h, w), bool)
    outside[h // 4 - 12:3 * h // 4 + 12, w // 4 - 12:3 * w // 4 + 12] = False  # the mask plus its blur
    assert np.abs(out - source)[outside].max() == 0  # the input's own pixels, laid back over
    inside = np.abs(out - source)[h // 4 + 8:3 * h // 4 - 8, w // 4 + 8:3 * w // 4 - 8]
    assert inside.mean() > 10
    used = read_png_metadata(job.outputs[0].path).job["used"]
    assert used["edit"] == "inpaint"


def test_only_masked_and_a_mask_of_another_size(studio, tmp_path):
    start = picture(tmp_path / "in.png")
    mask = mask_file(tmp_path / "mask.png", 64, 64, (8, 8, 24, 24))  # another size: resized, with a note
    job = studio.run("image", params("tiny-lumina-next", image=start, mask=mask, strength=0.9,
                                     inpaint_area="masked", mask_padding=8))
    out, source = pixels(done(job)).astype(int), pixels(start).astype(int)
    assert np.abs(out - source)[80:, :].max() == 0 and np.abs(out - source)[:, 80:].max() == 0
    assert np.abs(out - source)[20:44, 20:44].mean() > 5
    used = read_png_metadata(job.outputs[0].path).job["used"]
    assert any("resized" in note for note in used["notes"]) and any("only masked" in n for n in used["notes"])
    assert read_png_metadata(job.outputs[0].path).infotext.fields["Inpaint area"] == "Only masked"


def test_outpainting_gives_the_bigger_picture(studio, tmp_path):
    start = picture(tmp_path / "in.png")
    job = studio.run("image", params("tiny-lumina-next", image=start, strength=1.0, outpaint_right=64,
                                     outpaint_top=32, mask_blur=0))
    out = pixels(done(job)).astype(int)
    assert out.shape == (160, 192, 3)
    assert np.abs(out[32:, :128] - pixels(start).astype(int)).max() == 0  # the input, where it was
    assert job.outputs[0].width == 192 and job.outputs[0].height == 160


def test_hires_fix_second_pass(studio):
    job = studio.run("image", params("tiny-lumina-next", hires_scale=1.5, hires_steps=3))
    assert pixels(done(job)).shape == (192, 192, 3)
    fields = read_png_metadata(job.outputs[0].path).infotext.fields
    assert fields["Hires upscale"] == "1.5" and fields["Hires steps"] == "3"
    assert fields["Hires upscaler"] == "Lanczos" and fields["Denoising strength"] == "0.5"
    record = studio.history.get_job(job.id)
    assert record.params["hires_strength"] == 0.5 and record.params["strength"] is None
    plain = studio.history.get_job(studio.run("image", params("tiny-lumina-next")).id).params
    assert plain["hires_scale"] is None and plain["strength"] is None  # text to image records no editing


def test_bad_editing_input_is_refused(studio, tmp_path):
    start = picture(tmp_path / "in.png")
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG not really")
    huge = tmp_path / "huge.png"
    Image.new("L", (5000, 5000)).save(huge)
    cases = [
        (params("tiny-lumina-next", image=start, strength=0), "strength"),
        (params("tiny-lumina-next", image=start, strength=1.5), "strength"),
        (params("tiny-lumina-next", strength=0.5), "give a start image"),
        (params("tiny-lumina-next", image=str(corrupt)), "not an image"),
        (params("tiny-lumina-next", image=str(huge)), "MP"),
        (params("tiny-lumina-next", image=start, mask=mask_file(tmp_path / "black.png", box=(0, 0, 0, 0))),
         "all black"),
        ({"model": "tiny-llamagen-c2i", "prompt": "golden retriever", "image": start}, "raster order"),
        ({"model": "tiny-infinity", "prompt": "a cat", "image": start}, "start image"),
    ]
    for job_params, words in cases:
        job = studio.run("image", job_params)
        assert job.status is JobStatus.FAILED and words in job.error, (job_params, job.error)
        assert not job.outputs
    # A strength that leaves no step of the grid fails when it runs, with the reason; the worker goes on.
    job = studio.run("image", params("tiny-lumina-next", image=start, strength=0.1, steps=4))
    assert job.status is JobStatus.FAILED and "leaves no step" in job.error and not job.outputs
    done(studio.run("image", params("tiny-lumina-next", image=start, strength=0.5)))
