"""Plots of a sweep (matplotlib, imported when called): a fitted law over its points on log-log axes, and
the FVU-against-L0 frontier of every run."""

from __future__ import annotations

from typing import Any

import numpy as np

from .scaling import PowerLawFit


def plot_fit(fit: PowerLawFit, ax: Any = None, *, ylabel: str = "FVU", n_curve: int = 100):
    """Points and fitted curves on log-log axes. The 2-D law: loss against width, one colour per token budget
    (points and the law's curve at that budget). A 1-D law: loss against its variable. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    along = "N" if "N" in fit.terms else "D"
    x = fit.n if along == "N" else fit.d
    grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, n_curve)
    if fit.terms == ("N", "D"):
        budgets = np.unique(fit.d)
        colours = plt.cm.viridis(np.linspace(0.05, 0.9, budgets.size))
        for D, c in zip(budgets, colours):
            m = fit.d == D
            ax.scatter(fit.n[m], fit.loss[m], color=c, s=18, zorder=3, label=f"{D:,.0f} tokens")
            ax.plot(grid, fit.predict(grid, D), color=c, lw=1.2)
    else:
        ax.scatter(x, fit.loss, s=18, zorder=3, color="C0", label="runs")
        ax.plot(grid, fit.predict(grid, 1.0) if along == "N" else fit.predict(1.0, grid), color="C0", lw=1.2, label="fit")
    ax.axhline(fit.params["E"], color="grey", ls=":", lw=1, label=f"E = {fit.params['E']:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latents N" if along == "N" else "training tokens D")
    ax.set_ylabel(ylabel)
    exps = ", ".join(f"{k}={fit.params[k]:.2f}" for k in ("alpha", "beta") if k in fit.params)
    ax.set_title(f"power-law fit ({exps})", fontsize=10)
    ax.legend(fontsize=7)
    return ax


def pareto(l0: np.ndarray, fvu: np.ndarray) -> np.ndarray:
    """Indices of the runs on the lower-left frontier (no other run has both lower L0 and lower FVU), by L0."""
    order = np.argsort(l0, kind="stable")
    keep, best = [], np.inf
    for i in order:
        if fvu[i] < best:
            keep.append(i)
            best = fvu[i]
    return np.asarray(keep, dtype=np.int64)


def plot_frontier(df, ax: Any = None, *, color_by: str = "n_latents"):
    """FVU against L0 for every row of a sweep's results table, coloured by width, with the frontier drawn."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    l0, fvu = df["l0"].to_numpy(float), df["fvu"].to_numpy(float)
    groups = sorted(df[color_by].unique())
    colours = plt.cm.plasma(np.linspace(0.05, 0.85, len(groups)))
    for g, c in zip(groups, colours):
        m = (df[color_by] == g).to_numpy()
        ax.scatter(l0[m], fvu[m], color=c, s=20, label=f"{color_by}={g}", zorder=3)
    front = pareto(l0, fvu)
    ax.plot(l0[front], fvu[front], color="black", lw=1, ls="--", label="frontier")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("FVU (held out)")
    ax.set_title("sparsity-reconstruction frontier", fontsize=10)
    ax.legend(fontsize=7)
    return ax


__all__ = ["pareto", "plot_fit", "plot_frontier"]
