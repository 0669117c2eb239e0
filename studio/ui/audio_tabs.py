"""The Audio and Music tabs: prompt, length, guidance, seed (and, for a model that follows one, a
melody clip); a player, the waveform picture and the files. They only build the form and turn it
into an audio or music TaskSpec."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..errors import InvalidInput
from ..services import Studio
from ..tasks.audio import AudioSpec, length_range
from ..tasks.music import MAX_MELODY_SECONDS, MELODY_FORMATS, MusicSpec
from .common import (card_note, generate, model_header, only_taken, start_follows_model, stop_button, styled_job,
                     wire_generate)
from .family_controls import FamilyControls
from .results import job_summary, reuse_seed_button
from .forms import TabForm, preset_controls, wire_presets


def _result_widgets(prefix: str, seed: gr.Number) -> tuple[gr.Audio, gr.Image, gr.File, gr.Markdown]:
    player = gr.Audio(label="Result", type="filepath", elem_id=f"{prefix}-result")
    picture = gr.Image(label="Waveform", type="filepath", height=200, elem_id=f"{prefix}-waveform")
    files = gr.File(label="Files", file_count="multiple", elem_id=f"{prefix}-files")
    with gr.Row(equal_height=True):
        status = gr.Markdown(elem_id=f"{prefix}-status")
        reuse_seed_button(prefix, seed)
    return player, picture, files, status


def present(job: Any, seconds: float) -> tuple:
    """The player's clip, the waveform picture, every file, and the summary."""
    sounds = [str(o.path) for o in job.outputs if o.kind == "audio"]
    pictures = [str(o.path) for o in job.outputs if o.kind == "waveform"]
    return (sounds[0] if sounds else None), (pictures[0] if pictures else None), sounds, job_summary(job, seconds)


def _length_fill(studio: Studio, seconds: gr.Slider, params: dict[str, Any], model_id: str | None,
                 longest: float) -> dict:
    """A length from parameters, within what the model can make (a preset may ask for more than a small
    one, or for another length than a model that makes one)."""
    if params.get("seconds") is None:
        return {}
    card = studio.cards.cards.get(model_id or "")
    lo, hi = length_range(card, longest) if card else (1.0, longest)
    return {seconds: min(max(float(params["seconds"]), lo), hi)}


def _length(card: Any, value: float, longest: float) -> dict[str, Any]:
    """The Length slider's range, value and help for the card: locked at the one length of a model that
    makes one (Lumina-T2Audio's 9.984 s), so the form never offers a length the model refuses."""
    lo, hi = length_range(card, longest) if card is not None else (1.0, longest)
    one = lo == hi
    return {"minimum": lo, "maximum": hi, "value": min(max(float(value), lo), hi), "interactive": not one,
            "info": f"this model makes {hi:g} s clips only" if one else None}


def _length_slider(card: Any, value: float, longest: float, elem_id: str) -> gr.Slider:
    return gr.Slider(step=0.5, label="Length (seconds)", elem_id=elem_id, **_length(card, value, longest))


def build_audio(studio: Studio) -> TabForm:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, note, defaults = model_header(studio, "audio", AudioSpec, "audio-model")
            controls = FamilyControls("audio", "audio", studio.cards.cards.get(model.value or ""))
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="A door creaks open in an empty hall…",
                                elem_id="audio-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1, value="Low quality.", elem_id="audio-negative")
            presets = preset_controls(studio, "audio")
            seconds = _length_slider(studio.cards.cards.get(model.value or ""), defaults.get("seconds", 10), 47,
                                     "audio-seconds")
            with gr.Row():
                steps = gr.Slider(1, 300, value=defaults.get("steps", 100), step=1, label="Steps",
                                  elem_id="audio-steps")
                cfg = gr.Slider(1.0, 15.0, value=defaults.get("cfg", 7.0), step=0.5, label="Guidance")
            with gr.Row():
                controls.place(advanced=False)
            with gr.Accordion("Advanced", open=False):
                count = gr.Slider(1, 4, value=1, step=1, label="Waveforms")
                fmt = gr.Radio(["wav", "flac"], value="wav", label="File format")
                seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                controls.place(advanced=True)
            with gr.Row(elem_classes=["studio-actions"]):
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="audio-generate")
                stop_button(studio, "audio")
        with gr.Column(scale=3, min_width=320):
            player, picture, files, status = _result_widgets("audio", seed)

    def model_updates(model_id: str) -> dict:
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return {}
        values = AudioSpec.defaults_for(card)
        takes = AudioSpec.takes(card)
        return {note: card_note(card), seconds: gr.update(**_length(card, values["seconds"], 47)),
                steps: gr.update(value=values.get("steps", 100), visible="steps" in takes), cfg: values["cfg"],
                negative: gr.update(visible="negative_prompt" in takes), **controls.updates(card)}

    def read(model_id, prompt_text, negative_text, seconds_v, steps_v, cfg_v, count_v, fmt_v, seed_v,
             *option_values) -> dict:
        params = {"model": model_id or "", "prompt": prompt_text or "", "negative_prompt": negative_text or "",
                  "seconds": seconds_v, "steps": steps_v, "cfg": cfg_v, "num_waveforms": count_v, "format": fmt_v,
                  "seed": -1 if seed_v is None else seed_v}
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return params
        return only_taken(AudioSpec, card, {**params, **controls.params(card, list(option_values))})

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        *form_values, style_key = values
        try:
            params = styled_job(studio, AudioSpec, style_key, read(*form_values))
        except InvalidInput as err:
            return None, None, [], f"❌ {err}"
        return generate(studio, "audio", params, progress, request, present)

    inputs = [model, prompt, negative, seconds, steps, cfg, count, fmt, seed, *controls.components]
    model_updates = start_follows_model(studio, run, model, model_updates)
    model_outputs = [note, run, seconds, steps, cfg, negative, *controls.outputs]
    form = TabForm(modality="audio", tab_id="audio", model=model, inputs=inputs, read=read,
                   fields={"prompt": prompt, "negative_prompt": negative, "steps": steps,
                           "cfg": cfg, "num_waveforms": count, "format": fmt, "seed": seed, **controls.widgets},
                   model_updates=model_updates, outputs=list(dict.fromkeys([*inputs, *model_outputs])),
                   extra_fill=lambda params, model_id: _length_fill(studio, seconds, params, model_id, 47))
    model.input(model_updates, model, model_outputs, api_visibility="private")
    wire_generate(run, on_generate, [*inputs, presets.style], [player, picture, files, status])
    wire_presets(studio, form, presets)
    form.present = present
    form.results = [player, picture, files, status]
    return form


