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
