"""Streaming per-feature statistics: one accumulator per statistic, each reading one `LatentBatch` at a
time (`update`) and returning its tensors once the pass is over (`result`). `feature_stats` runs them
side by side over the activation stream.

- `FiringStats`: tokens seen, density (fraction of tokens where a feature fires, act > 0), mean activation
  when firing, max activation.
- `ActivationHistogram`: exact counts of nonzero activations on fixed log2-spaced bins (`HIST_EDGES`).
- `TopContexts`: per feature, the `k` contexts where it peaks highest (a streaming top-k of each context's
  strongest token), each kept as a window of tokens around that token with every token's activation.
- `ContextSample`: a uniform reservoir of `k` contexts where a feature fires (the same top-k on random keys).
- `CooccurrenceSample`: the (token, feature) firings of the first `max_tokens` tokens, sparse, for the
  Jaccard similarity of firing sets (`geometry.cooccurrence`).

Memory is fixed by features x each accumulator's own size, except the co-occurrence sample, which grows
with its capped number of tokens x L0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from ..stream import ActivationBatch
from .geometry import cooccurrence

HIST_EDGES = 2.0 ** torch.arange(-10, 16.01, 0.25)
"""Histogram bin edges shared by every feature: 4 bins per octave from 2^-10 to 2^16 (activations
below the first edge go to the first bin, above the last to the last)."""


@dataclass
class LatentBatch:
    """SAE latents of one batch of contexts on their [B, T] grid: what every accumulator reads."""

    z: Tensor
    """[B, T, F] latents, 0 at the positions left out (separator, padding)."""
    token_ids: Tensor
    """[B, T] token ids (-1 where unknown)."""
    keep: Tensor
    """[B, T] bool: the positions that count."""
    context: Tensor
    """[B] index of each context in the source."""

    @classmethod
    def encode(cls, sae: Any, batch: ActivationBatch, hookpoint: str) -> "LatentBatch":
        """Encode a stream batch's rows at `hookpoint` with `sae` (on the SAE's device), latents on the CPU."""
        x_nD = batch.acts[hookpoint].to(sae.device).float()
        with torch.no_grad():
            z_nF = sae.encode(x_nD).float().cpu()
        return cls(batch.grid(z_nF), batch.input_ids, batch.keep, batch.context)

    @property
    def n_tokens(self) -> int:
        return int(self.keep.sum())

    @cached_property
    def firings(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every (flat token index into B*T, feature, activation) where a feature fires."""
        B, T, F = self.z.shape
        t_i, f_i = (self.z > 0).reshape(B * T, F).nonzero(as_tuple=True)
        return t_i, f_i, self.z.reshape(B * T, F)[t_i, f_i]

    @cached_property
    def peaks(self) -> tuple[Tensor, Tensor]:
        """Each context's strongest activation per feature and its position: ([B, F], [B, F])."""
        return self.z.max(1)

    def windows(self, f_idx: Tensor, b_idx: Tensor, left: int, right: int) -> tuple[Tensor, Tensor]:
        """Token ids (int32, -1 outside the kept text) and feature activations [n, left + 1 + right] around
        the peak of feature `f_idx[i]` in context `b_idx[i]`."""
        T = self.z.shape[1]
        p = self.peaks[1][b_idx, f_idx][:, None] + torch.arange(-left, right + 1)  # [n, W]
        ok = (p >= 0) & (p < T)
        pc = p.clamp(0, T - 1)
        b2 = b_idx[:, None].expand_as(pc)
        ok &= self.keep[b2, pc]
        tok = torch.where(ok, self.token_ids[b2, pc], -1).to(torch.int32)
        acts = torch.where(ok, self.z[b2, pc, f_idx[:, None].expand_as(pc)], 0.0)
        return tok, acts


class FiringStats:
    """Tokens seen, and per feature: how often it fires, its mean activation when firing, its maximum."""

    def __init__(self, n_features: int) -> None:
        self.n_tokens = 0
        self.count = torch.zeros(n_features, dtype=torch.long)
        self.total = torch.zeros(n_features, dtype=torch.float64)
        self.max = torch.zeros(n_features)

    def update(self, b: LatentBatch) -> None:
        self.n_tokens += b.n_tokens
        self.count += (b.z > 0).sum((0, 1))
        self.total += b.z.sum((0, 1), dtype=torch.float64)
        self.max = torch.maximum(self.max, b.z.amax((0, 1)))

    def result(self) -> dict[str, Tensor]:
        """density, mean_act (0 for a feature that never fired), max_act: each [F]."""
        return {
            "density": (self.count.double() / max(self.n_tokens, 1)).float(),
            "mean_act": torch.where(self.count > 0, self.total / self.count.clamp_min(1), 0.0).float(),
            "max_act": self.max,
        }


class ActivationHistogram:
    """Per feature, exact counts of its nonzero activations on the shared bins `edges` (no second pass)."""

    def __init__(self, n_features: int, edges: Tensor = HIST_EDGES) -> None:
        self.edges = edges
        self.hist = torch.zeros(n_features, len(edges) - 1, dtype=torch.int32)

    def update(self, b: LatentBatch) -> None:
        _, f_i, v = b.firings
        n_bins = self.hist.shape[1]
        bins = (torch.bucketize(v, self.edges) - 1).clamp(0, n_bins - 1)
        self.hist.view(-1).index_add_(0, f_i * n_bins + bins, torch.ones_like(bins, dtype=torch.int32))

    def result(self) -> dict[str, Tensor]:
        """hist [F, bins]."""
        return {"hist": self.hist}


