"""Live previews while a job samples: a cheap picture of the current prediction every few steps.

The job runner turns previews on for one job (`previews(every, sink, published)`, a context
variable, so nothing else threads it through); a run hook or a diffusers step callback hands over
its latents with one call (`offer(step, total, latents, vae)`, or `hook(vae)` for an engine that
takes a callback). Only when previews are on and the step is due (`step % every == 0`) is anything
done: the first image's latents (for video, its first latent frame) go through a linear
latent-to-RGB projection, a 3 x C matrix and a bias, to a picture at most `PREVIEW_SIDE` pixels on
its longer side, which the sink receives. Nothing here writes to the latents or draws from the job's
random numbers, so the final output is the same with previews on or off.

The projection per VAE: the published factors where ComfyUI has them (comfy/latent_formats.py:
SDXL's VAE, which Lumina-Next and Lumina-T2I use; FLUX's, which Lumina-Image 2.0 uses; Wan 2.1's),
recognised from the VAE's class and config; otherwise (a random tiny VAE, CogVideoX's, an unknown
one) fitted by least squares from the VAE itself: a few random latents decoded, each decoded pixel
block averaged down to its latent pixel. A fit is made once per VAE (the same weights loaded again
reuse it) and kept for the process.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

PREVIEW_SIDE = 256  # the longest side of a preview picture, in pixels
_FIT_LATENTS, _FIT_SIZE, _FIT_SEED = 2, 16, 0  # random latents decoded for a fit: how many, their side, the seed

# ComfyUI's latent_rgb_factors (C rows of R, G, B) and latent_rgb_factors_bias, for latents in the
# model's space (SDXL: raw * 0.13025; FLUX: (raw - 0.1159) * 0.3611; Wan 2.1: (raw - mean) / std), the
# space the samplers work in. The projection's RGB is in [-1, 1], as ComfyUI's.
_SDXL = ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
          [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011])
_FLUX = ([[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
          [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
          [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259], [-0.0245, 0.0250, 0.1180],
          [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
          [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
          [-0.1262, -0.0982, -0.0778]], [-0.0329, -0.0718, -0.0851])
_WAN21 = ([[-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747],
           [0.0372, 0.2344, 0.1420], [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665],
           [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975], [-0.0412, 0.0267, -0.1364],
           [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
           [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950],
           [0.1984, 0.0913, 0.1861]], [-0.1835, -0.0868, -0.3360])

log = logging.getLogger(__name__)

LatentHook = Callable[[int, int, torch.Tensor], None]  # (step, total steps, latents)


@dataclass(frozen=True)
class Projection:
    """Latents (C channels) to RGB: rgb = matrix @ z + bias, in [-1, 1]; `scale` pixels per latent pixel."""

    matrix: torch.Tensor  # (3, C)
    bias: torch.Tensor  # (3,)
    scale: int
    source: str  # where it came from, in words: "SDXL (ComfyUI's factors)", "fitted from the VAE"

    def picture(self, latents: torch.Tensor) -> Image.Image:
        """One (C, H, W) latent as a picture at most PREVIEW_SIDE pixels on its longer side."""
        # In numpy: torch's thread pool costs tens of ms on tensors this small when the CPU is busy.
        z = latents.detach().to("cpu", torch.float32).numpy()
        rgb = np.tensordot(z, self.matrix.numpy(), axes=([0], [1])) + self.bias.numpy()  # (H, W, 3)
        pixels = np.clip((rgb + 1.0) * 127.5, 0.0, 255.0).round().astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        height, width = z.shape[-2] * self.scale, z.shape[-1] * self.scale
        fit = min(1.0, PREVIEW_SIDE / max(height, width))
        size = (max(1, round(width * fit)), max(1, round(height * fit)))
        return image if image.size == size else image.resize(size, Image.BILINEAR)


def _published(factors: tuple[list[list[float]], list[float]], source: str) -> Projection:
    rows, bias = factors
    return Projection(torch.tensor(rows).T.contiguous(), torch.tensor(bias), 8, source)


def _config(vae: Any) -> dict[str, Any]:
    return dict(getattr(vae, "config", {}) or {})


def latent_channels(vae: Any) -> int:
    config = _config(vae)
    return int(config.get("latent_channels") or config.get("z_dim") or 4)


def is_video_vae(vae: Any) -> bool:
    """A VAE whose latents have a time axis (B, C, F, H, W): Wan's, CogVideoX's."""
    config = _config(vae)
    return "temperal_downsample" in config or "temporal_compression_ratio" in config


def published_projection(vae: Any) -> Projection | None:
    """ComfyUI's factors when the VAE is one they were made for, recognised by class and config."""
    config, name = _config(vae), type(vae).__name__
    channels = latent_channels(vae)
    if name == "AutoencoderKL" and channels == 4 and config.get("scaling_factor") == 0.13025:
        return _published(_SDXL, "SDXL VAE (ComfyUI's factors)")
    if name == "AutoencoderKL" and channels == 16 and config.get("shift_factor") == 0.1159:
        return _published(_FLUX, "FLUX VAE (ComfyUI's factors)")
    if name == "AutoencoderKLWan" and channels == 16:
        return _published(_WAN21, "Wan 2.1 VAE (ComfyUI's factors)")
    return None


