"""The Video tab: text-to-video, and the inputs the chosen model takes besides (a start image, an end
frame, an input video to restyle, a control video and reference image, a camera trajectory file), as its
family says. Builds the form
from the card's defaults and turns it into a video TaskSpec; nothing else."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..errors import InvalidInput
from ..services import Studio
from ..tasks.video import VideoSpec
from ..zoo.cards import parse_size
from .common import (card_note, generate, model_header, only_taken, sampling_controls,
                     start_follows_model, stop_button, styled_job, wire_generate)
from .family_controls import FamilyControls
from .lora_controls import LoraControls
from .results import job_summary, reuse_seed_button
from .forms import TabForm, preset_controls, size_text, wire_presets


def _values(studio: Studio, model_id: str | None) -> dict[str, Any]:
    card = studio.cards.cards.get(model_id or "")
    if card is None:
        return {}
    values = VideoSpec.defaults_for(card)
    takes = VideoSpec.takes(card)
    size = f"{values['width']}x{values['height']}"
    return {"card": card, "size": size, "sizes": list(dict.fromkeys([size, *card.resolutions])),
            "negative": card.defaults.get("negative_prompt", ""), "image": "image" in takes,
            "end": "end_image" in takes,
            # A control-video model (Wan2.1-Fun Control) takes a start image too, but does without one.
            "start_label": "Start image (optional)" if takes & {"control_video", "camera"} else "Start image",
            "restyle": "video" in takes, "control": "control_video" in takes,
            "reference": "reference_image" in takes, "scale": "control_scale" in takes,
            "camera": "camera" in takes, "takes": takes, **values}


def build(studio: Studio) -> TabForm:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            model, note, _ = model_header(studio, "video", VideoSpec, "video-model")
            initial = _values(studio, model.value)
            controls = FamilyControls("video", "video", initial.get("card"))
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the shot…", elem_id="video-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1, value=initial.get("negative", ""),
                                  elem_id="video-negative")
            loras = LoraControls(studio, VideoSpec, initial.get("card"), "video")
            presets = preset_controls(studio, "video")
            start = gr.Image(label=initial.get("start_label", "Start image"), type="filepath",
                             visible=initial.get("image", False),
                             elem_id="video-image")
            end = gr.Image(label="End image (the last frame to arrive at; optional)", type="filepath",
                           visible=initial.get("end", False), elem_id="video-end-image")
            camera = gr.File(label="Camera trajectory (a CameraCtrl pose .txt: a header line, then per frame "
                                   "frame_time fx fy cx cy 0 0 and the 3x4 world-to-camera matrix)",
                             file_types=[".txt"], type="filepath", visible=initial.get("camera", False),
                             elem_id="video-camera")
            with gr.Accordion("Restyle a video (video-to-video)", open=False,
                              visible=initial.get("restyle", False)) as restyle:
                source = gr.Video(label="Input video", sources=["upload"], elem_id="video-source")
                strength = gr.Slider(0.05, 1.0, value=initial.get("strength", 0.8), step=0.05,
                                     label="Strength (how much is redrawn)")
            with gr.Group(visible=initial.get("control", False)) as control_group:
                control = gr.Video(label="Control video (motion, pose or depth to follow)", sources=["upload"],
                                   elem_id="video-control")
                reference = gr.Image(label="Reference image (a subject or style to keep)", type="filepath",
                                     elem_id="video-reference", visible=initial.get("reference", False))
                control_scale = gr.Slider(0.0, 2.0, value=initial.get("control_scale", 1.0), step=0.05,
                                          label="Control strength", visible=initial.get("scale", False))
            # The reference image of a camera model (V1.1 Control-Camera with ref_conv), outside the control group.
            reference_cam = gr.Image(label="Reference image (a subject or style to keep; optional)", type="filepath",
                                     elem_id="video-camera-reference",
                                     visible=initial.get("reference", False) and initial.get("camera", False))
            size = gr.Dropdown(initial.get("sizes", []), value=initial.get("size"), label="Size (width x height)",
                               allow_custom_value=True, elem_id="video-size")
            with gr.Row():
                frames = gr.Slider(5, 161, value=initial.get("frames", 81), step=4, label="Frames (4k+1)",
                                   elem_id="video-frames")
                fps = gr.Slider(4, 30, value=initial.get("fps", 16), step=1, label="Frames per second")
            steps, cfg, seed = sampling_controls(initial, "video", controls)
            with gr.Row(elem_classes=["studio-actions"]):
                run = gr.Button("Generate", variant="primary", scale=3, elem_id="video-generate")
                stop_button(studio, "video")
        with gr.Column(scale=3, min_width=320):
            video = gr.Video(label="Result", height=480, elem_id="video-result")
            with gr.Row(equal_height=True):
                status = gr.Markdown(elem_id="video-status")
                reuse_seed_button("video", seed)

    def model_updates(model_id: str) -> dict:
        values = _values(studio, model_id)
        if not values:
            return {}
        return {note: card_note(values["card"]), size: gr.update(choices=values["sizes"], value=values["size"]),
                frames: values["frames"], fps: values["fps"], steps: values["steps"], cfg: values["cfg"],
                start: gr.update(visible=values["image"], label=values["start_label"]),
                end: gr.update(visible=values["end"]),
                negative: values["negative"],
                restyle: gr.update(visible=values["restyle"]), control_group: gr.update(visible=values["control"]),
                reference: gr.update(visible=values["reference"] and values["control"]),
                reference_cam: gr.update(visible=values["reference"] and values["camera"]),
                camera: gr.update(visible=values["camera"]),
                control_scale: gr.update(visible=values["scale"], value=values.get("control_scale", 1.0)),
                **controls.updates(values["card"]), **loras.updates(values["card"])}

    def read(model_id, prompt_text, negative_text, image_path, size_v, frames_v, fps_v, steps_v, cfg_v, seed_v,
             source_video=None, strength_v=0.8, control_video=None, reference_path=None, control_scale_v=1.0,
             end_path=None, camera_path=None, reference_cam_path=None, *rest) -> dict[str, Any]:
        """The form as video TaskSpec parameters; only the inputs the chosen model takes."""
        try:
            width, height = parse_size(size_v or "")
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        card = studio.cards.cards.get(model_id or "")
        *option_values, lora_text = rest or [None]
        params = {"model": model_id or "", "prompt": prompt_text or "", "negative_prompt": negative_text or "",
                  "width": width, "height": height, "frames": frames_v, "fps": fps_v, "steps": steps_v,
                  "cfg": cfg_v, "seed": -1 if seed_v is None else seed_v}
        if card is None:
            return params
        params.update(image=image_path, end_image=end_path, control_video=control_video,
                      reference_image=reference_path or reference_cam_path, control_scale=control_scale_v,
                      camera=camera_path)
        if source_video:
            params.update(video=source_video, strength=strength_v)
        params.update(controls.params(card, list(option_values)))
        params.update(loras.params(card, lora_text))
        return only_taken(VideoSpec, card, params)

    def on_generate(request: gr.Request, *values, progress=gr.Progress()):
        *form_values, style_key = values
        try:
            params = styled_job(studio, VideoSpec, style_key, read(*form_values))
        except InvalidInput as err:
            return None, f"❌ {err}"
        return generate(studio, "video", params, progress, request, present)

    def present(job: Any, seconds: float) -> tuple:
        return next((str(o.path) for o in job.outputs if o.kind == "video"), None), job_summary(job, seconds)

    model_updates = start_follows_model(studio, run, model, model_updates)
    model_outputs = [note, run, size, frames, fps, steps, cfg, start, end, negative, restyle, control_group,
                     reference, control_scale, camera, reference_cam, *controls.outputs, *loras.outputs]
    inputs = [model, prompt, negative, start, size, frames, fps, steps, cfg, seed, source, strength, control,
              reference, control_scale, end, camera, reference_cam, *controls.components, *loras.components]
    # Input files (start image, clips) are not refilled: a past job's uploads may be gone, so they are picked again.
    form = TabForm(modality="video", tab_id="video", model=model, inputs=inputs, read=read,
                   fields={"prompt": prompt, "negative_prompt": negative, "frames": frames, "fps": fps, "steps": steps,
                           "cfg": cfg, "seed": seed, "strength": strength, "control_scale": control_scale,
                           **controls.widgets, "loras": loras.text},
                   model_updates=model_updates, extra_fill=lambda params, _model: {size: size_text(params)}
                   if size_text(params) else {}, outputs=[model, prompt, seed, strength, *model_outputs])
    model.input(model_updates, model, model_outputs, api_visibility="private")
    wire_generate(run, on_generate, [*inputs, presets.style], [video, status])
    wire_presets(studio, form, presets)
    form.present = present
    form.results = [video, status]
    return form
