"""Lumina-Next's checks on a job's parameters before they are validated (torch-free: it runs at submit)."""

from __future__ import annotations

from typing import Any

from ...engines.solvers import steps_problem
from ...errors import InvalidInput

# The tasks sampled on the authors' grid (N steps = N time points), where one step is nothing to integrate.
REFERENCE_GRID_TASKS = ("image", "compose")


def prepare(card: Any, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Refuse a step count the authors' sampler cannot use, before the job is queued."""
    if task in REFERENCE_GRID_TASKS:
        steps = params.get("steps")
        problem = steps_problem(steps) if isinstance(steps, int) and not isinstance(steps, bool) else None
        if problem:
            raise InvalidInput(problem)
    return params
