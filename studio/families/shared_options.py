"""Options several families declare alike: one definition of their bounds, look and infotext key,
each family giving its own default and words."""

from __future__ import annotations

from .registry import Option

# The Image task's editing fields (tasks/image.py: img2img, inpainting, outpainting, hires fix) a flow family
# takes by listing them in `Family.inputs`.
IMAGE_EDITING = ("image", "strength", "mask", "mask_blur", "inpaint_area", "mask_padding", "outpaint_left",
                 "outpaint_top", "outpaint_right", "outpaint_bottom", "hires_scale", "hires_strength", "hires_steps")


def time_shift(default: float | None, help: str) -> Option:
    """The flow-matching time shift (s > 1 spends more steps near the noise end). None as the default
    keeps the scheduler's own, unless the card sets one."""
    return Option("shift", float, default, label="Time shift", minimum=0, above_minimum=True, maximum=100,
                  widget="slider", slider=(1.0, 20.0), step=0.5, infotext="Shift", advanced=True, help=help)


def speed(help: str, tasks: tuple[str, ...] = ()) -> Option:
    """Step caching for the job (studio/runtime/step_cache.py holds each method's settings): off runs every
    step in full, exactly as without caching; balanced and fast reuse transformer work between steps,
    fast more of it. The family's `help` names its method; `tasks` those of its tasks that cache."""
    return Option("speed", str, "off", label="Speed", choices=(("Off", "off"), ("Balanced", "balanced"),
                                                               ("Fast", "fast")),
                  widget="radio", infotext="Speed", advanced=True, group="Speed", help=help, tasks=tasks)
