"""Every tab, in a real browser, the way a user works: pick a preset, make it quick for the tiny
models, Generate (Ctrl+Enter in one tab), see the result, find it in the Gallery. Also: the Models
tab lists the cards, a bad input shows its message, and the page works at a phone's width.
A screenshot of each is saved under test-artifacts/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from studio.ui.models_tab import table_rows

from ui_helpers import artifact, choose, open_gallery, set_number, text_box


def quick(page, tab: str) -> None:
    """Few steps and a short length: the tiny models then answer in seconds."""
    steps = {"image": "image-steps", "video": "video-steps", "audio": "audio-steps", "compose": "compose-steps",
             "anagram": "anagram-steps"}
    if tab in steps:
        set_number(page, steps[tab], 2)
    if tab == "video":
        set_number(page, "video-frames", 9)  # 4k+1 for Wan and 8k+1 for CogVideoX
    if tab in ("audio", "music"):
        set_number(page, f"{tab}-seconds", 1)


# (tab label, its form prefix, its presets file, the element that shows a finished result)
TABS = [
    ("Image", "image", "image", "#image-result img"),
    ("Video", "video", "video", "#video-result video"),
    ("Audio", "audio", "audio", "#audio-result a.download-link"),
    ("Music", "music", "music", "#music-result a.download-link"),
    ("Compositional", "compose", "compositional", "#compose-result img"),
    ("Anagrams", "anagram", "anagrams", "#anagram-animation img"),
]


@pytest.mark.parametrize(("label", "prefix", "modality", "result"), TABS, ids=[t[1] for t in TABS])
def test_each_tab_generates_from_a_preset_and_the_gallery_shows_it(page, served, label, prefix, modality, result):
    studio, _ = served
    page.get_by_role("tab", name=label, exact=True).click()
    preset = studio.presets.presets(modality)[0]
    choose(page, f"{modality}-preset", preset.title)
    if preset.prompt:
        expect(text_box(page, f"{prefix}-prompt")).to_have_value(preset.prompt)
    quick(page, prefix)
    if prefix == "image":
        text_box(page, "image-prompt").press("Control+Enter")  # the keyboard shortcut, from the prompt box
    else:
        page.click(f"#{prefix}-generate")
    expect(page.locator(f"#{prefix}-status")).to_contain_text("Done", timeout=180_000)
    media = page.locator(result).first
    # The picture or player has its file (Gradio draws audio as a waveform with a download link).
    expect(media).to_have_attribute("href" if result.endswith("download-link") else "src", re.compile(r"\S"))
    expect(media).to_be_visible()
    if result.endswith("video"):  # the clip loads and has a length: it can play
        page.wait_for_function("(v) => v.readyState >= 1 && v.duration > 0", arg=media.element_handle())
    job = studio.history.list_jobs(limit=1)[0]
    assert job.task == ("compose" if prefix == "compose" else prefix) and job.status.value == "done"
    if preset.prompt:
        assert job.prompt == preset.prompt

    page.screenshot(path=str(artifact(f"tab-{prefix}")), full_page=True)
    open_gallery(page)
    expect(page.locator("#gallery-grid button.thumbnail-item").first).to_be_visible()
    page.locator("#gallery-grid button.thumbnail-item").first.click()
    expect(page.locator("#gallery-detail")).to_contain_text(job.id)


def test_the_models_tab_lists_the_cards(page, served):
    studio, _ = served
    page.get_by_role("tab", name="Models").click()
    rows = table_rows(studio)
    assert len(rows) == len(studio.cards.cards)
    # The table draws the rows in view (the first ones, real models first); each shows its status.
    for model, status, *_ in rows[:3]:
        cell = page.locator("#models-table").get_by_text(model, exact=True).filter(visible=True).first
        expect(cell).to_be_visible()
        assert status == "not downloaded"  # nothing real is downloaded on a test machine


def test_a_bad_input_shows_its_message_in_the_page(page, served):
    assert page.title() == "Studio"
    _, url = served
    favicon = page.request.get(f"{url}favicon.ico")
    assert favicon.ok and b"<svg" in favicon.body()  # our logo, from static/favicon.svg
    text_box(page, "image-prompt").fill("   ")
    page.click("#image-generate")
    expect(page.locator("#image-status")).to_contain_text("prompt is empty", timeout=30_000)


def test_a_phone_width_has_no_sideways_scrolling(browser, served):
    studio, url = served
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("#image-prompt")
        text_box(page, "image-prompt").fill("a lighthouse on a cliff")
        set_number(page, "image-steps", 2)
        page.click("#image-generate")
        expect(page.locator("#image-status")).to_contain_text("Done", timeout=180_000)
        # A mobile browser widens its layout to fit content that is too wide: measure against the screen.
        overflow = page.evaluate("Math.max(window.innerWidth, document.documentElement.scrollWidth)") - 390
        page.screenshot(path=str(artifact("phone-image")), full_page=True)
        assert overflow <= 1, f"the page is {overflow}px wider than a phone's screen"
    finally:
        context.close()
