"""Power laws for SAE loss: L(N) = E + A / N^alpha, L(D) = E + B / D^beta and
L(N, D) = E + A / N^alpha + B / D^beta (N latents, D training tokens), the form of Gao et al. 2024 and
of Chinchilla, with bootstrap confidence intervals and the compute-optimal width.

Fitting is variable projection: for fixed exponents the model is linear in (E, A, B), so each candidate
(alpha, beta) is scored by a weighted non-negative least-squares solve (weights 1/L: relative error, so
small losses count as much as large ones), over a log-spaced grid of exponents that is then zoomed in
around the best cell. numpy only, deterministic, no start values to guess.

    fit = fit_power_law(df.n_latents, df.fvu, tokens=df.tokens)       # the 2-D law
    fit.params        # {'E': ..., 'A': ..., 'alpha': ..., 'B': ..., 'beta': ...}
    fit = bootstrap(fit, n=200, seed=0); fit.ci["alpha"]             # 95% percentile interval
    fit.optimal_width(tokens=1e6)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError

EXPONENTS = (0.01, 4.0)
"""Range of exponents (alpha, beta) searched."""


def _as_array(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size and not np.all(np.isfinite(a)):
        raise ConfigError(f"{what} holds NaN or inf values: drop those runs before fitting")
    return a


def _nnls_batched(X_GMK: np.ndarray, y_M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min ||X c - y||^2 with c >= 0, for G small problems at once (k <= 3 columns): every active set is
    tried with a batched pseudo-inverse and the best feasible one kept. Returns (c [G, K], rss [G])."""
    G, _, K = X_GMK.shape
    best_c = np.zeros((G, K))
    best_r = np.full(G, float(y_M @ y_M))
    for r in range(1, K + 1):
        for cols in itertools.combinations(range(K), r):
            sub = X_GMK[:, :, cols]  # [G, M, r]
            c = np.einsum("grm,m->gr", np.linalg.pinv(sub), y_M)  # [G, r]
            res = y_M[None] - np.einsum("gmr,gr->gm", sub, c)
            rss = (res**2).sum(1)
            ok = np.all(c >= 0, axis=1) & (rss < best_r)
            best_r = np.where(ok, rss, best_r)
            full = np.zeros((G, K))
            full[:, list(cols)] = c
            best_c = np.where(ok[:, None], full, best_c)
    return best_c, best_r


@dataclass
class PowerLawFit:
    """A fitted law. `params` holds E, and A/alpha (width term) and/or B/beta (token term)."""

    params: dict[str, float]
    """The fitted constants: 'E' (irreducible loss), 'A' and 'alpha' (width), 'B' and 'beta' (tokens)."""

    terms: tuple[str, ...]
    """Which terms the law has: ('N',), ('D',) or ('N', 'D')."""

    n: np.ndarray = field(repr=False)
    """Widths of the fitted points (ones for a tokens-only law)."""

    d: np.ndarray = field(repr=False)
    """Token budgets of the fitted points (ones for a width-only law)."""

    loss: np.ndarray = field(repr=False)
    """The fitted losses."""

    rel_rmse: float = float("nan")
    """Root mean squared relative residual of the fit, (pred - L) / L."""

    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Bootstrap confidence intervals per parameter (empty until `bootstrap`)."""

    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """The bootstrap refits' parameters."""

    def predict(self, n_latents: Any = 1.0, tokens: Any = 1.0) -> np.ndarray:
        """The law's loss at widths `n_latents` and budgets `tokens` (broadcast)."""
        p = self.params
        N = np.asarray(n_latents, dtype=np.float64)
        D = np.asarray(tokens, dtype=np.float64)
        out = p["E"] + np.zeros(np.broadcast(N, D).shape)
        if "N" in self.terms:
            out = out + p["A"] * N ** -p["alpha"]
        if "D" in self.terms:
            out = out + p["B"] * D ** -p["beta"]
        return out

    def optimal_width(self, tokens: float) -> float:
        """The width whose last doubling buys as much loss as doubling the tokens would, at a budget of `tokens`:
        where alpha A N^-alpha = beta B D^-beta. Training compute grows as N x D, so along these widths a
        unit of compute is equally well spent on either; wider is compute-wasteful at this budget,
        narrower leaves loss on the table. Needs the 2-D law."""
        self._need_both("optimal_width")
        p = self.params
        if p["A"] <= 0 or p["alpha"] <= 0:
            return float("inf")
        rhs = p["beta"] * p["B"] * float(tokens) ** -p["beta"]
        if rhs <= 0:
            return float("inf")
        return float((p["alpha"] * p["A"] / rhs) ** (1.0 / p["alpha"]))

    def compute_optimal(self, compute: float) -> tuple[float, float]:
        """(N, D) minimising the law subject to N x D = `compute` (SAE training cost grows as width x tokens)."""
        self._need_both("compute_optimal")
        p = self.params
        a, b = p["alpha"], p["beta"]
        # d/dN [A N^-a + B (C/N)^-b] = 0  =>  a A N^-a = b B C^-b N^b
        N = (a * p["A"] / (b * p["B"]) * float(compute) ** b) ** (1.0 / (a + b))
        return float(N), float(compute / N)

    def _need_both(self, what: str) -> None:
        if self.terms != ("N", "D"):
            raise ConfigError(f"{what} needs the 2-D law L(N, D): fit with both n_latents and tokens")

    def summary(self) -> str:
        parts = []
        for k, v in self.params.items():
            lo_hi = self.ci.get(k)
            parts.append(f"{k}={v:.4g}" + (f" [{lo_hi[0]:.3g}, {lo_hi[1]:.3g}]" if lo_hi else ""))
        return ", ".join(parts) + f"; rel. RMSE {self.rel_rmse:.3g} on {self.loss.size} points"

    def __str__(self) -> str:
        law = "L = E" + (" + A/N^alpha" if "N" in self.terms else "") + (" + B/D^beta" if "D" in self.terms else "")
        return f"{law}: {self.summary()}"


