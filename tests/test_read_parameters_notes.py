"""Read parameters, then fill a tab: each value the model cannot take as it was is adapted or left
out, and the note says what and why (a size it does not make, a sampler it has no equivalent of, a
field it does not take, a value outside a control's range, a model this studio does not have)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from PIL import Image, PngImagePlugin

from studio.png_params import read_parameters
from studio.ui import image_tab
from studio.ui.forms import fill_fitted


@pytest.fixture
def form(studio):
    with gr.Blocks():
        return image_tab.build(studio)


def _a1111(path: Path, text: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def _fill(studio, form, path: Path, model: str):
    found = read_parameters(path)
    params = {"prompt": found.prompt, "negative_prompt": found.negative_prompt, **found.params}
    return fill_fitted(studio, form, params, model, found.details if found.source != "studio" else None)


def _value(updates, component):
    change = updates[component]
    return change.get("value") if isinstance(change, dict) else change


def test_an_a1111_size_the_model_does_not_make_is_snapped_and_said(studio, form, tmp_path):
    path = _a1111(tmp_path / "a.png", "a castle\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, "
                                      "Schedule type: Karras, CFG scale: 7, Seed: 4242, Size: 512x768, "
                                      "Model hash: 31e35c80fc, Model: sd_xl_base, Version: v1.9.4")
    fitted = _fill(studio, form, path, "tiny-lumina2")
    size = next(c for c in fitted.updates if getattr(c, "elem_id", None) == "image-size")
    assert _value(fitted.updates, size) == "256x384"
    notes = "\n".join(fitted.notes)
    assert ("Size 512x768 → 256x384: Tiny Lumina-Image 2.0 makes 256x256, 384x256, 256x384, 512x512, 512x256, "
            "256x512; 256x384 is the nearest of those in shape.") in notes
    assert "Sampler 'DPM++ 2M Karras' has no equivalent here: Tiny Lumina-Image 2.0 uses its own sampler" in notes
    assert "Model 'sd_xl_base' is another tool's checkpoint: the values are filled for Tiny Lumina-Image 2.0." in notes
    assert "Not used (nothing like them here): Schedule type, Model hash, Version." in notes
    assert "Steps" not in notes and "CFG" not in notes  # taken as they were: nothing to say


def test_a_token_model_says_what_it_does_not_take_and_why(studio, form, tmp_path):
    path = _a1111(tmp_path / "a.png", "a castle\nNegative prompt: blurry\nSteps: 20, CFG scale: 7, Seed: 5, "
                                      "Size: 512x512")
    notes = "\n".join(_fill(studio, form, path, "tiny-llamagen-c2i").notes)
    title = "Tiny LlamaGen C2I (ImageNet classes)"
    assert (f"Steps 20 not used: {title} takes no denoising steps: it draws its image token by token; "
            "it has no denoising steps or schedule shift.") in notes
    assert f"Negative prompt 'blurry' not used: {title} takes no negative prompt: leave it empty" in notes
    assert f"Prompt not used: {title} draws what its ImageNet class picker names, not a prompt" in notes
    assert f"Size 512x512 → 64x64: {title} makes 64x64 only." in notes


def test_an_extrapolation_size_is_offered_in_the_note(studio, form, tmp_path):
    path = _a1111(tmp_path / "a.png", "a castle\nSteps: 3, Sampler: Euler, Size: 512x512")
    assert _fill(studio, form, path, "tiny-lumina-next").notes == [
        "Size 512x512 → 256x256: Tiny Lumina-Next makes 256x256, 128x512, 512x128; 256x256 is the nearest of "
        "those in shape. It can try 512x512 beyond what it was trained at: pick “512x512 (extrapolation)” under Size.",
        "Sampler 'Euler' has no equivalent here: Tiny Lumina-Next uses its own sampler: see its Solver setting."]


def test_a_value_beyond_a_control_is_clamped_and_said(studio, form, tmp_path):
    path = _a1111(tmp_path / "a.png", "a castle\nSteps: 500, CFG scale: 35, Seed: 5, Size: 256x256")
    fitted = _fill(studio, form, path, "tiny-lumina-next")
    assert _value(fitted.updates, form.fields["steps"]) == 200
    assert _value(fitted.updates, form.fields["cfg"]) == 20
    assert fitted.notes == ["Steps 500 → 200: Tiny Lumina-Next's Steps goes from 1 to 200.",
                            "CFG scale 35 → 20: Tiny Lumina-Next's CFG scale goes from 1 to 20."]


def test_a_studio_png_fills_its_own_model_as_it_was_or_says_it_is_missing(studio, form):
    params = {"model": "tiny-lumina-next", "prompt": "a moon", "width": 512, "height": 128, "steps": 3,
              "solver": "midpoint"}
    fitted = fill_fitted(studio, form, params, "tiny-lumina2")
    assert fitted.card.id == "tiny-lumina-next" and fitted.notes == []
    assert _value(fitted.updates, form.model) == "tiny-lumina-next"

    c2i = {"model": "tiny-llamagen-c2i", "prompt": "281 · tabby", "class_id": 281, "width": 64, "height": 64}
    assert fill_fitted(studio, form, c2i, "tiny-lumina2").notes == []  # its prompt is its class: nothing to say

    fitted = fill_fitted(studio, form, {**params, "model": "somebody-elses-model"}, "tiny-lumina2")
    assert fitted.card.id == "tiny-lumina2"
    assert fitted.notes[0] == ("Model 'somebody-elses-model' is not one of this studio's image models: the values "
                               "are filled for Tiny Lumina-Image 2.0.")
    assert any(note.startswith("Solver 'midpoint' not used: Tiny Lumina-Image 2.0 takes no Solver")
               for note in fitted.notes)
