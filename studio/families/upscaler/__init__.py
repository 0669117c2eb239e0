"""Upscalers: ESRGAN and Real-ESRGAN (RRDBNet) models that make an image bigger (the `upscale` task).

A card names its weights file and the model's native scale (`engine: {weights, scale}`,
studio.engines.esrgan.options). Loading goes through spandrel when it is installed (the `upscale`
extra: it also reads SwinIR, HAT, DAT… but needs a torchvision that matches torch), else through the
studio's own RRDBNet (studio.engines.esrgan.rrdbnet), which reads the official Real-ESRGAN release,
the original ESRGAN layout and safetensors repackagings. A step of progress is a tile.
"""

from ..registry import Family, register

FAMILY = register(Family(
    name="upscaler",
    title="Upscaler (ESRGAN)",
    tasks=("upscale",),
    unused={"negative_prompt": "an upscaler follows no prompt"},
    run="studio.families.upscaler.run:run",
    load="studio.families.upscaler.run:load",
    check_card="studio.engines.esrgan.options:engine_options",
    needed_files="studio.engines.esrgan.options:needed_files",
    builders={"tiny-esrgan": "studio.zoo.builtin_esrgan:build_tiny_esrgan"},
    step_unit="tiles",
))
