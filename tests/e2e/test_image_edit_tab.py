"""The Image tab's inpainting in a real browser: upload a start image, paint a mask stroke in the
ImageEditor over it, inpaint, and see the result; the job got the start image and the painted mask."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from playwright.sync_api import expect

from ui_helpers import artifact, choose, paint_stroke, set_number, text_box


def test_paint_a_mask_and_inpaint(page, served, tmp_path):
    studio, _ = served
    start = tmp_path / "start.png"
    y, x = np.mgrid[0:128, 0:128]
    Image.fromarray(np.stack([x * 2, y * 2, np.full_like(x, 90)], -1).astype(np.uint8)).save(start)

    choose(page, "image-model", "Tiny Lumina-Next", "Tiny Lumina-Next — test model")
    expect(page.locator("#image-size input")).to_have_value("256x256")  # the card's size, before the upload's
    page.wait_for_timeout(500)
    page.locator("#image-edit").get_by_text("Image to image / Inpaint").first.click()
    page.locator("#image-init input[type=file]").set_input_files(str(start))
    expect(page.locator("#image-size input")).to_have_value("128x128", timeout=30_000)  # filled from the image
    paint_stroke(page)
    text_box(page, "image-prompt").fill("a red door")
    set_number(page, "image-steps", 3)
    set_number(page, "image-strength", 1)
    page.click("#image-generate")
    expect(page.locator("#image-status")).to_contain_text("Done", timeout=180_000)
    expect(page.locator("#image-result img").first).to_be_visible()
    page.screenshot(path=str(artifact("tab-image-inpaint")), full_page=True)

    job = studio.history.list_jobs(limit=1)[0]
    assert job.status.value == "done", job.error
    assert job.params["image"].endswith("start.png") and job.params["mask"], job.params
    mask = np.asarray(Image.open(job.params["mask"]).convert("L").resize((128, 128)))
    assert mask.max() == 255 and 0 < (mask > 0).mean() < 0.5  # a stroke, not the whole picture
    out = np.asarray(Image.open(studio.settings.outputs_dir / job.assets[0].path).convert("RGB")).astype(int)
    assert out.shape == (128, 128, 3)
    changed = np.abs(out - np.asarray(Image.open(start)).astype(int)).max(axis=-1)
    far = np.asarray(Image.fromarray(mask).filter(ImageFilter.MaxFilter(25))) == 0  # beyond the mask's blur
    assert changed[far].max() == 0 and changed[mask == 255].mean() > 5  # kept outside, redrawn inside
