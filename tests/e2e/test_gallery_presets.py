"""In a real browser: find past outputs in the Gallery, act on them, read a PNG's parameters, and start
tabs from presets and styles — the way a user does it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin
from playwright.sync_api import expect

from studio.history import JobFilter, JobStatus

from helpers import FAST_STEPS, image_params
from ui_helpers import choose, open_gallery, text_box


def test_find_star_rerun_send_and_delete(page, served):
    studio, _ = served
    lighthouse = studio.run("image", image_params(prompt="a red lighthouse at dawn", seed=-1))
    studio.run("image", image_params(prompt="一只猫在睡觉"))
    studio.run("audio", {"model": "tiny-stable-audio", "prompt": "rain on a tin roof", "seconds": 1.0,
                         "steps": FAST_STEPS, "seed": 1})
    open_gallery(page)

    text_box(page, "gallery-search").fill("lighthouse")
    page.click("#gallery-find")
    expect(page.locator("#gallery-info")).to_contain_text("of 1")
    page.locator("#gallery-grid button.thumbnail-item").first.click()
    expect(page.locator("#gallery-detail")).to_contain_text("a red lighthouse at dawn")
    expect(page.locator("#gallery-detail")).to_contain_text(lighthouse.id)

    page.click("#gallery-star")
    expect(page.locator("#gallery-star")).to_contain_text("Favorited")
    assert studio.history.get_job(lighthouse.id).favorite

    page.click("#gallery-rerun")
    expect(page.locator("#gallery-message")).to_contain_text("Re-ran as job", timeout=120_000)
    again = studio.history.find_jobs(JobFilter(text="lighthouse"), limit=1).jobs[0]
    assert again.id != lighthouse.id and again.status is JobStatus.DONE and again.seed == lighthouse.spec.seed
    pixels = [np.asarray(Image.open(studio.settings.outputs_dir / job.assets[0].path))
              for job in (studio.history.get_job(lighthouse.id), again)]
    assert np.array_equal(*pixels)  # the re-run is the same picture

    page.click("#gallery-send")
    expect(page.get_by_role("tab", name="Image")).to_have_attribute("aria-selected", "true")
    expect(text_box(page, "image-prompt")).to_have_value("a red lighthouse at dawn")
    expect(page.locator("#image-size input")).to_have_value("256x256")

    open_gallery(page)
    text_box(page, "gallery-search").fill("猫")
    page.click("#gallery-find")
    expect(page.locator("#gallery-info")).to_contain_text("of 1")
    page.locator("#gallery-grid button.thumbnail-item").first.click()
    expect(page.locator("#gallery-detail")).to_contain_text("一只猫在睡觉")
    cat = studio.history.find_jobs(JobFilter(text="猫")).jobs[0]
    files = [studio.settings.outputs_dir / a.path for a in cat.assets]
    page.click("#gallery-delete")
    expect(page.locator("#gallery-confirm-delete")).to_be_visible()
    page.click("#gallery-confirm-delete")
    expect(page.locator("#gallery-message")).to_contain_text("Deleted job")
    expect(page.locator("#gallery-info")).to_contain_text("of 0")
    assert studio.history.get_job(cat.id) is None and not any(f.exists() for f in files)


def test_export_a_page_and_read_parameters_from_a_png(page, served, tmp_path: Path):
    studio, _ = served
    studio.run("image", image_params(prompt="a paper boat on a pond"))
    open_gallery(page)
    page.get_by_text("Export", exact=True).click()
    page.click("text=Select this page")
    page.click("#gallery-export")
    expect(page.locator("#gallery-export-file")).to_contain_text(".zip")
    [made] = sorted((studio.settings.outputs_dir / "exports").glob("*.zip"))
    with zipfile.ZipFile(made) as zf:
        assert "manifest.json" in zf.namelist() and any(n.endswith(".png") for n in zf.namelist())

    # A PNG another tool wrote, A1111-style: its parameters fill the Image tab.
    other = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle in the clouds\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, "
                                "CFG scale: 6.5, Seed: 4242, Size: 256x256, Model: sd_xl_base")
    Image.new("RGB", (8, 8)).save(other, pnginfo=info)
    page.get_by_text("Read parameters from a PNG").click()
    page.set_input_files("#gallery-png input[type=file]", str(other))
    expect(page.locator("#gallery-found")).to_contain_text("a1111")
    page.click("#gallery-fill")
    expect(text_box(page, "image-prompt")).to_have_value("a castle in the clouds")
    expect(text_box(page, "image-negative")).to_have_value("blurry")
    # sd_xl_base is no card here, so its size lands on the selected model's trained size closest in shape: the
    # default offline model is the mini one, trained at 64x64 only.
    expect(page.locator("#image-size input")).to_have_value("64x64")


def test_presets_and_styles_fill_and_shape_the_job(page, served):
    studio, _ = served
    # A preset from the shipped library: picked by typing part of its title.
    preset = studio.presets.presets("image")[0]
    choose(page, "image-preset", preset.title)
    expect(text_box(page, "image-prompt")).to_have_value(preset.prompt)
    expect(text_box(page, "image-negative")).to_have_value(preset.negative_prompt)
    if "width" in preset.params:  # its size snaps to the tiny model's listed size of the same shape
        shown = page.locator("#image-size input").input_value()
        width, height = (int(v) for v in shown.split("x"))
        wanted = preset.params["width"] / preset.params["height"]
        assert abs(width / height - wanted) <= abs(1 - wanted) or width / height == 1

    # A style wraps the prompt of the job that runs, and the job records the result.
    style = studio.presets.styles("image")[0]
    text_box(page, "image-prompt").fill("a tin robot")
    choose(page, "image-style", style.name)
    page.click("#image-generate")
    expect(page.locator("#image-status")).to_contain_text("Done", timeout=120_000)
    job = studio.history.list_jobs(limit=1)[0]
    assert job.prompt == style.prompt.replace("{prompt}", "a tin robot")

    # Save as preset: it is offered in the picker (★) and listed in the Presets tab.
    page.get_by_text("Save as preset").first.click()
    text_box(page, "image-preset-name").fill("My robot")
    page.click("#image-preset-save")
    expect(page.locator("#image-preset input")).to_have_value("★ My presets · My robot")
    [mine] = studio.user_presets.presets("image")
    # The form's settings are kept; the model and the seed are not (a preset starts any model afresh).
    size = page.locator("#image-size input").input_value()
    assert mine.prompt == "a tin robot" and f"{mine.params['width']}x{mine.params['height']}" == size
    assert "model" not in mine.params and "seed" not in mine.params
    page.get_by_role("tab", name="Presets").click()
    choose(page, "presets-entry", "My robot")
    expect(text_box(page, "presets-name")).to_have_value("My robot")

    # A compositional preset lays its captions out on the grid, cell by cell.
    grid = next(p for p in studio.presets.presets("compositional") if p.params["grid_rows"] == 2
                and p.params["grid_cols"] == 2)
    page.get_by_role("tab", name="Compositional").click()
    choose(page, "compositional-preset", grid.title)
    for k, box in enumerate((0, 1, 4, 5)):  # the form's boxes are a 4x4 grid, row-major
        expect(text_box(page, f"compose-cell-{box}")).to_have_value(grid.params["captions"][k])
