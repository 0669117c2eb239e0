"""Visual anagrams with a flow model: one picture that reads as prompt A as it is and as prompt B
under a view (a flip, a rotation, a negation), sampled in the two phases of the authors' code
(Lumina-T2X visual_anagrams/generate.py, run.sh):

1. *Init*, at the model's training size: per step, for every view, transform the latent, take one
   solver step with that view's prompt (CFG inside), map the update back with the inverse view,
   and average the updates over views.
2. *Refine*, at the target size: decode the init picture, upsample it bicubically, VAE-encode it in
   tiles as the guidance g, and sample again from fresh noise z. Every model input is the state
   mixed with the guidance by the "skip residual" (1 - c)·x + c·(t·g + (1 - t)·z), c = ½(1 + cos πt),
   so the low-resolution structure leads early (t = 0: noise) and the model alone finishes (t = 1).
   The result is decoded in tiles. The authors run this phase at the training size too (their
   `if not do_extrapolation: continue` is commented out), so it always runs here.

Views act on the latent (C x H x W); rotations and flips are linear and invertible. The readings of
the picture are the views applied to its pixels, as the authors save them (`save_illusion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InvalidInput
from .flow import CountingVelocity, sampling_grid, step
from .solvers import FIXED_SOLVERS, MIN_STEPS

Velocity = Callable[[torch.Tensor, float], torch.Tensor]
TILE_BATCH = 4  # tiles per VAE call (the reference's view_batch_size)


@dataclass(frozen=True)
class View:
    name: str
    title: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]
    square_only: bool = False


def _rot(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.rot90(x, k, dims=(-2, -1))


def _negate_back(x: torch.Tensor) -> torch.Tensor:
    """The reference's inverse of `negate` (view_negate.py): channels 0-2 negated, channel 3 kept.

    It is DeepFloyd's "don't negate the variance estimate" hack carried into the 4-channel SDXL
    latent of Lumina-Next, so it is not a true inverse there. Other latent layouts (Lumina-Image 2.0's
    16 channels) have no such rule in the reference; they are negated whole.
    """
    if x.shape[-3] != 4:
        return -x
    return torch.cat([-x[..., :3, :, :], x[..., 3:, :, :]], dim=-3)


VIEWS: dict[str, View] = {v.name: v for v in (
    View("identity", "as it is", lambda x: x, lambda x: x),
    View("flip_vertical", "upside down (flipped)", lambda x: torch.flip(x, (-2,)), lambda x: torch.flip(x, (-2,))),
    View("flip_horizontal", "mirrored", lambda x: torch.flip(x, (-1,)), lambda x: torch.flip(x, (-1,))),
    View("rotate_90", "rotated 90° clockwise", _rot(-1), _rot(1), square_only=True),
    View("rotate_180", "rotated 180°", _rot(2), _rot(-2)),
    View("rotate_270", "rotated 90° counter-clockwise", _rot(1), _rot(-1), square_only=True),
    View("negate", "negated", lambda x: -x, _negate_back),
)}


def check_views(names: list[str], width: int, height: int) -> list[View]:
    views = []
    for name in names:
        if name not in VIEWS:
            raise InvalidInput(f"unknown view {name!r}; choose from {', '.join(VIEWS)}")
        view = VIEWS[name]
        if view.square_only and width != height:
            raise InvalidInput(f"the view {name} turns the picture on its side, so it needs a square size "
                               f"(got {width}x{height})")
        views.append(view)
    return views


def check_solver(solver: str) -> None:
    if solver not in FIXED_SOLVERS:
        raise InvalidInput(f"anagrams need a fixed-step solver ({', '.join(FIXED_SOLVERS)}): every step combines "
                           "views")


def check_steps(steps: int | None) -> None:
    if steps is not None and steps < MIN_STEPS:
        raise InvalidInput(f"steps: anagrams need at least {MIN_STEPS} (got {steps}): as in the authors' code, N steps "
                           "are N time points from noise to picture, N - 1 solver steps between them")


# -- the two phases' steps ---------------------------------------------------------------------


def combined_step(solver: str, velocities: list[Velocity], views: list[View],
                  x: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """Init phase: x + mean over views of the view's solver update, mapped back by the inverse view
    (each view's solver stages are taken in the viewed frame, as the reference's midpoint_solver)."""
    # The fork's own midpoint solver steps on Python floats (generate.py: timesteps.tolist()).
    updates = [view.inverse(step(solver, v, view.forward(x), t0, t1, python_times=True) - view.forward(x))
               for v, view in zip(velocities, views)]
    return x + torch.stack(updates).mean(dim=0)


def skip_residual(x: torch.Tensor, t: float, guidance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the refine phase feeds the model at time t (0 = noise, 1 = data) for the state x:
    (1 - c)·x + c·(t·guidance + (1 - t)·noise), c = ½(1 + cos πt) (midpoint_solver_extra; its
    `anchor` divisor is ones). `noise` is the refine phase's starting noise."""
    c = 0.5 * (1.0 + math.cos(math.pi * t))
    return (1.0 - c) * x + c * (t * guidance + (1.0 - t) * noise)


