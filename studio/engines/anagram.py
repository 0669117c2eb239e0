"""Visual anagrams with a flow model: one picture that reads as prompt A as it is and as prompt B
under a view (a flip, a rotation, a negation).

Per step, for every view: transform the latent, take one solver step with that view's prompt (CFG
inside), map the resulting update back with the inverse view, and average the updates over views.
Views act on the latent (C x H x W); they are linear and invertible, so mapping the new state back
and mapping the update back are the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import InvalidInput
from .flow import EVALS_PER_STEP, step, time_grid


@dataclass(frozen=True)
class View:
    name: str
    title: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]
    square_only: bool = False


def _rot(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.rot90(x, k, dims=(-2, -1))


VIEWS: dict[str, View] = {v.name: v for v in (
    View("identity", "as it is", lambda x: x, lambda x: x),
    View("flip_vertical", "upside down (flipped)", lambda x: torch.flip(x, (-2,)), lambda x: torch.flip(x, (-2,))),
    View("flip_horizontal", "mirrored", lambda x: torch.flip(x, (-1,)), lambda x: torch.flip(x, (-1,))),
    View("rotate_90", "rotated 90° clockwise", _rot(-1), _rot(1), square_only=True),
    View("rotate_180", "rotated 180°", _rot(2), _rot(-2)),
    View("rotate_270", "rotated 90° counter-clockwise", _rot(1), _rot(-1), square_only=True),
    View("negate", "negated", lambda x: -x, lambda x: -x),
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


def combined_step(solver: str, velocities: list[Callable[[torch.Tensor, float], torch.Tensor]], views: list[View],
                  x: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """x + mean over views of the view's solver update, mapped back by the inverse view."""
    updates = [view.inverse(step(solver, v, view.forward(x), t0, t1) - view.forward(x))
               for v, view in zip(velocities, views)]
    return x + torch.stack(updates).mean(dim=0)


@dataclass(frozen=True)
class Flow:
    """A flow model as the anagram sampler drives it, built by the model's family: one velocity per
    prompt (CFG inside), the first latents, and decoding latents to pictures."""

    velocities: list[Callable[[torch.Tensor, float], torch.Tensor]]
    initial_latents: Callable[[torch.Generator], torch.Tensor]
    decode: Callable[[torch.Tensor], list[Any]]


@torch.no_grad()
def sample(flow: Flow, *, view_names: list[str], width: int, height: int, generator: torch.Generator,
           solver: str, steps: int, shift: float, on_step: Callable[[int, int], None] | None = None
           ) -> tuple[Any, torch.Tensor, int]:
    """Returns (the image, its final latent, model evaluations): each step averages every view's
    solver update of its own prompt's velocity."""
    if solver not in EVALS_PER_STEP:
        raise InvalidInput("anagrams need a fixed-step solver (euler, midpoint or rk4): every step combines views")
    views = check_views(view_names, width, height)
    latents = flow.initial_latents(generator)
    grid = time_grid(steps, shift)
    for i in range(steps):
        latents = combined_step(solver, flow.velocities, views, latents, grid[i], grid[i + 1])
        if on_step is not None:
            on_step(i + 1, steps)
    evaluations = steps * EVALS_PER_STEP[solver] * len(views)
    return flow.decode(latents)[0], latents, evaluations


@torch.no_grad()
def viewed_image(flow: Flow, latents: torch.Tensor, view: View) -> Any:
    """What the picture shows under `view`: the decoded view of the latent."""
    return flow.decode(view.forward(latents))[0]
