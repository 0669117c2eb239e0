"""Running an upscaler over an image in tiles, so its memory is bounded by the tile, not the image.

The image is cut into a grid of `tile` x `tile` input pixels; each tile runs with `overlap` more pixels
of real image around it (clamped at the borders, where the network pads with zeros as it does on the
whole image), and only its own part of the output is kept. When `overlap` reaches the network's
receptive radius (RRDBConfig.receptive_radius) a tile's kept pixels see exactly what they would in the
whole image, so tiled and untiled outputs agree to float rounding; Real-ESRGAN's own default pad is 10,
ours is the task's `tile_overlap`. An image whose sides are not multiples of the network's fold (a
pixel_unshuffle model) is reflect-padded to one first and the output cropped back, as BasicSR does.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_grid(width: int, height: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each tile in reading order; `tile` 0 or past the image: the whole image."""
    if tile <= 0:
        return [(0, 0, width, height)]
    return [(x, y, min(x + tile, width), min(y + tile, height))
            for y in range(0, height, tile) for x in range(0, width, tile)]


def tile_count(width: int, height: int, tile: int) -> int:
    return len(tile_grid(width, height, tile))


@torch.inference_mode()
def upscale(forward: Forward, image: Image.Image, scale: int, *, tile: int, overlap: int, fold: int = 1,
            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
            on_tile: Callable[[int, int], None] = lambda done, total: None) -> Image.Image:
    """`image` (RGB) through `forward` (a (1, 3, h, w) [0, 1] tensor -> (1, 3, h*scale, w*scale)), tile by
    tile; `on_tile(done, total)` after each. Each tile's output is rounded to bytes as it is pasted."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    height, width = pixels.shape[-2:]
    padded_h, padded_w = _round_up(height, fold), _round_up(width, fold)
    if (padded_h, padded_w) != (height, width):
        # Reflect, as Real-ESRGAN pads to the fold; a side too short to reflect repeats its edge instead.
        short = min(height, width) <= max(padded_h - height, padded_w - width)
        pixels = F.pad(pixels, (0, padded_w - width, 0, padded_h - height), mode="replicate" if short else "reflect")
    tile = _round_up(tile, fold) if tile > 0 else 0
    overlap = _round_up(max(overlap, 0), fold)
    canvas = np.zeros((padded_h * scale, padded_w * scale, 3), dtype=np.uint8)
    grid = tile_grid(padded_w, padded_h, tile)
    for done, (x0, y0, x1, y1) in enumerate(grid, start=1):
        px0, py0 = max(x0 - overlap, 0), max(y0 - overlap, 0)
        px1, py1 = min(x1 + overlap, padded_w), min(y1 + overlap, padded_h)
        piece = pixels[..., py0:py1, px0:px1].to(device=device, dtype=dtype)
        out = forward(piece).float().clamp_(0, 1)
        kept = out[0, :, (y0 - py0) * scale:(y1 - py0) * scale, (x0 - px0) * scale:(x1 - px0) * scale]
        canvas[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = (
            kept.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
        on_tile(done, len(grid))
    return Image.fromarray(canvas[:height * scale, :width * scale])


def resize_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """The final resize to a scale other than the model's own: Lanczos, as A1111's upscalers do."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)
