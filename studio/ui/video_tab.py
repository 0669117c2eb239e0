"""The Video tab: text-to-video, or image-to-video when the model takes a start image. Builds the
form from the card's defaults and turns it into a video TaskSpec; nothing else."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..errors import InvalidInput
from ..services import Studio
from ..tasks.video import VideoSpec, takes_control, takes_image, takes_video
from ..zoo.cards import parse_size
from .common import GENERATE, Timer, job_summary, model_header, run_job, sampling_controls, stop_button
from .forms import TabForm, preset_controls, size_text, styled, wire_presets


def _values(studio: Studio, model_id: str | None) -> dict[str, Any]:
    card = studio.cards.cards.get(model_id or "")
    if card is None:
        return {}
    values = VideoSpec.defaults_for(card)
    size = f"{values['width']}x{values['height']}"
    return {"card": card, "size": size, "sizes": list(dict.fromkeys([size, *card.resolutions])),
            "negative": card.defaults.get("negative_prompt", ""), "image": takes_image(card),
            "restyle": takes_video(card), "control": takes_control(card), **values}


def build(studio: Studio) -> TabForm:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, _ = model_header(studio, "video", VideoSpec, "video-model",
                                    plain=lambda card: not (takes_image(card) or takes_control(card)))
            initial = _values(studio, model.value)
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the shot…", elem_id="video-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1, value=initial.get("negative", ""),
                                  elem_id="video-negative")
            presets = preset_controls(studio, "video")
            start = gr.Image(label="Start image", type="filepath", visible=initial.get("image", False),
                             elem_id="video-image")
            with gr.Accordion("Restyle a video (video-to-video)", open=False,
                              visible=initial.get("restyle", False)) as restyle:
                source = gr.Video(label="Input video", sources=["upload"], elem_id="video-source")
                strength = gr.Slider(0.05, 1.0, value=initial.get("strength", 0.8), step=0.05,
                                     label="Strength (how much is redrawn)")
            with gr.Group(visible=initial.get("control", False)) as control_group:
                control = gr.Video(label="Control video (motion, pose or depth to follow)", sources=["upload"],
                                   elem_id="video-control")
                reference = gr.Image(label="Reference image (Wan VACE: a subject or style to keep)",
                                     type="filepath", elem_id="video-reference")
                control_scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control strength (Wan VACE)")
            size = gr.Dropdown(initial.get("sizes", []), value=initial.get("size"), label="Size (width x height)",
                               allow_custom_value=True, elem_id="video-size")
            with gr.Row():
                frames = gr.Slider(5, 161, value=initial.get("frames", 81), step=4, label="Frames (4k+1)",
                                   elem_id="video-frames")
                fps = gr.Slider(4, 30, value=initial.get("fps", 16), step=1, label="Frames per second")
            steps, cfg, shift, seed = sampling_controls(initial, "video")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="video-generate")
                stop_button(studio, "video")
        with gr.Column(scale=3, min_width=320):
            video = gr.Video(label="Result", height=480, elem_id="video-result")
            status = gr.Markdown(elem_id="video-status")

    def model_updates(model_id: str) -> dict:
        values = _values(studio, model_id)
        if not values:
            return {}
        return {size: gr.update(choices=values["sizes"], value=values["size"]), frames: values["frames"],
                fps: values["fps"], steps: values["steps"], cfg: values["cfg"],
                shift: gr.update(value=values.get("shift") or 4.0), start: gr.update(visible=values["image"]),
                negative: values["negative"], restyle: gr.update(visible=values["restyle"]),
                control_group: gr.update(visible=values["control"])}

    def read(model_id, prompt_text, negative_text, image_path, size_v, frames_v, fps_v, steps_v, cfg_v, shift_v,
             seed_v, source_video=None, strength_v=0.8, control_video=None, reference_path=None,
             control_scale_v=1.0) -> dict[str, Any]:
        """The form as video TaskSpec parameters; only the inputs the chosen model takes."""
        try:
            width, height = parse_size(size_v or "")
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        card = studio.cards.cards.get(model_id or "")
        params = {"model": model_id or "", "prompt": prompt_text or "", "negative_prompt": negative_text or "",
                  "width": width, "height": height, "frames": frames_v, "fps": fps_v, "steps": steps_v,
                  "cfg": cfg_v, "seed": -1 if seed_v is None else seed_v}
        if card is not None and "shift" in VideoSpec.defaults_for(card):
            params["shift"] = shift_v
        if card is not None and takes_image(card):
            params["image"] = image_path
        if card is not None and takes_video(card) and source_video:
            params.update(video=source_video, strength=strength_v)
        if card is not None and takes_control(card):
            params["control_video"] = control_video
            if card.pipeline == "WanVACEPipeline":
                params.update(reference_image=reference_path, control_scale=control_scale_v)
        return params

    # The file inputs keep their None defaults here: API clients may leave them out.
    def on_generate(model_id, prompt_text, negative_text, image_path, size_v, frames_v, fps_v, steps_v, cfg_v,
                    shift_v, seed_v, source_video=None, strength_v=0.8, control_video=None, reference_path=None,
                    control_scale_v=1.0, style_key=None, progress=gr.Progress(), request: gr.Request = None):
        try:
            params = styled(studio, style_key, read(model_id, prompt_text, negative_text, image_path, size_v,
                                                    frames_v, fps_v, steps_v, cfg_v, shift_v, seed_v, source_video,
                                                    strength_v, control_video, reference_path, control_scale_v))
        except InvalidInput as err:
            return None, f"❌ {err}"
        with Timer() as timer:
            job = run_job(studio, "video", params, progress, request)
        if job.error:
            gr.Warning(job.error)
        clip = next((str(o.path) for o in job.outputs if o.kind == "video"), None)
        return clip, job_summary(job, timer.seconds)

    model_outputs = [size, frames, fps, steps, cfg, shift, start, negative, restyle, control_group]
    inputs = [model, prompt, negative, start, size, frames, fps, steps, cfg, shift, seed, source, strength, control,
              reference, control_scale]
    # Input files (start image, clips) are not refilled: a past job's uploads may be gone, so they are picked again.
    form = TabForm(modality="video", tab_id="video", model=model, inputs=inputs, read=read,
                   fields={"prompt": prompt, "negative_prompt": negative, "frames": frames, "fps": fps, "steps": steps,
                           "cfg": cfg, "shift": shift, "seed": seed, "strength": strength,
                           "control_scale": control_scale},
                   model_updates=model_updates, extra_fill=lambda params, _model: {size: size_text(params)}
                   if size_text(params) else {}, outputs=[model, prompt, seed, strength, control_scale, *model_outputs])
    model.input(model_updates, model, model_outputs, api_visibility="private")
    run.click(on_generate, [*inputs, presets.style], [video, status], api_name="generate_video", **GENERATE)
    wire_presets(studio, form, presets)
    return form