def build_music(studio: Studio) -> TabForm:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, note, defaults = model_header(studio, "music", MusicSpec, "music-model")
            card = studio.cards.cards.get(model.value or "")
            controls = FamilyControls("music", "music", card)
            takes = MusicSpec.takes(card) if card is not None else set()
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Lo-fi piano over soft rain, 80 bpm…",
                                elem_id="music-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="music-negative",
                                  visible="negative_prompt" in takes)
            presets = preset_controls(studio, "music")
            melody = gr.Audio(label=f"Melody to follow (optional: a clip of up to {MAX_MELODY_SECONDS:g} s, "
                              f"{MELODY_FORMATS})", type="filepath", sources=["upload"], elem_id="music-melody",
                              visible="melody" in takes)
            seconds = _length_slider(card, defaults.get("seconds", 10), 30, "music-seconds")
            cfg = gr.Slider(1.0, 10.0, value=defaults.get("cfg", 3.0), step=0.5, label="Guidance")
            with gr.Row():
                controls.place(advanced=False)
            with gr.Accordion("Advanced", open=False):
                steps = gr.Slider(1, 300, value=defaults.get("steps", 100), step=1, elem_id="music-steps",
                                  label="Steps", visible="steps" in takes)
                fmt = gr.Radio(["wav", "flac"], value="wav", label="File format")
                seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                controls.place(advanced=True)
            with gr.Row(elem_classes=["studio-actions"]):
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="music-generate")
                stop_button(studio, "music")
        with gr.Column(scale=3, min_width=320):
            player, picture, files, status = _result_widgets("music", seed)

    def model_updates(model_id: str) -> dict:
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return {}
        values = MusicSpec.defaults_for(card)
        takes = MusicSpec.takes(card)
        return {note: card_note(card), seconds: gr.update(**_length(card, values["seconds"], 30)),
                cfg: values["cfg"], steps: gr.update(value=values.get("steps", 100), visible="steps" in takes),
                negative: gr.update(visible="negative_prompt" in takes), melody: gr.update(visible="melody" in takes),
                **controls.updates(card)}

    def read(model_id, prompt_text, negative_text, seconds_v, cfg_v, steps_v, fmt_v, seed_v, melody_path=None,
             *option_values) -> dict:
        """The form as music TaskSpec parameters: only what the chosen model takes (sampling settings for
        token models, steps for diffusion ones, the melody clip for melody models)."""
        params = {"model": model_id or "", "prompt": prompt_text or "", "negative_prompt": negative_text or "",
                  "seconds": seconds_v, "cfg": cfg_v, "steps": steps_v, "format": fmt_v,
                  "seed": -1 if seed_v is None else seed_v}
        if melody_path:
            params["melody"] = melody_path
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return params
        return only_taken(MusicSpec, card, {**params, **controls.params(card, list(option_values))})

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        *form_values, style_key = values
        try:
            params = styled_job(studio, MusicSpec, style_key, read(*form_values))
        except InvalidInput as err:
            return None, None, [], f"❌ {err}"
        return generate(studio, "music", params, progress, request, present)

    inputs = [model, prompt, negative, seconds, cfg, steps, fmt, seed, melody, *controls.components]
    model_updates = start_follows_model(studio, run, model, model_updates)
    model_outputs = [note, run, seconds, cfg, steps, negative, melody, *controls.outputs]
    # The melody clip is not refilled from a past job or preset: an upload may be gone, so it is picked again.
    form = TabForm(modality="music", tab_id="music", model=model, inputs=inputs, read=read,
                   fields={"prompt": prompt, "negative_prompt": negative, "cfg": cfg, "steps": steps, "format": fmt,
                           "seed": seed, **controls.widgets},
                   model_updates=model_updates, outputs=list(dict.fromkeys([*inputs, *model_outputs])),
                   extra_fill=lambda params, model_id: _length_fill(studio, seconds, params, model_id, 30))
    model.input(model_updates, model, model_outputs, api_visibility="private")
    wire_generate(run, on_generate, [*inputs, presets.style], [player, picture, files, status])
    wire_presets(studio, form, presets)
    form.present = present
    form.results = [player, picture, files, status]
    return form
