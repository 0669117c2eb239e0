"""Wan 2.1 on diffusers (WanPipeline, WanImageToVideoPipeline, WanVACEPipeline): text-, image- and
video-to-video, and control video with an optional reference image (VACE). Also VideoX-Fun's own
Wan2.1-Fun checkpoints in their original layout (studio.engines.wan_fun): InP (start and end frame)
and Control (a control clip, optionally from a start image; V1.1's reference image), with the umT5,
VAE and CLIP components as cards they require. Its option is the flow shift of the scheduler
(VideoX-Fun's 3.0 for 480p on UniPC; the Fun cards' Euler sampler uses 5; cards set theirs)."""

from ..registry import Family, register
from ..shared_options import time_shift

ENGINE = "studio.engines.wan_fun"

FAMILY = register(Family(
    name="wan",
    title="Wan 2.1",
    aliases=("wan2.1",),
    tasks=("video",),
    options=(
        time_shift(None, "the scheduler's flow shift"),
    ),
    defaults={"control_scale": 1.0},
    run="studio.families.wan.run:run",
    takes="studio.families.wan.run:takes",
    load=f"{ENGINE}.load:load_wan_fun",
    check_card=f"{ENGINE}.options:check_card",
    needed_files=f"{ENGINE}.options:needed_files",
    builders={"tiny-wan": "studio.zoo.builtin_video:build_tiny_wan",
              "tiny-wan-i2v": "studio.zoo.builtin_video:build_tiny_wan_i2v",
              "tiny-wan-vace": "studio.zoo.builtin_video:build_tiny_wan_vace",
              "tiny-wan-fun-inp": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_inp",
              "tiny-wan-fun-control": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_control",
              "tiny-wan-fun-control-ref": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_control_ref",
              "tiny-wan-fun-text-vae": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_text_vae",
              "tiny-wan-fun-clip": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_clip"},
))
