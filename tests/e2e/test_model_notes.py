"""The note under every tab's model picker follows the model picked (title, family, licence), and a
model that is only listed says so and cannot be started, in a real browser."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from helpers import LISTED_ONLY, LISTED_ONLY_TITLE
from ui_helpers import artifact, choose

# tab, picker prefix, a model to switch to (typed, then the option's text), what its note then says
SWITCHES = [
    ("Image", "image", "Tiny LlamaGen T2I", "Tiny LlamaGen T2I", "LlamaGen"),
    ("Image", "image", "Tiny Lumina-T2I", "Tiny Lumina-T2I", "Lumina-T2I"),
    ("Video", "video", "Tiny Wan 2.1 VACE", "Tiny Wan 2.1 VACE", "Wan 2.1"),
    ("Audio", "audio", "Tiny Stable Audio", "Tiny Stable Audio Open", "Stable Audio Open"),
    ("Music", "music", "MusicGen Small", "MusicGen Small", "MusicGen"),
    ("Compositional", "compose", "Lumina-Next-SFT", "Lumina-Next-SFT 2B", "Lumina-Next"),
    ("Anagrams", "anagram", "Tiny Lumina-Next", "Tiny Lumina-Next", "Lumina-Next"),
]


@pytest.mark.parametrize("tab, prefix, typed, title, family", SWITCHES, ids=[f"{s[0]}-{s[4]}" for s in SWITCHES])
def test_the_model_note_follows_the_picker(page, served, tab, prefix, typed, title, family):
    page.get_by_role("tab", name=tab, exact=True).click()
    note = page.locator(f"#{prefix}-note")
    expect(note).to_be_visible()
    before = note.inner_text()
    assert title not in before
    choose(page, f"{prefix}-model", typed, title)
    expect(note).to_contain_text(title)
    expect(note).to_contain_text(family)
    assert note.inner_text() != before


def test_a_listed_model_says_it_cannot_run_yet_and_cannot_be_started(page, served):
    studio, _ = served
    page.get_by_role("tab", name="Image", exact=True).click()
    choose(page, "image-model", "Flag-DiT Preview", f"{LISTED_ONLY_TITLE} (not yet runnable)")
    expect(page.locator("#image-note")).to_contain_text("not yet runnable")
    expect(page.locator("#image-generate")).to_be_disabled()
    page.screenshot(path=str(artifact("tab-image-not-runnable")), full_page=True)
    choose(page, "image-model", "Tiny Lumina-Next")
    expect(page.locator("#image-generate")).to_be_enabled()
    assert not [j for j in studio.history.list_jobs() if j.model_id == LISTED_ONLY]
