"""The flow solvers' names and costs, without torch: what a family declares as its choices."""

FIXED_SOLVERS = ("euler", "midpoint", "rk4")
SOLVERS = (*FIXED_SOLVERS, "dopri5")
# Model evaluations per fixed step.
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "rk4": 4}
