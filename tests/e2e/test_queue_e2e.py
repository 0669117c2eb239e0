"""In a real browser: a running job stops with its tab's Stop button; a waiting one is cancelled
from the Queue tab, which shows it in line while the queue is paused."""

from __future__ import annotations

from playwright.sync_api import expect

from studio.history import JobStatus

from ui_helpers import set_number


def set_steps(page, steps: int) -> None:
    set_number(page, "image-steps", steps)


def test_stop_a_running_job_from_its_tab(page, served):
    studio, _ = served
    page.locator("#image-prompt textarea").fill("a very long job")
    set_steps(page, 200)
    page.click("#image-generate")
    expect(page.locator("#image-result")).to_contain_text("generating", timeout=60_000)  # the progress bar
    page.click("#image-stop")
    expect(page.locator("#image-status")).to_contain_text("Cancelled", timeout=60_000)
    job = studio.history.list_jobs(limit=1)[0]
    assert job.status is JobStatus.CANCELLED and job.assets == ()


def test_pause_see_the_line_and_cancel_a_waiting_job(page, served):
    studio, _ = served
    page.get_by_role("tab", name="Queue").click()
    page.click("#queue-pause")
    expect(page.locator("#queue-state")).to_contain_text("Paused")
    page.get_by_role("tab", name="Image").click()
    page.locator("#image-prompt textarea").fill("waiting in line")
    set_steps(page, 2)
    page.click("#image-generate")
    expect(page.locator("#image-result")).to_contain_text("queued", timeout=30_000)

    page.get_by_role("tab", name="Queue").click()
    cell = page.locator("#queue-table").get_by_text("waiting in line").filter(visible=True).first
    expect(cell).to_be_visible()
    cell.click()
    waiting = studio.history.list_jobs(limit=1)[0]
    expect(page.locator("#queue-job textarea, #queue-job input").first).to_have_value(waiting.id)
    page.click("#queue-cancel")
    expect(page.locator("#queue-message")).to_contain_text("Cancelling")
    page.click("#queue-resume")
    expect(page.locator("#queue-state")).to_contain_text("Running")
    page.get_by_role("tab", name="Image").click()
    expect(page.locator("#image-status")).to_contain_text("Cancelled")
    assert studio.history.get_job(waiting.id).status is JobStatus.CANCELLED
