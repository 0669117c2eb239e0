"""The Gallery as a new user first meets it, in a real browser: it shows the jobs that made something
(a refused request stays recorded, behind the status filter, whose choice a reload keeps), each tile
captioned with its prompt, the model filter listing models that generate; and a PNG from another
tool fills the Image tab with a note on each value the model took differently."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, PngImagePlugin
from playwright.sync_api import expect

from helpers import image_params
from ui_helpers import choose, open_gallery

LONG_PROMPT = ("a red lighthouse on a cliff at dawn, gulls over a stormy sea, oil on canvas in the style of an "
               "old harbour painting")


def test_done_jobs_by_default_prompt_captions_and_generating_models(page, served):
    studio, _ = served
    studio.run("image", image_params(prompt=LONG_PROMPT))
    refused = studio.jobs.submit("image", image_params(prompt="a refused one", steps=0))
    assert studio.history.get_job(refused.id).status.value == "failed"  # recorded, with its reason

    open_gallery(page)
    expect(page.locator("#gallery-status input")).to_have_value("done")
    expect(page.locator("#gallery-info")).to_contain_text("of 1")
    grid = page.locator("#gallery-grid")
    expect(grid).to_contain_text("a red lighthouse on a cliff")
    expect(grid).not_to_contain_text("image · ")

    page.locator("#gallery-model input").click()
    options = page.locator("[role=listbox] [role=option]")
    expect(options.filter(has_text="Tiny Lumina-Next")).to_have_count(1)
    expect(options.filter(has_text="(component)")).to_have_count(0)  # text encoders, image tokenizers
    page.keyboard.press("Escape")

    choose(page, "gallery-status", "failed")
    expect(page.locator("#gallery-info")).to_contain_text("of 1")
    page.locator("#gallery-grid button.thumbnail-item").first.click()
    expect(page.locator("#gallery-detail")).to_contain_text("a refused one")
    page.reload()
    open_gallery(page)
    expect(page.locator("#gallery-status input")).to_have_value("failed")
    expect(page.locator("#gallery-grid")).to_contain_text("a refused one")


def test_reading_another_tools_png_says_what_was_adapted(page, served, tmp_path: Path):
    other = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle in the clouds\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, "
                                "CFG scale: 7, Seed: 4242, Size: 512x768, Model: sd_xl_base")
    Image.new("RGB", (8, 8)).save(other, pnginfo=info)
    open_gallery(page)
    page.get_by_text("Read parameters from a PNG").click()
    page.set_input_files("#gallery-png input[type=file]", str(other))
    expect(page.locator("#gallery-found")).to_contain_text("a1111")
    page.click("#gallery-fill")
    expect(page.get_by_role("tab", name="Image")).to_have_attribute("aria-selected", "true")
    size = page.locator("#image-size input")
    expect(size).not_to_have_value("")
    shown = size.input_value()
    assert shown != "512x768"
    expect(page.locator(".toast-body")).to_contain_text(f"Size 512x768 → {shown}")
    open_gallery(page)
    found = page.locator("#gallery-found")
    expect(found).to_contain_text(f"Size 512x768 → {shown}")
    # The default offline model (the mini one) has one trained size, and the note says so.
    expect(found).to_contain_text("Mini Lumina-Next makes 64x64 only")
    expect(found).to_contain_text("Sampler 'DPM++ 2M Karras' has no equivalent here")
    expect(page.locator(".toast-body.error")).to_have_count(0)
