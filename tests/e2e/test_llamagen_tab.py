"""LlamaGen in the Image tab, in a real browser: picking a class-conditional model swaps the prompt for
the ImageNet class picker and the diffusion controls for the token-sampling ones; a class typed into
the picker generates; the text model takes a prompt."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from ui_helpers import artifact, choose, set_number, text_box


def wait_for_job(studio, model_id: str, timeout: float = 120.0):
    """The newest job once it is one of `model_id`'s and has finished (the page's status line still
    shows the previous job's "Done" until the new one's result arrives)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = studio.history.list_jobs(limit=1)
        if jobs and jobs[0].model_id == model_id and jobs[0].status.value in ("done", "failed"):
            return jobs[0]
        time.sleep(0.2)
    raise AssertionError(f"no finished {model_id} job within {timeout:g} s")


def test_class_picker_and_token_controls_generate_an_image(page, served):
    studio, _ = served
    page.get_by_role("tab", name="Image", exact=True).click()
    expect(page.locator("#image-steps")).to_be_visible()  # a diffusion model comes up first
    expect(page.locator("#image-class-id")).to_be_hidden()

    choose(page, "image-model", "Tiny LlamaGen C2I")
    expect(page.locator("#image-class-id")).to_be_visible()
    expect(page.locator("#image-temperature")).to_be_visible()
    expect(page.locator("#image-steps")).to_be_hidden()
    expect(page.locator("#image-prompt")).to_be_hidden()
    expect(page.locator("#image-negative")).to_be_hidden()

    choose(page, "image-class-id", "tabby", "281 · tabby")
    set_number(page, "image-temperature", 0.9)
    page.click("#image-generate")
    expect(page.locator("#image-status")).to_contain_text("Done", timeout=120_000)
    expect(page.locator("#image-result img").first).to_be_visible()
    job = studio.history.list_jobs(limit=1)[0]
    assert job.model_id == "tiny-llamagen-c2i" and job.status.value == "done"
    assert job.params["class_id"] == 281 and job.params["temperature"] == 0.9 and job.prompt == "281 · tabby"
    page.screenshot(path=str(artifact("tab-image-llamagen")), full_page=True)

    choose(page, "image-model", "Tiny LlamaGen T2I")
    expect(page.locator("#image-prompt")).to_be_visible()
    expect(page.locator("#image-class-id")).to_be_hidden()
    text_box(page, "image-prompt").fill("a lighthouse at dusk")
    page.click("#image-generate")
    job = wait_for_job(studio, "tiny-llamagen-t2i")
    expect(page.locator("#image-status")).to_contain_text(job.id, timeout=30_000)  # this job's line, done
    expect(page.locator("#image-status")).to_contain_text("Done")
    assert job.model_id == "tiny-llamagen-t2i" and job.prompt == "a lighthouse at dusk" and job.params["steps"] is None
