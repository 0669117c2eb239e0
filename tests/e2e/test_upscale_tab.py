"""The Upscale action in a real browser: make a picture in the Image tab, send it to the Upscale tab,
upscale it with the tiny ESRGAN and see the bigger result; then the same from the Gallery's detail view."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from ui_helpers import artifact, open_gallery, set_number, text_box, upscale_sent_picture


def test_send_an_image_result_to_upscale_and_see_it_bigger(page, served):
    studio, _ = served
    text_box(page, "image-prompt").fill("a lighthouse on a cliff")
    set_number(page, "image-steps", 2)
    page.click("#image-generate")
    expect(page.locator("#image-status")).to_contain_text("Done", timeout=180_000)
    made = studio.history.list_jobs(limit=1)[0]
    width, height = made.params["width"], made.params["height"]

    page.click("#image-send-upscale")
    upscale_sent_picture(page)
    status = page.locator("#upscale-status")
    expect(status).to_contain_text(f"{width * 4}x{height * 4}")
    shown = page.locator("#upscale-result img").first
    expect(shown).to_be_visible()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=shown.element_handle())
    assert shown.evaluate("img => img.naturalWidth") == width * 4
    job = studio.history.list_jobs(limit=1)[0]
    assert job.task == "upscale" and job.status.value == "done" and job.model_id == "tiny-esrgan"
    page.screenshot(path=str(artifact("tab-upscale")), full_page=True)

    # From the Gallery: the upscaled job's own picture, sent back to the tab.
    open_gallery(page)
    page.locator("#gallery-grid button.thumbnail-item").first.click()
    expect(page.locator("#gallery-detail")).to_contain_text(job.id)
    expect(page.locator("#gallery-pictures img").first).to_be_visible()
    page.click("#gallery-send-upscale")
    expect(page.get_by_role("tab", name="Upscale", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#upscale-image img").first).to_have_attribute("src", re.compile(r"\S"))