def _design(n: np.ndarray, d: np.ndarray, y: np.ndarray, terms: tuple[str, ...], exps_GT: np.ndarray) -> np.ndarray:
    """Columns [1, N^-alpha?, D^-beta?] / L for each candidate exponent row: [G, M, K]."""
    cols = [np.ones((exps_GT.shape[0], y.size))]
    j = 0
    for t, v in (("N", n), ("D", d)):
        if t in terms:
            cols.append(v[None, :] ** -exps_GT[:, j : j + 1])
            j += 1
    return np.stack(cols, 2) / y[None, :, None]  # weights 1/L: relative residuals


def _search(n, d, y, terms, grid_points: int = 32, zooms: int = 12) -> tuple[np.ndarray, tuple[float, ...], float]:
    lo, hi = math.log(EXPONENTS[0]), math.log(EXPONENTS[1])
    ranges = [(lo, hi)] * len(terms)
    best = (None, None, float("inf"))
    for _ in range(zooms + 1):
        axes = [np.linspace(a, b, grid_points) for a, b in ranges]
        exps_GT = np.exp(np.stack([g.reshape(-1) for g in np.meshgrid(*axes, indexing="ij")], 1))
        c, rss = _nnls_batched(_design(n, d, y, terms, exps_GT), np.ones_like(y))
        g = int(np.argmin(rss))
        if rss[g] < best[2]:
            best = (c[g], tuple(float(e) for e in exps_GT[g]), float(rss[g]))
        steps = [(b - a) / (grid_points - 1) for a, b in ranges]
        ranges = [(max(lo, math.log(e) - 2 * s), min(hi, math.log(e) + 2 * s)) for e, s in zip(best[1], steps)]
        grid_points = 9
    return best


def fit_power_law(n_latents: Any = None, loss: Any = None, *, tokens: Any = None) -> PowerLawFit:
    """Fit L = E + A/N^alpha (+ B/D^beta): pass widths, tokens or both with the losses (FVU, 1 - CE recovered...).

    Exponents are searched in [0.01, 4]; E, A, B are kept non-negative. Needs at least one more point
    than parameters; a fit with few points or a narrow range of N or D is weak: read `bootstrap`'s intervals.
    """
    if loss is None:
        raise ConfigError("fit_power_law needs the losses: fit_power_law(n_latents, loss, tokens=...)")
    y = _as_array(loss, "loss")
    terms = tuple(t for t, v in (("N", n_latents), ("D", tokens)) if v is not None)
    if not terms:
        raise ConfigError("fit_power_law needs n_latents, tokens or both")
    n = _as_array(n_latents, "n_latents") if n_latents is not None else np.ones_like(y)
    d = _as_array(tokens, "tokens") if tokens is not None else np.ones_like(y)
    if not (n.size == d.size == y.size):
        raise ConfigError(f"n_latents, tokens and loss must have one value per run; got {n.size}, {d.size}, {y.size}")
    n_params = 1 + 2 * len(terms)
    if y.size <= n_params:
        raise ConfigError(f"a law with {n_params} parameters needs at least {n_params + 1} points, got {y.size}: sweep more widths or budgets")
    if np.any(y <= 0) or np.any(n <= 0) or np.any(d <= 0):
        raise ConfigError("losses, widths and token budgets must all be positive to fit a power law")
    for t, v in (("N", n), ("D", d)):
        if t in terms and np.unique(v).size < 2:
            raise ConfigError(f"all runs share one {'width' if t == 'N' else 'token budget'}: the {t} exponent cannot be fitted")
    c, exps, _ = _search(n, d, y, terms)
    params = {"E": float(c[0])}
    i, ei = 1, iter(exps)
    if "N" in terms:
        params.update(A=float(c[i]), alpha=float(next(ei)))
        i += 1
    if "D" in terms:
        params.update(B=float(c[i]), beta=float(next(ei)))
    fit = PowerLawFit(params, terms, n, d, y)
    fit.rel_rmse = float(np.sqrt(np.mean(((fit.predict(n, d) - y) / y) ** 2)))
    return fit


def bootstrap(fit: PowerLawFit, n: int = 200, *, seed: int = 0, level: float = 0.95) -> PowerLawFit:
    """The same fit with percentile confidence intervals from `n` refits on points resampled with replacement."""
    if not 0 < level < 1:
        raise ConfigError(f"level is a probability in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    m = fit.loss.size
    draws: dict[str, list[float]] = {k: [] for k in fit.params}
    for _ in range(n):
        idx = rng.integers(0, m, m)
        try:
            r = fit_power_law(
                fit.n[idx] if "N" in fit.terms else None, fit.loss[idx], tokens=fit.d[idx] if "D" in fit.terms else None
            )
        except ConfigError:  # a resample with one distinct width or too few points: not fittable, skip it
            continue
        for k, v in r.params.items():
            draws[k].append(v)
    q = (1 - level) / 2
    samples = {k: np.asarray(v) for k, v in draws.items()}
    ci = {k: (float(np.quantile(v, q)), float(np.quantile(v, 1 - q))) for k, v in samples.items() if v.size}
    return replace(fit, ci=ci, samples=samples)


__all__ = ["PowerLawFit", "bootstrap", "fit_power_law"]
