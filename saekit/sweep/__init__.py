"""Dictionary science at scale: sweeps over widths, sparsities and token budgets, and the laws they follow.

    run.py       `run_sweep`: a grid of SAEs from one cache (several per data pass), budgets read from one
                 run's checkpoints, a resumable folder, the results table
    scaling.py   `fit_power_law` (L = E + A/N^alpha + B/D^beta and the 1-D forms), `bootstrap` intervals,
                 the compute-optimal width
    plots.py     `plot_fit` (log-log points and curves), `plot_frontier` (FVU against L0)
"""

from __future__ import annotations

from .plots import pareto, plot_fit, plot_frontier
from .run import SweepResult, measure, run_name, run_sweep
from .scaling import PowerLawFit, bootstrap, fit_power_law

__all__ = [
    "PowerLawFit",
    "SweepResult",
    "bootstrap",
    "fit_power_law",
    "measure",
    "pareto",
    "plot_fit",
    "plot_frontier",
    "run_name",
    "run_sweep",
]