def refine_step(solver: str, velocities: list[Velocity], views: list[View], x: torch.Tensor, t0: float,
                t1: float, guidance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Refine phase: as `combined_step`, but each model input is the skip residual of the state, and
    the solver's stages are taken in the unviewed frame (the reference's midpoint_solver_extra: the
    mix, then the view; the velocity mapped back before the midpoint)."""
    updates = []
    for v, view in zip(velocities, views):
        def unviewed(y: torch.Tensor, t: float, v: Velocity = v, view: View = view) -> torch.Tensor:
            return view.inverse(v(view.forward(skip_residual(y, t, guidance, noise)), t))

        updates.append(step(solver, unviewed, x, t0, t1, python_times=True) - x)
    return x + torch.stack(updates).mean(dim=0)


# -- what a family gives the sampler ---------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """A flow model at one size, as the anagram sampler drives it: a velocity per prompt (CFG
    inside), the first latents, and decoding latents to pixels ((1, 3, H, W), in [-1, 1])."""

    velocities: list[Velocity]
    initial_latents: Callable[[torch.Generator], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TwoPhase:
    """What a family builds for one anagram: the init flow at the training size, the refine flow at
    the target size, and the VAE encoding of target-size pixels (with its generator) for the guidance."""

    init: Flow
    refine: Flow
    encode: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    init_size: tuple[int, int]  # (width, height) of the init phase


@dataclass(frozen=True)
class Anagram:
    picture: Image.Image  # the refined picture, at the target size
    pixels: torch.Tensor  # the same, as decoded ((1, 3, H, W) in [-1, 1]): its readings are views of it
    preview: Image.Image  # the init phase's picture, at the training size
    evaluations: dict[str, int]  # model evaluations per phase
    solver_steps: int  # per phase


def training_size(width: int, height: int, native: int, multiple: int) -> tuple[int, int]:
    """Where the init phase samples: the target's shape at the model's training area (native²), as the
    reference's (w, h) / (res / native); sides rounded to `multiple`. A square target: native x native."""
    scale = math.sqrt(width * height) / native

    def side(length: int) -> int:
        return max(multiple, round(length / scale / multiple) * multiple)

    return side(width), side(height)


@torch.no_grad()
def sample(model: TwoPhase, *, view_names: list[str], width: int, height: int, generator: torch.Generator,
           solver: str, steps: int, shift: float, on_step: Callable[[int, int], None] | None = None) -> Anagram:
    """Both phases on the authors' grid (`steps` time points, linspace(0, 1, steps) shifted: steps - 1
    solver steps each). Progress counts the time points of both phases, 1 to 2·steps."""
    check_solver(solver)
    check_steps(steps)
    views = check_views(view_names, width, height)
    grid = sampling_grid(steps, shift)
    reached = 0

    def advance() -> None:
        nonlocal reached
        reached += 1
        if on_step is not None:
            on_step(reached, 2 * len(grid))

    init = [CountingVelocity(v) for v in model.init.velocities]
    x = model.init.initial_latents(generator)
    advance()
    for i in range(len(grid) - 1):
        x = combined_step(solver, init, views, x, grid[i], grid[i + 1])
        advance()
    preview = model.init.decode(x)

    upsampled = F.interpolate(preview.float(), size=(height, width), mode="bicubic")
    guidance = model.encode(upsampled, generator)  # drawn before the refine noise, as the reference does
    noise = model.refine.initial_latents(generator)
    guidance = guidance.to(device=noise.device, dtype=noise.dtype)
    refine = [CountingVelocity(v) for v in model.refine.velocities]
    x = noise
    advance()
    for i in range(len(grid) - 1):
        x = refine_step(solver, refine, views, x, grid[i], grid[i + 1], guidance, noise)
        advance()
    pixels = model.refine.decode(x)
    return Anagram(picture=to_picture(pixels), pixels=pixels, preview=to_picture(preview),
                   evaluations={"init": sum(v.evaluations for v in init),
                                "refine": sum(v.evaluations for v in refine)},
                   solver_steps=len(grid) - 1)