class TopContexts:
    """Per feature, the `k` contexts with the strongest peak activation, strongest kept by a streaming
    top-k, each with the window (`left` tokens before, `right` after the peak) of tokens and activations."""

    name = "top"
    """Prefix of the result's tensor names."""

    def __init__(self, n_features: int, k: int, window: tuple[int, int]) -> None:
        self.left, self.right = window
        W = self.left + 1 + self.right
        self.values = torch.full((n_features, k), -math.inf)
        self.context = torch.full((n_features, k), -1, dtype=torch.long)
        self.tokens = torch.full((n_features, k, W), -1, dtype=torch.int32)
        self.acts = torch.zeros((n_features, k, W))

    def update(self, b: LatentBatch) -> None:
        vals_FB = b.peaks[0].T.contiguous()
        keys_FB = self._keys(vals_FB)
        keys_FK = self._ranks()
        K = self.values.shape[1]
        top_keys, sel = torch.cat([keys_FK, keys_FB], dim=1).topk(K, dim=1)
        is_new = (sel >= K) & torch.isfinite(top_keys)
        keep_old = sel < K
        rows = torch.arange(self.values.shape[0])[:, None].expand_as(sel)
        old_j = sel.clamp(max=K - 1)
        r, j = rows[keep_old], old_j[keep_old]
        new_vals = torch.full_like(self.values, -math.inf)
        new_ctx = torch.full_like(self.context, -1)
        new_tok = torch.full_like(self.tokens, -1)
        new_acts = torch.zeros_like(self.acts)
        new_vals[keep_old] = self.values[r, j]
        new_ctx[keep_old] = self.context[r, j]
        new_tok[keep_old] = self.tokens[r, j]
        new_acts[keep_old] = self.acts[r, j]
        if bool(is_new.any()):
            f_idx = rows[is_new]
            b_idx = sel[is_new] - K
            new_vals[is_new] = vals_FB[f_idx, b_idx]
            new_ctx[is_new] = b.context[b_idx]
            new_tok[is_new], new_acts[is_new] = b.windows(f_idx, b_idx, self.left, self.right)
        self.values, self.context, self.tokens, self.acts = new_vals, new_ctx, new_tok, new_acts
        self._set_ranks(top_keys)

    def _keys(self, vals_FB: Tensor) -> Tensor:
        """Rank of each (feature, context) candidate; -inf where the feature does not fire."""
        return torch.where(vals_FB > 0, vals_FB, -math.inf)

    def _ranks(self) -> Tensor:
        """Ranks of the kept candidates [F, k]: their values (a top-k)."""
        return self.values

    def _set_ranks(self, top_keys: Tensor) -> None:
        pass

    def result(self) -> dict[str, Tensor]:
        """{name}_values [F, k] (0 in empty slots), {name}_context [F, k] (-1 in empty slots),
        {name}_tokens [F, k, W] (-1 outside the text), {name}_acts [F, k, W]."""
        n = self.name
        return {
            f"{n}_values": torch.where(torch.isfinite(self.values), self.values, 0.0),
            f"{n}_context": self.context,
            f"{n}_tokens": self.tokens,
            f"{n}_acts": self.acts,
        }


class ContextSample(TopContexts):
    """A uniform sample of `k` contexts where each feature fires: `TopContexts` ranked by random keys
    (a reservoir), seeded by `seed`."""

    name = "sample"

    def __init__(self, n_features: int, k: int, window: tuple[int, int], seed: int = 0) -> None:
        super().__init__(n_features, k, window)
        self.generator = torch.Generator().manual_seed(seed)
        self.ranks = torch.full((n_features, k), -math.inf)

    def _keys(self, vals_FB: Tensor) -> Tensor:
        rnd = torch.rand(vals_FB.shape, generator=self.generator)
        return torch.where(vals_FB > 0, rnd, -math.inf)

    def _ranks(self) -> Tensor:
        return self.ranks

    def _set_ranks(self, top_keys: Tensor) -> None:
        self.ranks = torch.where(torch.isfinite(top_keys), top_keys, torch.full_like(top_keys, -math.inf))


class CooccurrenceSample:
    """Which features fire together: the (token, feature) firings of the first `max_tokens` kept tokens,
    kept sparse, then each feature's `n_top` most co-firing features by Jaccard similarity."""

    def __init__(self, n_features: int, max_tokens: int, n_top: int) -> None:
        self.n_features, self.max_tokens, self.n_top = n_features, max_tokens, n_top
        self.rows: list[Tensor] = []
        self.feats: list[Tensor] = []
        self.n_tokens = 0

    def update(self, b: LatentBatch) -> None:
        if self.n_tokens >= self.max_tokens:
            return
        t_i, f_i, _ = b.firings
        kept_rows = b.keep.reshape(-1).nonzero().squeeze(-1)[: self.max_tokens - self.n_tokens]
        row_of = torch.full((b.keep.numel(),), -1, dtype=torch.long)  # flat token index -> sample row
        row_of[kept_rows] = torch.arange(len(kept_rows)) + self.n_tokens
        m = row_of[t_i] >= 0
        self.rows.append(row_of[t_i][m])
        self.feats.append(f_i[m])
        self.n_tokens += len(kept_rows)

    def result(self) -> dict[str, Tensor]:
        """cooc_index [F, n_top] (-1 where none), cooc_jaccard [F, n_top]; {} when nothing was sampled."""
        if not self.rows:
            return {}
        idx, jac = cooccurrence(torch.cat(self.rows), torch.cat(self.feats), self.n_features, self.n_tokens, self.n_top)
        return {"cooc_index": idx, "cooc_jaccard": jac}


__all__ = [
    "HIST_EDGES",
    "ActivationHistogram",
    "ContextSample",
    "CooccurrenceSample",
    "FiringStats",
    "LatentBatch",
    "TopContexts",
]
