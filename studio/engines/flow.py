"""Flow-matching ODE sampling: the time grid (with Lumina-Next's time shift) and the solvers.

The convention is Lumina's: t runs from 0 (noise) to 1 (data) and the model predicts the velocity
dx/dt. The grid is the authors' (lumina_next_t2i_mini/transport.py, transport/integrators.py):
N steps are linspace(0, 1, N) shifted, N time points and N - 1 solver steps between them (30
midpoint steps: 29 steps, 58 model evaluations). The fixed-step solvers are torchdiffeq's, which the
authors call through `odeint`: euler, midpoint, and rk4 as torchdiffeq has it, the 3/8 rule
(rk4_classic is the textbook form). dopri5 and dopri8 are torchdiffeq's own adaptive solvers with
Lumina-T2I's tolerances; they pick their own steps. Every solver counts its model evaluations,
because that, not the step count, is what a sample costs.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch

from ..errors import InvalidInput
from .solvers import (ADAPTIVE_SOLVERS, ATOL, EVALS_PER_STEP, FIXED_SOLVERS, RTOL, SOLVERS,  # noqa: F401
                      solver_steps, steps_problem)

Velocity = Callable[[torch.Tensor, float], torch.Tensor]  # (x, t) -> dx/dt
StepHook = Callable[[int, int, torch.Tensor], None]  # (steps done, total steps, x)
# (time point, total, x0): the predicted clean sample at a time point, x0 = x_t + (1 - t) v(x_t, t). A hook
# with a `due(point) -> bool` method is handed only the points it is due for (the others are not formed).
EstimateHook = Callable[[int, int, torch.Tensor], None]

ONE_THIRD, TWO_THIRDS = 1 / 3, 2 / 3


def time_shift(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Lumina-Next's time shift t' = t / (t + s (1 - t)): s > 1 spends more steps near the noise end.

    (It equals diffusers' FlowMatch `shift` applied to sigma = 1 - t.)
    """
    return t / (t + shift * (1 - t))


def time_grid(intervals: int, shift: float) -> list[float]:
    """intervals + 1 shifted times from 0 to 1. Computed as the authors do: in float32, with their
    form of the shift, t / (t + s - s t)."""
    base = torch.linspace(0.0, 1.0, intervals + 1, dtype=torch.float32)
    return [float(v) for v in base / (base + shift - shift * base)]


def sampling_grid(steps: int, shift: float) -> list[float]:
    """The authors' grid for `steps` steps: `steps` time points, linspace(0, 1, steps) shifted."""
    return time_grid(solver_steps(steps), shift)


class CountingVelocity:
    """Wraps a velocity function and counts how often the model is evaluated."""

    def __init__(self, fn: Velocity) -> None:
        self.fn = fn
        self.evaluations = 0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.evaluations += 1
        return self.fn(x, t)


def step(solver: str, v: Velocity, x: torch.Tensor, t0: float, t1: float, python_times: bool = False) -> torch.Tensor:
    """One fixed step of `solver` from t0 to t1, term for term as torchdiffeq's fixed-grid solvers:
    the times are 0-dim float32 tensors (the authors' grid is a float32 linspace), dt = t1 - t0 is
    formed in float32, and each product with the state rounds dt to the state's dtype (bf16 in a
    half-precision run) exactly as torchdiffeq's `dt * f0` does. `python_times`: the times and dt are
    Python floats instead, as in the visual-anagram fork's own midpoint solver (`timesteps.tolist()`)."""
    if python_times:
        dt: Any = t1 - t0
    else:
        t0, t1 = torch.tensor(t0, dtype=torch.float32), torch.tensor(t1, dtype=torch.float32)  # type: ignore
        dt = t1 - t0

    def f(y: torch.Tensor, t: Any) -> torch.Tensor:
        return v(y, float(t))

    if solver == "euler":
        return x + dt * f(x, t0)
    if solver == "midpoint":
        half = 0.5 * dt
        k1 = f(x, t0)
        return x + dt * f(x + k1 * half, t0 + half)
    if solver == "rk4":  # torchdiffeq's rk4 (rk4_alt_step_func): Kutta's 3/8 rule
        k1 = f(x, t0)
        k2 = f(x + dt * k1 * ONE_THIRD, t0 + dt * ONE_THIRD)
        k3 = f(x + dt * (k2 - k1 * ONE_THIRD), t0 + dt * TWO_THIRDS)
        k4 = f(x + dt * (k1 - k2 + k3), t1)
        return x + (k1 + 3 * (k2 + k3) + k4) * dt * 0.125
    if solver == "rk4_classic":
        k1 = f(x, t0)
        k2 = f(x + 0.5 * dt * k1, t0 + 0.5 * dt)
        k3 = f(x + 0.5 * dt * k2, t0 + 0.5 * dt)
        k4 = f(x + dt * k3, t1)
        return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    raise ValueError(f"unknown fixed-step solver {solver!r}; choose one of {', '.join(FIXED_SOLVERS)}")


