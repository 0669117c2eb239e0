"""Issue 24's whole path in a real browser: text to image with a LoRA on, that picture sent to inpaint
(a painted mask, the LoRA still on), the inpainted picture sent to upscale; then each of the three jobs
is in the history, done, and its re-run gives the same pixels."""

from __future__ import annotations

import re

import numpy as np
from playwright.sync_api import expect

from helpers import make_lora, pixels
from ui_helpers import artifact, choose, paint_stroke, set_number, text_box, upscale_sent_picture


def latest(studio):
    return studio.history.list_jobs(limit=1)[0]


def test_text_to_image_then_inpaint_then_upscale_with_a_lora_all_rerunnable(page, served):
    studio, _ = served
    make_lora(studio, "tiny-lumina-next", "chain-style")

    # 1. Text to image, the LoRA on.
    choose(page, "image-model", "Tiny Lumina-Next", "Tiny Lumina-Next — test model")
    expect(page.locator("#image-size input")).to_have_value("256x256")
    text_box(page, "image-prompt").fill("a lighthouse on a cliff")
    set_number(page, "image-steps", 2)
    text_box(page, "image-loras").fill("chain-style:0.8")
    page.click("#image-generate")
    expect(page.locator("#image-status")).to_contain_text("Done", timeout=180_000)
    made = latest(studio)
    assert made.status.value == "done", made.error
    assert made.params["loras"] == [{"name": "chain-style", "weight": 0.8}]

    # 2. Sent to inpaint: the picture is the start image; paint what to redraw.
    page.click("#image-send-inpaint")
    expect(page.locator("#image-init img").first).to_have_attribute("src", re.compile(r"\S"))
    paint_stroke(page)
    set_number(page, "image-strength", 1)
    page.click("#image-generate")
    expect(page.locator("#image-status")).to_contain_text("Done", timeout=180_000)
    inpainted = latest(studio)
    assert inpainted.id != made.id and inpainted.status.value == "done", inpainted.error
    assert inpainted.params["image"] and inpainted.params["mask"]
    assert inpainted.params["loras"] == [{"name": "chain-style", "weight": 0.8}]
    source = pixels(studio.settings.outputs_dir / made.assets[0].path).astype(int)
    result = pixels(studio.settings.outputs_dir / inpainted.assets[0].path).astype(int)
    assert result.shape == source.shape and np.abs(result - source).max() > 0  # the stroke was redrawn

    # 3. Sent to upscale: four times the size.
    page.click("#image-send-upscale")
    upscale_sent_picture(page)
    upscaled = latest(studio)
    assert upscaled.task == "upscale" and upscaled.status.value == "done", upscaled.error
    big = pixels(studio.settings.outputs_dir / upscaled.assets[0].path)
    assert big.shape[:2] == (source.shape[0] * 4, source.shape[1] * 4)
    page.screenshot(path=str(artifact("edit-chain")), full_page=True)

    # Every step is in the history and re-runs to the same pixels (its inputs kept with the job).
    for job in (made, inpainted, upscaled):
        again = studio.gallery.rerun(job.id)
        assert again.wait(180) and again.status.value == "done", again.error
        redo = studio.history.get_job(again.id)
        assert np.array_equal(pixels(studio.settings.outputs_dir / redo.assets[0].path),
                              pixels(studio.settings.outputs_dir / job.assets[0].path)), job.task
