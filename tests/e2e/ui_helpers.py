"""What the browser tests do to the page, the way a user would: type, pick, open a tab."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # screenshots for people (git-ignored)


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"{name}.png"


def text_box(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def choose(page, elem_id: str, typed: str, option: str | None = None) -> None:
    """Open a dropdown, type to filter it, and click the matching option."""
    field = page.locator(f"#{elem_id} input")
    field.click()
    field.fill("")  # the dropdown shows its current value as text: clear it, or the filter won't match
    page.keyboard.type(typed)
    page.locator("[role=listbox] [role=option]", has_text=option or typed).first.click()


def set_number(page, elem_id: str, value: float) -> None:
    """Type into a slider's number box (what a user does for an exact value)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def open_gallery(page) -> None:
    page.get_by_role("tab", name="Gallery").click()
    expect(page.locator("#gallery-info")).to_contain_text("Page 1 of")


def paint_stroke(page) -> None:
    """A short brush stroke across the middle of the Image tab's mask editor, as a user paints one."""
    canvas = page.locator("#image-mask-editor canvas").first
    expect(canvas).to_be_visible(timeout=30_000)
    # A new start image sets the editor's value on the server (background, no layers): a stroke drawn
    # before that update lands is wiped by it. While it runs the editor shows Gradio's progress bar.
    expect(page.locator("#image-mask-editor .eta-bar:visible")).to_have_count(0, timeout=60_000)
    page.wait_for_timeout(1500)  # the editor draws its background
    page.locator("#image-mask-editor").get_by_role("button", name="Brush").first.click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 30, cy)
    page.mouse.down()
    for step in range(1, 13):
        page.mouse.move(cx - 30 + step * 5, cy + (step % 3), steps=2)
    page.mouse.up()
    page.wait_for_timeout(500)


def upscale_sent_picture(page) -> None:
    """In the Upscale tab a picture was just sent to: pick the tiny ESRGAN and upscale, until done."""
    import re

    # The tab switch is the Send button's server round trip: on a loaded machine it takes seconds.
    expect(page.get_by_role("tab", name="Upscale", exact=True)).to_have_attribute("aria-selected", "true",
                                                                               timeout=30_000)
    expect(page.locator("#upscale-image img").first).to_have_attribute("src", re.compile(r"\S"), timeout=30_000)
    page.locator("#upscale-model input").click()
    page.locator("[role=listbox] [role=option]", has_text="Tiny ESRGAN").first.click()
    page.click("#upscale-generate")
    expect(page.locator("#upscale-status")).to_contain_text("Done", timeout=180_000)
