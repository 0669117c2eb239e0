"""Where a flow starts for image editing, and the masked blend at every step (image to image, inpainting).

Lumina's convention: t runs from 0 (noise) to 1 (data), x_t = t x_data + (1 - t) noise. As Lumina-Next's own
img2img (lumina_next_t2i_mini/sample_img2img.py and its ODE's `strength`): of the family's grid of N time
points, the first int(N (1 - strength)) are skipped; the state starts at the first point left, t0, as
t0 x1 + (1 - t0) z (x1: the start image's VAE latents, z: the job's noise, the same noise text to image
draws), and the family's solver runs the rest of its own grid. Strength 1 skips nothing: text to image,
bit for bit. Inpainting (RePaint-style, as A1111 and diffusers' inpaint pipelines blend): after every
solver step the known region (latent mask 0) is put back on its path, t x1 + (1 - t) z at the step's time,
so the model sees it as it would at that time and only the masked region is redrawn.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import InvalidInput

StepBlend = Callable[[torch.Tensor, float], torch.Tensor]  # (x at time t, t) -> x


def start_index(points: int, strength: float) -> int:
    """The first grid point an edit of `strength` starts from (Lumina-Next's img2img: int(N (1 - s)))."""
    return int(points * (1 - strength)) if strength != 1.0 else 0


def refuse_no_step(points_left: int, strength: float, steps: int) -> None:
    """InvalidInput when an edit's strength leaves fewer than two time points (no solver step)."""
    if points_left < 2:
        raise InvalidInput(f"strength {strength:g} of {steps} steps leaves no step to redraw the image: raise the "
                           "strength or the steps")


def pixels(images: list, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """PIL RGB pictures as a (B, 3, H, W) batch in [-1, 1], as the VAEs take them."""
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).to(device, dtype)


def latent_mask(mask, height: int, width: int, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The pixel mask (L, 255 = repaint) at the latent size, rounded to 0 / 1 as A1111 rounds its latent mask."""
    from PIL import Image

    small = np.asarray(mask.convert("L").resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(np.round(small))[None, None].to(device, dtype)


def start_state(noise: torch.Tensor, x1: torch.Tensor, t0: float) -> torch.Tensor:
    """The reference's start, z (1 - t0) + x1 t0 (its order of operations)."""
    return noise * (1 - t0) + x1 * t0


def masked_blend(noise: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor) -> StepBlend:
    """After a step to time t: the masked region as sampled, the rest back on its path t x1 + (1 - t) z."""
    keep = 1 - mask

    def blend(x: torch.Tensor, t: float) -> torch.Tensor:
        return x * mask + start_state(noise, x1, t).to(x.dtype) * keep

    return blend


def edit_start(noise: torch.Tensor, x1: torch.Tensor, grid: list[float], strength: float, steps: int,
               mask: torch.Tensor | None) -> tuple[torch.Tensor, int, StepBlend | None]:
    """(first state, grid index to start from, blend after each step or None) for an edit on `grid`."""
    index = start_index(len(grid), strength)
    refuse_no_step(len(grid) - index, strength, steps)
    x1 = x1.expand_as(noise).to(noise.dtype)
    state = noise if index == 0 else start_state(noise, x1, grid[index]).to(noise.dtype)
    return state, index, (masked_blend(noise, x1, mask) if mask is not None else None)
