"""Any diffusers text-to-image or text-to-video pipeline the user adds from the Models tab (a repo's
`model_index.json` names its class), and any diffusers card whose `family:` names no registered
family: called with the task's common fields through the pipeline's own loop and scheduler. Cards
written before this family had its name say `family: user`."""

from ..registry import Family, register
from ..shared_options import time_shift

FAMILY = register(Family(
    name="diffusers",
    title="Diffusers pipeline",
    aliases=("user",),
    tasks=("image", "video"),
    options=(
        time_shift(None, "a flow-matching scheduler's time shift; unset keeps the scheduler's own"),
    ),
    unused={"loras": "LoRAs load into the families whose key layouts the studio checks (Lumina-Image 2.0, "
                     "Lumina-Next, Wan 2.1, CogVideoX), not into any diffusers pipeline"},
    run="studio.families.diffusers.run:run",
))
