"""The flow solvers' names, costs and step rule, without torch: what a family declares as its choices.

The names are the authors' (Lumina-Next's demos pass them to torchdiffeq's `odeint`): "rk4" is
torchdiffeq's rk4, the 3/8 rule; the textbook form is "rk4_classic". Steps mean what the authors'
"Sampling steps" mean: N time points, linspace(0, 1, N), so N - 1 solver steps between them.
"""

from __future__ import annotations

FIXED_SOLVERS = ("euler", "midpoint", "rk4", "rk4_classic")
ADAPTIVE_SOLVERS = ("dopri5", "dopri8")
SOLVERS = (*FIXED_SOLVERS, *ADAPTIVE_SOLVERS)
# Model evaluations per fixed step.
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "rk4": 4, "rk4_classic": 4}
# How the family's solver picker names them.
SOLVER_LABELS = {"euler": "euler", "midpoint": "midpoint", "rk4": "rk4 (3/8 rule, the authors')",
                 "rk4_classic": "rk4 classic", "dopri5": "dopri5 (adaptive)", "dopri8": "dopri8 (adaptive)"}
# Lumina-T2I's ODE tolerances (lumina_t2i/configs/infer/settings.yaml, demo.py --atol/--rtol), for dopri5/8.
ATOL, RTOL = 1e-6, 1e-3
# The authors' grid has N points; with one (t = 0 alone) their sampler hands back the starting noise.
MIN_STEPS = 2


def solver_steps(steps: int) -> int:
    """The fixed-step solver steps that `steps` time points make: the intervals between them."""
    return steps - 1


def steps_problem(steps: int | None, model: str = "Lumina-Next") -> str | None:
    """Why `steps` cannot run `model`, in words, or None."""
    if steps is None or steps >= MIN_STEPS:
        return None
    return (f"steps: {model} needs at least {MIN_STEPS} (got {steps}). As in the authors' sampler, N steps are "
            "N time points from noise (t = 0) to image (t = 1), N - 1 solver steps between them; with 1 there is "
            "nothing to integrate and the result would be the starting noise")
