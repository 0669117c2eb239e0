"""The Audio and Music tabs: prompt, length, guidance, seed; a player, the waveform picture and the
files. They only build the form and turn it into an audio or music TaskSpec."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..services import Studio
from ..tasks.audio import AudioSpec
from ..tasks.music import MusicSpec
from .common import GENERATE, Timer, job_summary, model_header, run_job, stop_button
from .forms import TabForm, preset_controls, styled, wire_presets


def _result_widgets(prefix: str) -> tuple[gr.Audio, gr.Image, gr.File, gr.Markdown]:
    player = gr.Audio(label="Result", type="filepath", elem_id=f"{prefix}-result")
    picture = gr.Image(label="Waveform", type="filepath", height=200, elem_id=f"{prefix}-waveform")
    files = gr.File(label="Files", file_count="multiple", elem_id=f"{prefix}-files")
    status = gr.Markdown(elem_id=f"{prefix}-status")
    return player, picture, files, status


def _outputs(job: Any) -> tuple[str | None, str | None, list[str]]:
    sounds = [str(o.path) for o in job.outputs if o.kind == "audio"]
    pictures = [str(o.path) for o in job.outputs if o.kind == "waveform"]
    return (sounds[0] if sounds else None), (pictures[0] if pictures else None), sounds


def _length_fill(studio: Studio, seconds: gr.Slider, params: dict[str, Any], model_id: str | None,
                 cap: float) -> dict:
    """A length from parameters, within what the model can make (a preset may ask for more than a small one)."""
    if params.get("seconds") is None:
        return {}
    card = studio.cards.cards.get(model_id or "")
    cap = float(card.defaults.get("max_seconds", cap)) if card else cap
    return {seconds: min(float(params["seconds"]), cap)}


def build_audio(studio: Studio) -> TabForm:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, defaults = model_header(studio, "audio", AudioSpec, "audio-model")
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="A door creaks open in an empty hall…",
                                elem_id="audio-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1, value="Low quality.", elem_id="audio-negative")
            presets = preset_controls(studio, "audio")
            seconds = gr.Slider(1, 47, value=defaults.get("seconds", 10), step=0.5, label="Length (seconds)",
                                elem_id="audio-seconds")
            with gr.Row():
                steps = gr.Slider(1, 300, value=defaults.get("steps", 100), step=1, label="Steps",
                                  elem_id="audio-steps")
                cfg = gr.Slider(1.0, 15.0, value=defaults.get("cfg", 7.0), step=0.5, label="Guidance")
            with gr.Accordion("Advanced", open=False):
                count = gr.Slider(1, 4, value=1, step=1, label="Waveforms")
                fmt = gr.Radio(["wav", "flac"], value="wav", label="File format")
                seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="audio-generate")
                stop_button(studio, "audio")
        with gr.Column(scale=3, min_width=320):
            player, picture, files, status = _result_widgets("audio")

    def model_updates(model_id: str) -> dict:
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return {}
        values = AudioSpec.defaults_for(card)
        cap = float(card.defaults.get("max_seconds", 47))
        return {seconds: gr.update(maximum=cap, value=min(values["seconds"], cap)), steps: values["steps"],
                cfg: values["cfg"]}

    def read(model_id, prompt_text, negative_text, seconds_v, steps_v, cfg_v, count_v, fmt_v, seed_v) -> dict:
        return {"model": model_id or "", "prompt": prompt_text or "", "negative_prompt": negative_text or "",
                "seconds": seconds_v, "steps": steps_v, "cfg": cfg_v, "num_waveforms": count_v, "format": fmt_v,
                "seed": -1 if seed_v is None else seed_v}

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        *form_values, style_key = values
        with Timer() as timer:
            job = run_job(studio, "audio", styled(studio, style_key, read(*form_values)), progress, request)
        if job.error:
            gr.Warning(job.error)
        return (*_outputs(job), job_summary(job, timer.seconds))

    inputs = [model, prompt, negative, seconds, steps, cfg, count, fmt, seed]
    form = TabForm(modality="audio", tab_id="audio", model=model, inputs=inputs, read=read,
                   fields={"prompt": prompt, "negative_prompt": negative, "steps": steps,
                           "cfg": cfg, "num_waveforms": count, "format": fmt, "seed": seed},
                   model_updates=model_updates, outputs=inputs,
                   extra_fill=lambda params, model_id: _length_fill(studio, seconds, params, model_id, 47))
    model.input(model_updates, model, [seconds, steps, cfg], api_visibility="private")
    run.click(on_generate, [*inputs, presets.style], [player, picture, files, status], api_name="generate_audio",
              **GENERATE)
    wire_presets(studio, form, presets)
    return form


def build_music(studio: Studio) -> TabForm:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, defaults = model_header(studio, "music", MusicSpec, "music-model")
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Lo-fi piano over soft rain, 80 bpm…",
                                elem_id="music-prompt")
            negative = gr.Textbox(label="Negative prompt (diffusion models only)", lines=1, elem_id="music-negative")
            presets = preset_controls(studio, "music")
            seconds = gr.Slider(1, 30, value=defaults.get("seconds", 10), step=0.5, label="Length (seconds)",
                                elem_id="music-seconds")
            cfg = gr.Slider(1.0, 10.0, value=defaults.get("cfg", 3.0), step=0.5, label="Guidance")
            with gr.Accordion("Advanced", open=False):
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature (MusicGen)")
                top_k = gr.Slider(0, 500, value=250, step=10, label="Top-k (MusicGen; 0 = off)")
                steps = gr.Slider(1, 300, value=defaults.get("steps", 100), step=1, elem_id="music-steps",
                                  label="Steps (diffusion models)")
                fmt = gr.Radio(["wav", "flac"], value="wav", label="File format")
                seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="music-generate")
                stop_button(studio, "music")
        with gr.Column(scale=3, min_width=320):
            player, picture, files, status = _result_widgets("music")

    def model_updates(model_id: str) -> dict:
        card = studio.cards.cards.get(model_id or "")
        if card is None:
            return {}
        values = MusicSpec.defaults_for(card)
        cap = float(card.defaults.get("max_seconds", 30))
        return {seconds: gr.update(maximum=cap, value=min(values["seconds"], cap)), cfg: values["cfg"]}

    def read(model_id, prompt_text, negative_text, seconds_v, cfg_v, temperature_v, top_k_v, steps_v, fmt_v,
             seed_v) -> dict:
        """The form as music TaskSpec parameters: sampling settings for token models, steps for diffusion ones."""
        card = studio.cards.cards.get(model_id or "")
        params = {"model": model_id or "", "prompt": prompt_text or "", "negative_prompt": negative_text or "",
                  "seconds": seconds_v, "cfg": cfg_v, "format": fmt_v, "seed": -1 if seed_v is None else seed_v}
        if card is not None and card.library == "transformers":
            params.update(temperature=temperature_v, top_k=int(top_k_v))
        else:
            params["steps"] = steps_v
        return params

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        *form_values, style_key = values
        with Timer() as timer:
            job = run_job(studio, "music", styled(studio, style_key, read(*form_values)), progress, request)
        if job.error:
            gr.Warning(job.error)
        return (*_outputs(job), job_summary(job, timer.seconds))

    inputs = [model, prompt, negative, seconds, cfg, temperature, top_k, steps, fmt, seed]
    form = TabForm(modality="music", tab_id="music", model=model, inputs=inputs, read=read,
                   fields={"prompt": prompt, "negative_prompt": negative, "cfg": cfg,
                           "temperature": temperature, "top_k": top_k, "steps": steps, "format": fmt, "seed": seed},
                   model_updates=model_updates, outputs=inputs,
                   extra_fill=lambda params, model_id: _length_fill(studio, seconds, params, model_id, 30))
    model.input(model_updates, model, [seconds, cfg], api_visibility="private")
    run.click(on_generate, [*inputs, presets.style], [player, picture, files, status], api_name="generate_music",
              **GENERATE)
    wire_presets(studio, form, presets)
    return form