def to_vae_space(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """Model-space latents as the VAE decodes them, the way the pipelines undo their normalisation:
    Wan's per-channel mean and std, FLUX's shift and scale, else the scaling factor."""
    config = _config(vae)
    shape = (1, -1) + (1,) * (z.dim() - 2)
    if config.get("latents_mean") is not None and config.get("latents_std") is not None:
        mean = torch.tensor(config["latents_mean"], dtype=z.dtype).view(shape)
        std = torch.tensor(config["latents_std"], dtype=z.dtype).view(shape)
        return z * std + mean
    raw = z / float(config.get("scaling_factor") or 1.0)
    return raw + float(config["shift_factor"]) if config.get("shift_factor") is not None else raw


@torch.no_grad()
def fit_projection(vae: Any) -> Projection:
    """The least-squares 3 x C map (and bias) from latent pixels to the VAE's decoded pixels, from a
    few random latents decoded one at a time (their own generator: the job's noise is not touched)."""
    channels, video = latent_channels(vae), is_video_vae(vae)
    generator = torch.Generator(device="cpu").manual_seed(_FIT_SEED)
    z = torch.randn(_FIT_LATENTS, channels, _FIT_SIZE, _FIT_SIZE, generator=generator)
    param = next(vae.parameters())
    decoded = []
    for one in z:
        latent = one[None, :, None] if video else one[None]
        pixels = vae.decode(to_vae_space(vae, latent).to(param.device, param.dtype)).sample
        decoded.append((pixels[:, :, 0] if video else pixels).float().cpu())
    pixels = torch.cat(decoded)
    scale = max(1, pixels.shape[-1] // _FIT_SIZE)
    target = torch.nn.functional.avg_pool2d(pixels, scale)  # each latent pixel's block of output pixels
    x = z.permute(0, 2, 3, 1).reshape(-1, channels)
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(x, y).solution  # (C + 1, 3)
    return Projection(solution[:channels].T.contiguous(), solution[channels].contiguous(), scale,
                      "fitted from the VAE")


_fits: "weakref.WeakKeyDictionary[Any, Projection]" = weakref.WeakKeyDictionary()  # per loaded VAE
_fits_by_weights: dict[tuple, Projection] = {}  # the same weights loaded again (a reload, another studio)
_failed: "weakref.WeakSet[Any]" = weakref.WeakSet()  # VAEs whose preview failed once: not tried again


@torch.no_grad()
def _fingerprint(vae: Any) -> tuple:
    """What makes two VAE objects the same VAE: class, config and a sum of every weight (cheap next to a fit)."""
    sums = tuple(round(float(p.detach().float().sum()), 4) for p in vae.parameters())
    return type(vae).__name__, repr(sorted(_config(vae).items())), sums


def projection_for(vae: Any, published: bool = True) -> Projection:
    """The VAE's published projection (when `published` and it has one), else its fit, made once per VAE."""
    if published:
        known = published_projection(vae)
        if known is not None:
            return known
    if vae not in _fits:
        key = _fingerprint(vae)
        if key not in _fits_by_weights:
            _fits_by_weights[key] = fit_projection(vae)
        _fits[vae] = _fits_by_weights[key]
    return _fits[vae]


@dataclass(frozen=True)
class Preview:
    """A preview as a job handle holds it: the step it shows, and one picture per image of the batch."""

    step: int
    total: int
    images: list[Image.Image]


class Previewer:
    """One job's previews: which steps are due, and where the pictures go."""

    def __init__(self, every: int, sink: Callable[[Preview], None], published: bool = True) -> None:
        self.every, self.sink, self.published = every, sink, published

    def due(self, step: int) -> bool:
        return self.every > 0 and step > 0 and step % self.every == 0

    def offer(self, step: int, total: int, latents: torch.Tensor, vae: Any, channels_dim: int = 1) -> None:
        if not self.due(step) or vae is None:
            return
        if latents.dim() not in (4, 5) or vae in _failed:
            # Packed latents (B, tokens, C) have no picture layout, and a VAE whose fit failed is not tried
            # again: no preview, quietly.
            self.every = 0
            return
        try:
            projection = projection_for(vae, self.published)
            if latents.dim() == 5:  # video: the first latent frame, which is the clip's first frame
                latents = latents[:, :, 0] if channels_dim == 1 else latents[:, 0]
            pictures = [projection.picture(one) for one in latents]
        except Exception:  # a preview must never cost the job: no more previews for it, and say why
            log.exception("live preview failed; this job continues without previews")
            self.every = 0
            try:
                _failed.add(vae)
            except TypeError:  # not weak-referenceable: it may be tried again
                pass
            return
        self.sink(Preview(step, total, pictures))


_active: ContextVar[Previewer | None] = ContextVar("studio_preview", default=None)


@contextlib.contextmanager
def previews(every: int, sink: Callable[[Preview], None], published: bool = True) -> Iterator[None]:
    """Previews on for what runs inside (one job), every `every` steps; 0 leaves them off."""
    token = _active.set(Previewer(every, sink, published) if every > 0 else None)
    try:
        yield
    finally:
        _active.reset(token)


def offer(step: int, total: int, latents: torch.Tensor, vae: Any, channels_dim: int = 1) -> None:
    """The current prediction at `step` (model-space latents, batch first; `channels_dim` 2 for CogVideoX's
    (B, F, C, H, W)): previewed when previews are on and the step is due, else nothing is done."""
    previewer = _active.get()
    if previewer is not None:
        previewer.offer(step, total, latents, vae, channels_dim)


class _Hook:
    """`offer` for one VAE as an engine's latents callback; `due(step)` lets the engine form its prediction
    only at the steps that are previewed (engines/flow.integrate asks)."""

    def __init__(self, previewer: Previewer, vae: Any) -> None:
        self.previewer, self.vae = previewer, vae

    def due(self, step: int) -> bool:
        return self.previewer.due(step)

    def __call__(self, step: int, total: int, latents: torch.Tensor) -> None:
        self.previewer.offer(step, total, latents, self.vae)


def hook(vae: Any) -> LatentHook | None:
    """`offer` for this VAE as an engine's latents callback, or None while previews are off (the engine
    then does not even form its prediction)."""
    previewer = _active.get()
    return _Hook(previewer, vae) if previewer is not None else None
