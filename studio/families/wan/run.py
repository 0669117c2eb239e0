"""Running a Wan 2.1 job: which inputs each of its pipelines takes, the call that feeds them, and its
step caching (First Block Cache, for text- and image-to-video only)."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidInput
from ...runtime.step_cache import step_cache
from ...tasks.base import StepCallback, TaskOutput
from ...tasks.video import load_input_image, load_input_video, run_diffusers_video

TEXT, IMAGE, VACE = "WanPipeline", "WanImageToVideoPipeline", "WanVACEPipeline"
# VideoX-Fun's Wan2.1-Fun checkpoints (studio.engines.wan_fun.options; named here without importing it).
FUN_INPAINT, FUN_CONTROL, FUN_CAMERA = "wan-fun-inp", "wan-fun-control", "wan-fun-camera"


def takes(card: Any, task: str) -> list[str]:
    fields = ["negative_prompt", "shift", "loras", *(["speed"] if card.pipeline in (TEXT, IMAGE) else [])]
    if card.pipeline in (IMAGE, FUN_INPAINT, FUN_CONTROL, FUN_CAMERA):
        fields.append("image")  # Fun Control and Control-Camera: optional, the clip's first frame
    if card.pipeline == FUN_INPAINT:
        fields.append("end_image")
    if card.pipeline == FUN_CONTROL:
        fields.append("control_video")
    if card.pipeline == FUN_CAMERA:
        fields.append("camera")  # V1.1 Control-Camera's trajectory file
    if card.pipeline in (FUN_CONTROL, FUN_CAMERA) and card.engine.get("reference_image"):  # V1.1's ref_conv
        fields.append("reference_image")
    if card.pipeline == VACE:
        fields += ["control_video", "reference_image", "control_scale"]
    if card.pipeline == TEXT and "strength" in card.defaults:
        # Video-to-video runs on the text-to-video weights (WanVideoToVideoPipeline); the card's
        # strength default says it is offered.
        fields += ["video", "strength"]
    return fields


def prepare(card: Any, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Refuse step caching, before the job is queued, where First Block Cache would be wrong or cannot run
    (speed off on VACE, which offers no speed, is what it does anyway: dropped, not refused)."""
    if card.pipeline == VACE and params.get("speed") == "off":
        params = {k: v for k, v in params.items() if k != "speed"}
    if params.get("speed") not in (None, "off"):
        if card.pipeline == VACE:
            raise InvalidInput(f"speed: {card.title} cannot cache steps (VACE adds its control hints between the "
                               "blocks First Block Cache skips); use speed off")
        if params.get("video"):
            raise InvalidInput("speed: video-to-video cannot cache steps (diffusers' WanVideoToVideoPipeline does "
                               "not tell the cache its conditional and unconditional passes apart); use speed off")
    return params


def run(task: str, pipeline: Any, spec: Any, card: Any, on_step: StepCallback) -> TaskOutput:
    shift = spec.option("shift")
    if shift is not None:
        # Wan's UniPC calls it flow_shift, the Fun cards' FlowMatchEuler shift; the scheduler is
        # rebuilt per job so it never leaks.
        config = pipeline.scheduler.config
        key = "flow_shift" if "flow_shift" in config else "shift" if "shift" in config else None
        if key:
            pipeline.scheduler = type(pipeline.scheduler).from_config(config, **{key: shift})
    inputs: dict[str, Any] = {}
    num_frames = True
    if card.pipeline in (IMAGE, FUN_INPAINT) or (card.pipeline in (FUN_CONTROL, FUN_CAMERA) and spec.image):
        inputs["image"] = load_input_image(spec.image, card)
    if card.pipeline == FUN_INPAINT and spec.end_image:
        inputs["last_image"] = load_input_image(spec.end_image, card, "end image")
    if spec.video:
        from diffusers import WanVideoToVideoPipeline

        # The same loaded components under the video-to-video pipeline: nothing is loaded twice.
        pipeline = WanVideoToVideoPipeline.from_pipe(pipeline)
        inputs["video"] = load_input_video(spec.video, spec.frames, spec.width, spec.height, card)
        inputs["strength"] = spec.strength
        num_frames = False  # its length is the input clip's
    if card.pipeline == FUN_CONTROL:
        inputs["control_video"] = load_input_video(spec.control_video, spec.frames, spec.width, spec.height, card)
    if card.pipeline == FUN_CAMERA:
        from ...engines.wan_fun.trajectory import camera_latents

        inputs["control_camera"] = camera_latents(spec.camera, spec.frames, spec.width, spec.height)
    if card.pipeline in (FUN_CONTROL, FUN_CAMERA):
        if spec.reference_image:
            inputs["reference_image"] = load_input_image(spec.reference_image, card, "reference image")
    if card.pipeline == VACE:
        inputs["video"] = load_input_video(spec.control_video, spec.frames, spec.width, spec.height, card)
        inputs["conditioning_scale"] = spec.control_scale
        if spec.reference_image:
            inputs["reference_images"] = [load_input_image(spec.reference_image, card)]
    used: dict[str, Any] = {}
    with step_cache(pipeline, spec.option("speed"), "first_block", used):
        output = run_diffusers_video(pipeline, spec, on_step, inputs, num_frames=num_frames)
    return TaskOutput(items=output.items, used={**output.used, **used})
