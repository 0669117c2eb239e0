"""Flow-matching ODE sampling: the time grid (with Lumina-Next's time shift) and the solvers.

The convention is Lumina's: t runs from 0 (noise) to 1 (data) and the model predicts the velocity
dx/dt. Fixed-step solvers (euler, midpoint, rk4: Lumina-Next's demo choices) integrate over a
shifted grid; dopri5 (torchdiffeq, as Lumina-T2I samples) adapts its own steps. Every solver counts
its model evaluations, because that, not the step count, is what a sample costs.
"""

from __future__ import annotations

from typing import Callable

import torch

from .solvers import EVALS_PER_STEP, FIXED_SOLVERS, SOLVERS  # noqa: F401  (re-exported)

Velocity = Callable[[torch.Tensor, float], torch.Tensor]  # (x, t) -> dx/dt
StepHook = Callable[[int, int, torch.Tensor], None]  # (step done, total steps, x)


def time_shift(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Lumina-Next's time shift t' = t / (t + s (1 - t)): s > 1 spends more steps near the noise end.

    (It equals diffusers' FlowMatch `shift` applied to sigma = 1 - t.)
    """
    return t / (t + shift * (1 - t))


def time_grid(steps: int, shift: float) -> list[float]:
    """steps + 1 times from 0 to 1, shifted."""
    base = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return [float(v) for v in time_shift(base, shift)]


class CountingVelocity:
    """Wraps a velocity function and counts how often the model is evaluated."""

    def __init__(self, fn: Velocity) -> None:
        self.fn = fn
        self.evaluations = 0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.evaluations += 1
        return self.fn(x, t)


def step(solver: str, v: Velocity, x: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """One fixed step of `solver` from t0 to t1."""
    h = t1 - t0
    if solver == "euler":
        return x + h * v(x, t0)
    if solver == "midpoint":
        k1 = v(x, t0)
        return x + h * v(x + 0.5 * h * k1, t0 + 0.5 * h)
    if solver == "rk4":
        k1 = v(x, t0)
        k2 = v(x + 0.5 * h * k1, t0 + 0.5 * h)
        k3 = v(x + 0.5 * h * k2, t0 + 0.5 * h)
        k4 = v(x + h * k3, t1)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    raise ValueError(f"unknown fixed-step solver {solver!r}; choose one of {', '.join(FIXED_SOLVERS)}")


def integrate(v: Velocity, x: torch.Tensor, *, solver: str, steps: int, shift: float = 1.0,
              atol: float = 1e-6, rtol: float = 1e-3, on_step: StepHook | None = None) -> tuple[torch.Tensor, int]:
    """Integrate dx/dt = v(x, t) from t=0 to t=1. Returns (x at t=1, model evaluations)."""
    counted = CountingVelocity(v)
    if solver == "dopri5":
        from torchdiffeq import odeint

        # Adaptive: the solver picks its own steps, so `steps` and `shift` do not apply.
        def rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return counted(y, float(t))

        times = torch.tensor([0.0, 1.0], dtype=x.dtype)
        out = odeint(rhs, x, times, method="dopri5", atol=atol, rtol=rtol)[-1]
        if on_step is not None:
            on_step(1, 1, out)
        return out, counted.evaluations
    grid = time_grid(steps, shift)
    for i in range(steps):
        x = step(solver, counted, x, grid[i], grid[i + 1])
        if on_step is not None:
            on_step(i + 1, steps, x)
    return x, counted.evaluations