def to_picture(pixels: torch.Tensor) -> Image.Image:
    """Decoded pixels ((1, 3, H, W), [-1, 1]) as an RGB picture (as diffusers' postprocess rounds them)."""
    array = (pixels[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((array * 255).round().astype("uint8"))


def reading(pixels: torch.Tensor, view: View) -> Image.Image:
    """What the picture shows under `view`: the view applied to its pixels (turned, flipped, negated)."""
    return to_picture(view.forward(pixels))


# -- tiled VAE passes (the reference's tiled_encode / tiled_decode) ---------------------------------


def windows(size: int, core: int) -> list[tuple[int, int]]:
    """Back-to-back windows of `core` along one side, the last pulled back to end at the edge (the
    reference's get_views with stride = window); one window of the whole side when it is shorter."""
    if size <= core:
        return [(0, size)]
    return [(start, start + core) for start in (min(i * core, size - core) for i in range(-(-size // core)))]


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, core: int, pad: int, up: int = 1,
          down: int = 1) -> torch.Tensor:
    """`fn` (which scales space by up/down) over tiles of x: each a `core` window with `pad` of context
    on every side (zeros past the edge); of each result only its core is kept, averaged where cores
    overlap. Tiles go to `fn` TILE_BATCH at a time."""
    _, _, height, width = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    boxes = [(top, bottom, left, right) for top, bottom in windows(height, core)
             for left, right in windows(width, core)]
    out = count = None
    keep = pad * up // down
    for first in range(0, len(boxes), TILE_BATCH):
        group = boxes[first:first + TILE_BATCH]
        results = fn(torch.cat([padded[:, :, t:b + 2 * pad, left:r + 2 * pad] for t, b, left, r in group]))
        if out is None:
            out = torch.zeros(x.shape[0], results.shape[1], height * up // down, width * up // down,
                              device=results.device, dtype=torch.promote_types(results.dtype, torch.float32))
            count = torch.zeros_like(out)
        for result, (t, b, left, r) in zip(results.split(x.shape[0]), group):
            core_part = result[:, :, keep:result.shape[2] - keep, keep:result.shape[3] - keep]
            where = (slice(None), slice(None), slice(t * up // down, b * up // down),
                     slice(left * up // down, r * up // down))
            out[where] += core_part.to(out.dtype)
            count[where] += 1
    return out / count


def tiled_encode(encode: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, native: int) -> torch.Tensor:
    """Pixels -> latents in tiles: cores of native/4 px with 3·native/8 px of context, so the VAE sees
    native-size tiles (the reference hard-codes 256 and 384 for its 1024 model)."""
    return tiled(encode, pixels, core=native // 4, pad=native // 8 * 3, down=8)


def tiled_decode(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, native: int) -> torch.Tensor:
    """Latents -> pixels in tiles: cores of native/32 latent px with 3·native/64 of context (the
    reference's 32 and 48 for its 1024 model), each decoded tile native px wide."""
    return tiled(decode, latents, core=native // 32, pad=native // 64 * 3, up=8)


def vae_two_phase(*, init: list[Velocity], refine: list[Velocity],
                  latents: Callable[[int, int, torch.Generator], torch.Tensor], vae: Any, device: Any, native: int,
                  width: int, height: int, multiple: int, tiled: bool = True) -> TwoPhase:
    """The two phases for a model that runs at any size and decodes through a diffusers AutoencoderKL:
    init at the training size (decoded whole, as the reference's preview), refine at width x height
    (encoded and decoded in tiles, as the reference does at every size; with `tiled` off, in one pass
    each). Latents are in the scaling the flow samples in: (z - shift) · scaling (shift 0 for the SDXL
    VAE, the Flux VAE's for Lumina-Image 2.0)."""
    scaling = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0

    def encode_tiles(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        def one(tiles: torch.Tensor) -> torch.Tensor:
            posterior = vae.encode(tiles.to(device=device, dtype=vae.dtype)).latent_dist
            return (posterior.sample(generator=generator) - shift) * scaling

        return tiled_encode(one, pixels, native) if tiled else one(pixels)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode((z / scaling + shift).to(device=device, dtype=vae.dtype), return_dict=False)[0]

    init_width, init_height = training_size(width, height, native, multiple)
    return TwoPhase(
        init=Flow(init, lambda generator: latents(init_width, init_height, generator), decode),
        refine=Flow(refine, lambda generator: latents(width, height, generator),
                    (lambda z: tiled_decode(decode, z, native)) if tiled else decode),
        encode=encode_tiles, init_size=(init_width, init_height))
