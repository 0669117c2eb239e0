"""The type-to-search pickers in a real browser: leaving the preset picker without a match changes
nothing and raises no error; typing into a picker that shows a value searches afresh; the ImageNet
class picker offers all 1000 classes."""

from __future__ import annotations

from playwright.sync_api import expect

from ui_helpers import choose, text_box

ERROR_TOAST = ".toast-body.error"


def test_leaving_the_preset_picker_without_a_match_changes_nothing(page, served):
    studio, _ = served
    picker = page.locator("#image-preset input")
    prompt = text_box(page, "image-prompt")
    prompt.fill("my own prompt")
    picker.click()
    page.keyboard.type("zzzz no such preset")
    page.keyboard.press("Enter")  # nothing to pick: the text stays to be corrected
    page.keyboard.press("Tab")
    expect(picker).to_have_value("")
    picker.click()
    page.keyboard.type("qqqq")
    page.locator("#image-negative textarea").click()  # clicking elsewhere
    expect(picker).to_have_value("")

    # Typed, then an option clicked: the preset fills the form (the blur before the click is no error).
    preset = studio.presets.presets("image")[0]
    picker.click()
    page.keyboard.type(preset.title[:6])
    page.locator("[role=listbox] [role=option]", has_text=preset.title).first.click()
    expect(prompt).to_have_value(preset.prompt)

    # Clicking into the picker and out again does not re-apply the preset over the user's edits.
    prompt.fill("edited after the preset")
    picker.click()
    page.locator("#image-negative textarea").click()
    page.wait_for_timeout(500)  # a re-apply would land within this
    expect(prompt).to_have_value("edited after the preset")
    expect(page.locator(ERROR_TOAST)).to_have_count(0)
    expect(page.locator("#image-prompt .error, #image-size .error")).to_have_count(0)


def test_the_class_picker_searches_afresh_and_offers_every_class(page, served):
    page.get_by_role("tab", name="Image", exact=True).click()
    choose(page, "image-model", "Tiny LlamaGen C2I")
    field = page.locator("#image-class-id input")
    expect(field).to_have_value("207 · golden retriever")

    field.click()  # no clearing first: typing replaces the shown class
    options = page.locator("[role=listbox] [role=option]")
    expect(options).to_have_count(1000)  # every class, by scrolling, before typing anything
    expect(options.last).to_contain_text("999 · toilet tissue")
    page.keyboard.type("tabby")
    expect(field).to_have_value("tabby")
    options.filter(has_text="281 · tabby").first.click()
    expect(field).to_have_value("281 · tabby")

    field.click(delay=250)  # a slow click's mouseup does not undo the selection
    page.keyboard.type("goldfish")
    page.keyboard.press("Enter")
    expect(field).to_have_value("1 · goldfish")
    expect(page.locator(ERROR_TOAST)).to_have_count(0)