class Integration(NamedTuple):
    x: torch.Tensor  # the state at t = 1
    evaluations: int  # model evaluations
    solver_steps: int  # steps the solver took (accepted ones, for an adaptive solver)


class _Rhs:
    """dx/dt as torchdiffeq calls it, (t, y); it counts the steps the adaptive solver accepts."""

    def __init__(self, v: CountingVelocity) -> None:
        self.v, self.accepted = v, 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.v(y, float(t))

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.accepted += 1


class _Estimating:
    """The velocity as one fixed step calls it; its first evaluation, at the step's own state and time
    (every fixed solver starts with f(x, t0)), gives that time point's clean-sample estimate."""

    def __init__(self, v: CountingVelocity, point: int, total: int, on_estimate: EstimateHook) -> None:
        self.v, self.point, self.total, self.on_estimate, self.first = v, point, total, on_estimate, True

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        out = self.v(x, t)
        if self.first:
            self.first = False
            self.on_estimate(self.point, self.total, x + (1.0 - t) * out)
        return out


def integrate(v: Velocity, x: torch.Tensor, *, solver: str, steps: int, shift: float = 1.0, atol: float = ATOL,
              rtol: float = RTOL, tolerance_lists: bool = False, on_step: StepHook | None = None, start: int = 0,
              after_step: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
              on_estimate: EstimateHook | None = None) -> Integration:
    """Integrate dx/dt = v(x, t) from t=0 to t=1 on the authors' grid of `steps` time points.

    `tolerance_lists`: pass the adaptive solvers' tolerances as one-element lists, as Lumina-T2I's
    transport does (integrators.py: `atol=[self.atol]`); torchdiffeq then holds them as float64
    tensors and chooses its steps from a float64 error norm, where floats (Lumina-Next mini's
    sampler) make it float32. The steps taken can differ in the last bits.

    Progress counts time points reached, 1 to `steps`: the first is t = 0 (the noise itself), so the
    hook's count is the one the user asked for while the solver takes steps - 1 steps.

    `start`: begin at that point of the grid (image to image: engines/flow_edit.py), `x` being the state
    there; `after_step(x, t)`: what the state becomes after each step (inpainting's blend); fixed-step
    solvers only, as an adaptive solver's steps are its own.

    `on_estimate` hears the predicted clean sample x0 = x_t + (1 - t) v at each time point (fixed
    solvers; an adaptive one only its end state): during the step that leaves the point, from that
    step's first model evaluation, so it costs no evaluation; the last point's is the state itself.
    It only reads: the integration is the same with it or without.
    """
    problem = steps_problem(steps)
    if problem:
        raise InvalidInput(problem)
    counted = CountingVelocity(v)
    if solver in ADAPTIVE_SOLVERS:
        from torchdiffeq import odeint

        # Adaptive: the solver picks its own steps. The authors pass their whole grid as output times;
        # torchdiffeq only interpolates at those, so the state at t = 1 is the same as from [0, 1].
        if after_step is not None:
            raise InvalidInput(f"inpainting blends the kept region back after every step, which {solver} (adaptive: "
                               "it chooses its own steps) does not expose: pick a fixed-step solver (euler, midpoint)")
        rhs = _Rhs(counted)
        t0 = sampling_grid(steps, shift)[start] if start else 0.0
        times = torch.tensor([t0, 1.0], dtype=torch.float32, device=x.device)
        tolerances = {"atol": [atol], "rtol": [rtol]} if tolerance_lists else {"atol": atol, "rtol": rtol}
        out = odeint(rhs, x, times, method=solver, **tolerances)[-1]
        if on_step is not None:
            on_step(1, 1, out)
        if on_estimate is not None:
            on_estimate(1, 1, out)
        return Integration(out, counted.evaluations, rhs.accepted)
    if solver not in FIXED_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    grid = sampling_grid(steps, shift)[start:]
    total = len(grid)
    if on_step is not None:
        on_step(1, total, x)
    due = getattr(on_estimate, "due", lambda point: True)
    for i in range(len(grid) - 1):
        wanted = on_estimate is not None and due(i + 1)
        velocity = _Estimating(counted, i + 1, total, on_estimate) if wanted else counted
        x = step(solver, velocity, x, grid[i], grid[i + 1])
        if after_step is not None:
            x = after_step(x, grid[i + 1])
        if on_step is not None:
            on_step(i + 2, total, x)
    if on_estimate is not None and due(total):
        on_estimate(total, total, x)
    return Integration(x, counted.evaluations, len(grid) - 1)
