"""Synthetic activations with a known answer: a dictionary of unit directions in superposition.

`SyntheticDictionary` draws activations x = sum_i c_i d_i + offset (+ noise) from n_features unit
directions d_i in d dimensions (n_features >> d) with sparse non-negative codes c. The statistics are
meant to resemble a language model's: feature frequencies fall off as a power law (a few features on
for a large share of tokens, a long tail of rare ones), magnitudes are log-normal per occurrence
around a per-feature scale that is itself log-normal, and a large common offset sits on top (residual
streams carry one: `b_dec` must start at the data's median).

An SAE trained on it can be scored against the truth (`recovery`): the fraction of true directions
that some decoder row matches at cosine similarity above a threshold. The tests and
benchmarks/bench_synthetic.py use it as the known-answer check of every training recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ConfigError


@dataclass(frozen=True)
class SyntheticDictionary:
    """The generating process; the same settings and seed always give the same directions and samples."""

    d: int = 64
    """Width of the activations."""

    n_features: int = 1024
    """Number of true features (unit directions); at least 16x `d` makes the superposition hard."""

    mean_active: float = 8.0
    """Mean number of active true features per sample."""

    zipf_exponent: float = 0.7
    """Feature i (0-based) is on with probability proportional to (i + zipf_offset)^-exponent."""

    zipf_offset: float = 10.0
    """Offset of the power law; it caps the most frequent feature's probability."""

    magnitude_sigma: float = 0.15
    """Log-normal spread of the per-feature scales (across features)."""

    occurrence_sigma: float = 0.4
    """Log-normal spread of one feature's magnitude across its occurrences."""

    offset_norm: float = 4.0
    """Norm of the common offset added to every sample, relative to the typical sample's deviation."""

    noise: float = 0.01
    """Standard deviation of isotropic Gaussian noise per coordinate, relative to the deviation's scale."""

    seed: int = 1000
    """Seed of the directions, scales and offset (samples take their own seed)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.d, int) and self.d > 0 and isinstance(self.n_features, int) and self.n_features > 0):
            raise ConfigError(f"SyntheticDictionary needs positive int d and n_features, got d={self.d!r}, n_features={self.n_features!r}")
        if not (0 < self.mean_active < self.n_features):
            raise ConfigError(f"SyntheticDictionary.mean_active must lie in (0, n_features), got {self.mean_active!r}")
        if float(self.frequencies().max()) > 1:
            raise ConfigError(
                f"SyntheticDictionary: mean_active={self.mean_active} asks the most frequent feature to be on with "
                f"probability > 1: raise zipf_offset or lower mean_active"
            )

    def _generator(self, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 7919 + salt)

    def directions(self) -> Tensor:
        """The true features [n_features, d], unit norm."""
        w = torch.randn(self.n_features, self.d, generator=self._generator(1))
        return w / w.norm(dim=-1, keepdim=True)

    def frequencies(self) -> Tensor:
        """Probability that each feature is on in a sample [n_features]; they sum to `mean_active`."""
        p = (torch.arange(self.n_features, dtype=torch.float64) + self.zipf_offset) ** -self.zipf_exponent
        return (p * (self.mean_active / p.sum())).float()

    def scales(self) -> Tensor:
        """Each feature's typical magnitude [n_features] (log-normal, median 1)."""
        return torch.exp(self.magnitude_sigma * torch.randn(self.n_features, generator=self._generator(2)))

    def offset(self) -> Tensor:
        """The common offset [d] every sample carries."""
        v = torch.randn(self.d, generator=self._generator(3))
        typical = math.sqrt(self.mean_active) * float(self.scales().pow(2).mean().sqrt())
        return v / v.norm() * self.offset_norm * typical

    def codes(self, n: int, seed: int = 0) -> Tensor:
        """Sparse non-negative codes [n, n_features] of `n` samples."""
        g = torch.Generator().manual_seed(10_007 * (seed + 1) + self.seed)
        on_NF = torch.rand(n, self.n_features, generator=g) < self.frequencies()
        mag_NF = self.scales() * torch.exp(self.occurrence_sigma * torch.randn(n, self.n_features, generator=g))
        return on_NF * mag_NF

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """Activations [n, d] of `n` samples (drawn in chunks of CHUNK rows, so n may be large)."""
        directions_ND, offset_D = self.directions(), self.offset()
        parts = []
        for i, lo in enumerate(range(0, n, CHUNK)):
            chunk_seed = seed * 100_003 + i
            x_ND = self.codes(min(CHUNK, n - lo), chunk_seed) @ directions_ND
            parts.append(x_ND + self._noise(x_ND, chunk_seed) + offset_D)
        return torch.cat(parts) if parts else torch.empty(0, self.d)

    def sample_with_codes(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """(activations [n, d], their codes [n, n_features]) for n up to CHUNK (the codes are dense)."""
        if n > CHUNK:
            raise ConfigError(f"sample_with_codes keeps dense codes: ask for at most {CHUNK} rows, got {n}")
        codes_NF = self.codes(n, seed * 100_003)
        x_ND = codes_NF @ self.directions()
        return x_ND + self._noise(x_ND, seed * 100_003) + self.offset(), codes_NF

    def _noise(self, x_ND: Tensor, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(31 * (seed + 1) + self.seed)
        scale = float(x_ND.pow(2).sum(-1).mean().sqrt()) / math.sqrt(self.d)
        return self.noise * scale * torch.randn(x_ND.shape, generator=g)


CHUNK = 32_768
"""Rows drawn at a time by `sample` (a chunk's codes are a dense [CHUNK, n_features] matrix)."""


def recovery(W_dec_FD: Tensor, true_ND: Tensor, threshold: float = 0.9) -> tuple[float, float]:
    """(fraction of true directions matched by some decoder row at cosine > threshold, mean best cosine)."""
    W = W_dec_FD.detach().float()
    W = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    best_N = (true_ND.float() @ W.t()).max(-1).values
    return float((best_N > threshold).float().mean()), float(best_N.mean())


__all__ = ["SyntheticDictionary", "recovery"]
