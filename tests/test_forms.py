"""Filling a tab's form from parameters: sizes snap to what the model makes, updates combine."""

import gradio as gr

from studio.ui.forms import merge, nearest_shape, styled


def test_a_preset_size_snaps_to_the_models_size_of_the_same_shape():
    sizes = ["256x256", "512x256", "256x512", "384x256"]
    assert nearest_shape("1216x832", sizes) == "384x256"  # 1.46 wide: 3:2 is the closest shape
    assert nearest_shape("1344x768", sizes) == "512x256"  # 1.75 wide: 2:1 is closer than 3:2
    assert nearest_shape("768x1344", sizes) == "256x512"
    assert nearest_shape("1024x1024", sizes) == "256x256"
    assert nearest_shape("512x256", sizes) == "512x256"  # offered as is: kept
    assert nearest_shape("1024x1024", []) == "1024x1024"


def test_a_value_keeps_the_choices_a_model_brought():
    size = gr.Dropdown()
    updates = {size: gr.update(choices=["256x256", "512x512"], value="256x256")}
    merge(updates, size, "512x512")
    assert updates[size]["choices"] == ["256x256", "512x512"] and updates[size]["value"] == "512x512"
    box = gr.Textbox()
    merge(updates, box, gr.update(value="a moon", visible=True))
    assert updates[box]["value"] == "a moon" and updates[box]["visible"] is True


def test_a_style_wraps_the_prompt_and_adds_its_negative(studio):
    style = studio.presets.styles("image")[0]
    params = styled(studio, f"builtin:{style.name}", {"prompt": "a tin robot", "negative_prompt": "blurry"})
    assert params["prompt"] == style.prompt.replace("{prompt}", "a tin robot")
    assert params["negative_prompt"].startswith("blurry") and (style.negative_prompt in params["negative_prompt"])
    assert styled(studio, "", {"prompt": "x"}) == {"prompt": "x"}  # no style: untouched
