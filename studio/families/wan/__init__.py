"""Wan 2.1 on diffusers (WanPipeline, WanImageToVideoPipeline, WanVACEPipeline): text-, image- and
video-to-video, and control video with an optional reference image (VACE). Also VideoX-Fun's own
Wan2.1-Fun checkpoints in their original layout (studio.engines.wan_fun): InP (start and end frame)
and Control (a control clip, optionally from a start image; V1.1's reference image), V1.1 Control-Camera
(a camera trajectory file, optionally from a start image), with the umT5,
VAE and CLIP components as cards they require. Its options are the flow shift of the scheduler
(VideoX-Fun's 3.0 for 480p on UniPC; the Fun cards' Euler sampler uses 5; cards set theirs) and step
caching (`speed`, text- and image-to-video only)."""

from ..registry import Family, register
from ..shared_options import speed, time_shift

ENGINE = "studio.engines.wan_fun"

FAMILY = register(Family(
    name="wan",
    title="Wan 2.1",
    aliases=("wan2.1",),
    tasks=("video",),
    options=(
        time_shift(None, "the scheduler's flow shift"),
        speed("step caching by First Block Cache: balanced skips a step's later blocks while the first block's "
              "output moved < 5% since the last full pass, fast < 10%. Not for video-to-video or VACE"),
    ),
    defaults={"control_scale": 1.0},
    run="studio.families.wan.run:run",
    prepare="studio.families.wan.run:prepare",
    takes="studio.families.wan.run:takes",
    load=f"{ENGINE}.load:load_wan_fun",
    check_card=f"{ENGINE}.options:check_card",
    needed_files=f"{ENGINE}.options:needed_files",
    builders={"tiny-wan": "studio.zoo.builtin_video:build_tiny_wan",
              "tiny-wan-i2v": "studio.zoo.builtin_video:build_tiny_wan_i2v",
              "tiny-wan-vace": "studio.zoo.builtin_video:build_tiny_wan_vace",
              # One-file snapshots: the tiny Wan DiT as a community GGUF (the tiny-wan-gguf-* cards' transformers).
              "tiny-wan-dit-q8-gguf": "studio.zoo.builtin_gguf:build_tiny_wan_q8",
              "tiny-wan-dit-q4-gguf": "studio.zoo.builtin_gguf:build_tiny_wan_q4",
              "tiny-wan-fun-inp": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_inp",
              "tiny-wan-fun-control": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_control",
              "tiny-wan-fun-control-ref": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_control_ref",
              "tiny-wan-fun-camera": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_camera",
              "tiny-wan-fun-text-vae": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_text_vae",
              "tiny-wan-fun-clip": "studio.zoo.builtin_wan_fun:build_tiny_wan_fun_clip"},
))
