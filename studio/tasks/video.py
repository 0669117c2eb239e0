"""Video from text, from a start image, from an input video (restyled) or following a control video.

Which inputs a model takes (start image, end frame, input video and strength, control video, reference image,
camera trajectory)
its family says from the card (studio.families: Wan 2.1, CogVideoX); the task checks and loads them.
Frame counts are 4k+1 (the VAEs compress time 4x around a first frame; CogVideoX 1.0 needs 8k+1,
the card's `frame_step`); anything else is refused with the nearest counts. Outputs: the MP4 (H.264,
job JSON in its metadata), its poster frame, and, for image- and video-to-video, the input image
(or the input video's first frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from ..errors import InvalidInput, MediaError
from ..media import SavedFile, check_pixels, format_infotext, output_relpath
from ..media_av import poster_frame, save_mp4
from ..runtime import preview
from ..zoo.cards import ModelCard
from .loras import Loras, prompt_tags
from .inputs import input_pixel_limit, load_input_image  # noqa: F401 (re-exported for the families)
from .base import (JobContext, StepCallback, TaskOutput, TaskSpec, family_lines, job_json, png_writer, run_family,
                   save_all)

MAX_FRAMES = 257


def load_input_video(path: str | None, frames: int, width: int, height: int, card: ModelCard) -> list[Image.Image]:
    """The first `frames` frames of the uploaded video at the job's size, or a clear error."""
    import imageio_ffmpeg

    if not path or not Path(path).is_file():
        raise InvalidInput("the input video is missing (upload it again)")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        w, h = meta["size"]
        check_pixels(w, h, input_pixel_limit(card), f"a frame of {Path(path).name!r}")  # before any frame is decoded
        clip = []
        for raw in reader:
            clip.append(Image.frombytes("RGB", (w, h), raw).resize((width, height), Image.BICUBIC))
            if len(clip) == frames:
                break
    except MediaError as err:
        raise InvalidInput(str(err)) from None
    except Exception:
        raise InvalidInput(f"{Path(path).name!r} is not a video the studio can read (use MP4, WebM or MOV)") from None
    if len(clip) < frames:
        raise InvalidInput(f"the input video has {len(clip)} frames; this job needs {frames}")
    return clip


class VideoSpec(TaskSpec):
    task: ClassVar[str] = "video"
    # VideoX-Fun's defaults for Wan 1.3B; cards override (CogVideoX: 720x480, 49 frames, 8 fps).
    FALLBACKS: ClassVar[dict[str, Any]] = {"width": 832, "height": 480, "frames": 81, "fps": 16, "steps": 50,
                                           "cfg": 6.0}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "image", "end_image", "video", "strength",
                                           "control_video", "reference_image", "control_scale", "camera", "loras")
    INPUTS: ClassVar[tuple[str, ...]] = ("image", "end_image", "video", "strength", "control_video",
                                         "reference_image", "control_scale", "camera", "loras")
    NEEDS: ClassVar[tuple[str, ...]] = ("image", "control_video", "camera")
    FILES: ClassVar[tuple[str, ...]] = ("image", "end_image", "video", "control_video", "reference_image", "camera")
    REFUSALS: ClassVar[dict[str, str]] = {
        "image": "{title} makes videos from text only; pick an image-to-video model for a start image",
        "end_image": "{title} takes no end frame; pick a model that does (Wan2.1-Fun InP)",
        "video": "{title} cannot restyle an input video; pick a model that does (video-to-video)",
        "strength": "{title} cannot restyle an input video, so it takes no strength",
        "control_video": "{title} takes no control video; pick a control-video model",
        "reference_image": "{title} takes no reference image",
        "control_scale": "{title} takes no control strength",
        "camera": "{title} takes no camera trajectory; pick a camera-control model (Wan2.1-Fun Control-Camera)",
    }

    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    frames: int | None = Field(default=None, ge=1, le=MAX_FRAMES)
    fps: int | None = Field(default=None, ge=1, le=60)
    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    image: str | None = None  # start image for image-to-video models: a local file path
    end_image: str | None = None  # last frame to arrive at (Wan2.1-Fun InP): a local file path
    video: str | None = None  # input video for video-to-video: a local file path
    strength: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)  # how much of it is redrawn
    control_video: str | None = None  # control clip for VACE / CogVideoX-Fun control: a local file path
    reference_image: str | None = None  # VACE only: a subject or style to keep
    control_scale: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)  # VACE's conditioning
    camera: str | None = None  # camera trajectory (Wan2.1-Fun Control-Camera): a CameraCtrl pose .txt path
    loras: Loras = None  # [{"name", "weight"}]: LoRA adapters loaded for this job only (tasks/loras.py)

    def check_against(self, card: ModelCard) -> None:
        problem = card.size_problem(self.width, self.height)
        if problem:
            raise InvalidInput(f"Size {self.width}x{self.height} is not possible: {problem}")
        step = int(card.defaults.get("frame_step", 4))  # the VAE's time compression (CogVideoX 1.0: 8)
        if (self.frames - 1) % step:
            lower = self.frames - (self.frames - 1) % step
            raise InvalidInput(f"frames must be {step}k+1 for {card.title}'s video VAE (e.g. {lower} or "
                               f"{lower + step}), got {self.frames}")
        cap = int(card.defaults.get("max_frames", MAX_FRAMES))
        if self.frames > cap:
            raise InvalidInput(f"{card.title} makes at most {cap} frames, got {self.frames}")
        takes = self.takes(card)
        # An image-to-video model needs its start image; for a control-video model (Wan2.1-Fun
        # Control) it is optional, the clip's first frame when given.
        if "image" in takes and (self.image or not takes & {"control_video", "camera"}):
            load_input_image(self.image, card)
        if self.end_image:
            load_input_image(self.end_image, card, "end image")
        if "control_video" in takes:
            if not self.control_video:
                raise InvalidInput(f"{card.title} follows a control video (motion, pose, depth): add one")
            load_input_video(self.control_video, self.frames, self.width, self.height, card)
            if self.reference_image:
                load_input_image(self.reference_image, card)
        if "camera" in takes:
            from ..engines.wan_fun.trajectory import read_camera_file

            read_camera_file(self.camera, self.frames)
            if self.reference_image:
                load_input_image(self.reference_image, card)
        if self.video:
            load_input_video(self.video, self.frames, self.width, self.height, card)
            if int(self.steps * self.strength) < 1:
                raise InvalidInput(f"strength {self.strength:g} of {self.steps} steps leaves no step to redraw the "
                                   "video: raise the steps or the strength")


