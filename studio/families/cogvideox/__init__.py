"""CogVideoX on diffusers (CogVideoXPipeline, CogVideoXImageToVideoPipeline, and VideoX-Fun's
CogVideoXFunControlPipeline): a v-prediction DDIM/DPM model, so no flow shift; text- and
image-to-video, and pose/depth/canny control video for the Fun control checkpoints. Its one option
is step caching (`speed`)."""

from ..registry import Family, register
from ..shared_options import speed

FAMILY = register(Family(
    name="cogvideox",
    title="CogVideoX",
    aliases=("cogvideox-fun",),
    tasks=("video",),
    options=(
        speed("step caching by TaylorSeer (lite): after 3 full steps, balanced runs the blocks every 2nd step, "
              "fast every 3rd, the output extrapolated in between"),
    ),
    run="studio.families.cogvideox.run:run",
    takes="studio.families.cogvideox.run:takes",
    builders={"tiny-cogvideox": "studio.zoo.builtin_video:build_tiny_cogvideox",
              "tiny-cogvideox-i2v": "studio.zoo.builtin_video:build_tiny_cogvideox_i2v",
              "tiny-cogvideox-fun-control": "studio.zoo.builtin_video:build_tiny_cogvideox_fun_control"},
))
