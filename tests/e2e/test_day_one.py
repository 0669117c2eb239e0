"""A new user's first hour in the Image tab, in a real browser: Generate in reach with Advanced open,
the whole model name in the picker, one progress bar that says what stage the job is in, the last
error gone when a new run starts, a second click queued (and said so) rather than dropped, each
image captioned with its own seed, and "Reuse seed" putting that seed back in the form."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from studio.history import JobFilter

from ui_helpers import artifact, set_number, text_box

WIDE = {"width": 1440, "height": 900}


def _open(browser, served):
    _, url = served
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#image-prompt")
    return context, page


def _jobs(studio) -> int:
    return studio.gallery.page(JobFilter(), 1).total


def test_generate_is_in_reach_and_the_model_name_whole_at_1440x900(browser, served):
    context, page = _open(browser, served)
    try:
        page.get_by_role("button", name="Advanced").first.click()
        expect(page.locator("#image-seed input")).to_be_visible()
        box = page.locator("#image-generate").bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= WIDE["height"], box
        page.screenshot(path=str(artifact("day_one_generate_in_reach")))
        picker = page.locator("#image-model input")
        cut = picker.evaluate("(el) => el.scrollWidth > el.clientWidth + 1")
        assert not cut, f"the model picker cuts its name: {picker.input_value()!r}"
    finally:
        context.close()


def test_one_progress_bar_the_old_error_goes_and_a_second_click_is_queued(browser, served):
    studio, _ = served
    context, page = _open(browser, served)
    try:
        # A refused run first: its message is on screen.
        size = page.locator("#image-size input")
        size.fill("12x")
        size.press("Enter")
        page.click("#image-generate")
        expect(page.locator("#image-status")).to_contain_text("❌")
        size.fill("64x64")
        size.press("Enter")
        set_number(page, "image-steps", 30)
        text_box(page, "image-prompt").fill("a lighthouse at dusk")
        before = _jobs(studio)
        page.click("#image-generate")
        # The old error is gone as soon as the new run starts.
        expect(page.locator("#image-status")).not_to_contain_text("❌", timeout=5_000)
        page.wait_for_timeout(300)
        page.click("#image-generate")  # a second click while the first job runs
        expect(page.locator(".toast-body", has_text="Queued")).to_be_visible(timeout=10_000)
        bars = page.locator(".progress-text:visible")
        expect(bars.first).to_be_visible(timeout=10_000)
        # Sampled while the jobs run (a bar may come and go between the two jobs): never two at once.
        status = page.locator("#image-status")
        most = 0
        for _ in range(1800):
            most = max(most, bars.count())
            if "Done" in status.inner_text():
                break
            page.wait_for_timeout(100)
        assert most <= 1, f"{most} progress bars at once in the Image tab"  # one was seen just above
        expect(status).to_contain_text("Done", timeout=180_000)
        for _ in range(240):  # until the queued second job has run too
            if not studio.jobs.snapshot():
                break
            page.wait_for_timeout(500)
        assert _jobs(studio) == before + 2  # both clicks made a job
    finally:
        context.close()


def test_each_image_shows_its_seed_and_reuse_seed_puts_it_back(browser, served):
    context, page = _open(browser, served)
    try:
        page.get_by_role("button", name="Advanced").first.click()
        set_number(page, "image-steps", 2)
        size = page.locator("#image-size input")
        size.fill("64x64")
        size.press("Enter")
        seed = page.locator("#image-seed input")
        seed.fill("1234")
        seed.press("Enter")
        set_number(page, "image-num-images", 2)
        text_box(page, "image-prompt").fill("two kites")
        page.click("#image-generate")
        expect(page.locator("#image-status")).to_contain_text("Done", timeout=180_000)
        expect(page.locator("#image-status")).to_contain_text("seeds")
        captions = page.locator("#image-result .caption-label")
        expect(captions.first).to_contain_text(re.compile(r"seed \d+"))
        seed.fill("-1")
        seed.press("Enter")
        page.locator("#image-result .thumbnail-item").nth(1).click()
        page.click("#image-reuse-seed")
        expect(seed).to_have_value("1235")
    finally:
        context.close()