class VideoTask:
    name = "video"
    spec_type = VideoSpec

    def working_bytes(self, spec: VideoSpec, card: ModelCard) -> int:
        megapixels = spec.width * spec.height * spec.frames / 2**20 / 16  # latents: 4x fewer frames, 8x8 px
        return int(card.working_gb_per_mpx * megapixels * 2**30)

    def run(self, pipeline: Any, spec: VideoSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        return run_family(self.name, pipeline, spec, card, on_step)

    def save(self, output: TaskOutput, spec: VideoSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        frames, start_image = output.items
        infotext = format_infotext(prompt_tags(spec.prompt, spec.loras), spec.negative_prompt, {
            "Steps": spec.steps, "Sampler": output.used["sampler"], "CFG scale": spec.cfg, "Seed": spec.seed,
            "Size": f"{spec.width}x{spec.height}", "Frames": spec.frames, "FPS": spec.fps, "Model": card.id,
            **family_lines(self.name, spec, card), **(output.used.get("infotext") or {})})

        def path(index: int, ext: str) -> str:
            return output_relpath(self.name, ctx.job_id, index, ext, ctx.created_at)

        def meta(index: int) -> dict:
            return job_json(self.name, index, spec, card, ctx, output.used)

        writers = [
            lambda i: save_mp4(frames, ctx.outputs_dir, path(i, "mp4"), fps=spec.fps, title=spec.prompt, job=meta(i)),
            png_writer(self.name, poster_frame(frames), spec, card, ctx, output.used, infotext, kind="poster"),
        ]
        if start_image is not None:
            writers.append(png_writer(self.name, start_image, spec, card, ctx, output.used, infotext, kind="input"))
        return save_all(writers)


def run_diffusers_video(pipeline: Any, spec: VideoSpec, on_step: StepCallback, inputs: dict[str, Any],
                        num_frames: bool = True) -> TaskOutput:
    """A diffusers video pipeline's own call with the job's fields and the family's `inputs` (start
    image, clips…); `num_frames` False for pipelines that take their length from an input clip.
    The items are the frames (uint8) and the picture to keep beside them (start image or first input frame)."""
    vae = getattr(pipeline, "vae", None)
    channels_dim = 2 if type(vae).__name__ == "AutoencoderKLCogVideoX" else 1  # CogVideoX's are (B, F, C, H, W)

    def step_end(_pipe: Any, index: int, _t: Any, tensors: dict) -> dict:
        on_step(index + 1, spec.steps)
        preview.offer(index + 1, spec.steps, tensors["latents"], vae, channels_dim)  # the state x_t
        return tensors

    if vae is not None and hasattr(vae, "enable_tiling") and spec.width * spec.height >= 1280 * 720:
        vae.enable_tiling()  # a 720p decode is where video VAEs run out of memory first
    kwargs = dict(inputs)
    if num_frames:
        kwargs["num_frames"] = spec.frames
    result = pipeline(prompt=spec.prompt, negative_prompt=spec.negative_prompt, width=spec.width,
                      height=spec.height, num_inference_steps=spec.steps, guidance_scale=spec.cfg,
                      generator=torch.Generator(device="cpu").manual_seed(spec.seed), output_type="np",
                      callback_on_step_end=step_end, **kwargs)
    frames = (np.clip(np.asarray(result.frames[0]), 0, 1) * 255).round().astype(np.uint8)
    clip_in = inputs.get("video") or inputs.get("control_video")
    start = inputs.get("image") or (clip_in[0] if clip_in else None)
    return TaskOutput(items=[frames, start], used={"sampler": type(pipeline.scheduler).__name__})
