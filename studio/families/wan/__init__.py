"""Wan 2.1 on diffusers (WanPipeline, WanImageToVideoPipeline, WanVACEPipeline): text-, image- and
video-to-video, and control video with an optional reference image (VACE). Its options are the flow
shift of its UniPC scheduler (VideoX-Fun's 3.0 for 480p; cards set theirs) and step caching (`speed`)."""

from ..registry import Family, register
from ..shared_options import speed, time_shift

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
    builders={"tiny-wan": "studio.zoo.builtin_video:build_tiny_wan",
              "tiny-wan-i2v": "studio.zoo.builtin_video:build_tiny_wan_i2v",
              "tiny-wan-vace": "studio.zoo.builtin_video:build_tiny_wan_vace",
              # One-file snapshots: the tiny Wan DiT as a community GGUF (the tiny-wan-gguf-* cards' transformers).
              "tiny-wan-dit-q8-gguf": "studio.zoo.builtin_gguf:build_tiny_wan_q8",
              "tiny-wan-dit-q4-gguf": "studio.zoo.builtin_gguf:build_tiny_wan_q4"},
))
