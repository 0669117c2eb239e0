"""The Anagrams tab in a real browser: the model's recipe on the form (its fixed negative prompt), then
Generate shows the refined picture with its reading, the first phase's preview and the animation."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from studio.families.lumina_next import ANAGRAM

from ui_helpers import artifact, choose, set_number, text_box


def test_the_anagrams_tab_shows_the_preview_and_the_refined_picture(page, served):
    studio, _ = served
    page.get_by_role("tab", name="Anagrams", exact=True).click()
    choose(page, "anagram-model", "Tiny Lumina-Next")
    expect(text_box(page, "anagram-negative")).to_have_value(ANAGRAM["negative_prompt"])
    text_box(page, "anagram-prompt-0").fill("an old man")
    text_box(page, "anagram-prompt-1").fill("a snowy mountain")
    set_number(page, "anagram-steps", 2)
    page.click("#anagram-generate")
    expect(page.locator("#anagram-status")).to_contain_text("Done", timeout=180_000)
    for shown in ("#anagram-result img", "#anagram-preview img", "#anagram-animation img"):
        expect(page.locator(shown).first).to_have_attribute("src", re.compile(r"\S"))
        expect(page.locator(shown).first).to_be_visible()
    expect(page.locator("#anagram-result img")).to_have_count(2)  # the picture and its reading upside down
    job = studio.history.list_jobs(limit=1)[0]
    assert job.task == "anagram" and [a.kind for a in job.assets].count("preview") == 1
    assert job.params["negative_prompt"] == ANAGRAM["negative_prompt"] and job.params["cfg"] == 8.0
    page.screenshot(path=str(artifact("tab-anagram-preview")), full_page=True)
