"""Streaming per-feature statistics: one accumulator per statistic, each reading one `LatentBatch` at a
time (`update`) and returning its tensors once the pass is over (`result`). `feature_stats` runs them
side by side over the activation stream.

- `FiringStats`: tokens seen, density (fraction of tokens where a feature fires, act > 0), mean activation
  when firing, max activation.
- `ActivationHistogram`: exact counts of nonzero activations on fixed log2-spaced bins (`HIST_EDGES`).
- `TopContexts`: per feature, the `k` contexts where it peaks highest (a streaming top-k of each context's
  strongest token), each kept as a window of tokens around that token with every token's activation.
  The list is de-duplicated as it streams: a window identical (token for token) to a higher-ranked one
  is left out, and at most `per_document` contexts of one source document are kept, so a document
  repeated in the corpus, or one long document cut into many contexts, cannot fill the list.
- `ContextSample`: a reservoir of `k` contexts where a feature fires (the same top-k on random keys, with
  the same de-duplication: uniform over the distinct windows, at most `per_document` per document).
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

PER_DOCUMENT = 2
"""Default cap on the top (and sampled) contexts drawn from one source document, so that the list shows
a feature across many documents rather than one document's repetitions."""

_HASH_P = 2**31 - 1
_HASH_BASES = (1_000_003, 999_983)


def window_hash(tokens_nW: Tensor) -> Tensor:
    """[n] int64 fingerprint of each window of token ids [n, W]: two polynomial hashes mod 2^31 - 1 side by
    side (no int64 overflow), so equal windows always match and different ones collide with odds ~2^-62."""
    t = tokens_nW.long() + 2  # -1 (outside the text) becomes 1; ids stay positive
    h1 = torch.zeros(t.shape[0], dtype=torch.long)
    h2 = torch.zeros(t.shape[0], dtype=torch.long)
    for w in range(t.shape[1]):
        h1 = (h1 * _HASH_BASES[0] + t[:, w]) % _HASH_P
        h2 = (h2 * _HASH_BASES[1] + t[:, w]) % _HASH_P
    return h1 * (2**31) + h2


def _rank_within(groups_FM: Tensor, valid_FM: Tensor) -> Tensor:
    """For rows already in priority order: each valid entry's rank (0 = first) among the valid entries of
    its row that share its group value, counting in row order; invalid entries get rank -1."""
    F, M = groups_FM.shape
    g = groups_FM.argsort(dim=1, stable=True)  # groups together, priority order kept inside each group
    gs = groups_FM.gather(1, g)
    vs = valid_FM.gather(1, g).long()
    new = torch.ones_like(gs, dtype=torch.bool)
    new[:, 1:] = gs[:, 1:] != gs[:, :-1]
    pos = torch.arange(M).expand(F, M)
    start = torch.where(new, pos, torch.zeros_like(pos)).cummax(dim=1).values
    cs = vs.cumsum(1)
    before = torch.where(start > 0, cs.gather(1, (start - 1).clamp_min(0)), torch.zeros_like(cs))
    rank_sorted = torch.where(vs.bool(), cs - before - 1, torch.full_like(cs, -1))
    return torch.empty_like(rank_sorted).scatter_(1, g, rank_sorted)


def eligible_keys(keys_FM: Tensor, hashes_FM: Tensor, docs_FM: Tensor, per_document: int | None) -> Tensor:
    """`keys_FM` with -inf where a candidate may not enter a feature's list: its window equals that of a
    higher-keyed candidate (`hashes_FM`), or its document (`docs_FM`) already has `per_document`
    higher-keyed candidates that are not duplicates (None: no cap). Ties keep column order."""
    order = keys_FM.argsort(dim=1, descending=True, stable=True)
    k_s = keys_FM.gather(1, order)
    live = torch.isfinite(k_s)
    dup = _rank_within(hashes_FM.gather(1, order), live) > 0
    out_s = torch.where(dup, torch.full_like(k_s, -math.inf), k_s)
    if per_document is not None:
        capped = _rank_within(docs_FM.gather(1, order), live & ~dup) >= per_document
        out_s = torch.where(capped, torch.full_like(k_s, -math.inf), out_s)
    return torch.empty_like(out_s).scatter_(1, order, out_s)


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
    top-k, each with the window (`left` tokens before, `right` after the peak) of tokens and activations.

    De-duplicated as it streams (see `eligible_keys`): a window identical to a higher-ranked one is left
    out, and at most `per_document` contexts come from one document. `context_doc` [N] maps each source
    context to its document (None: every context is its own document, and only identical windows are
    removed).
    """

    name = "top"
    """Prefix of the result's tensor names."""

    def __init__(self, n_features: int, k: int, window: tuple[int, int], *,
                 context_doc: Tensor | None = None, per_document: int | None = PER_DOCUMENT) -> None:
        self.left, self.right = window
        W = self.left + 1 + self.right
        self.values = torch.full((n_features, k), -math.inf)
        self.context = torch.full((n_features, k), -1, dtype=torch.long)
        self.tokens = torch.full((n_features, k, W), -1, dtype=torch.int32)
        self.acts = torch.zeros((n_features, k, W))
        self.hashes = torch.zeros((n_features, k), dtype=torch.long)
        self.doc = torch.full((n_features, k), -1, dtype=torch.long)
        self.context_doc = None if context_doc is None else torch.as_tensor(context_doc, dtype=torch.long)
        self.per_document = per_document

    def _docs(self, context_B: Tensor) -> Tensor:
        """[B] document of each context; -1 - context where unknown (a document of its own)."""
        own = -1 - context_B.long()
        cd = self.context_doc
        if cd is None or len(cd) == 0:
            return own
        inside = context_B < len(cd)
        return torch.where(inside, cd[context_B.clamp(max=len(cd) - 1)], own)

    def update(self, b: LatentBatch) -> None:
        vals_FB = b.peaks[0].T.contiguous()
        keys_FB = self._keys(vals_FB)
        F, K = self.values.shape
        B = vals_FB.shape[1]
        # windows of every firing (feature, context) candidate: their fingerprints decide duplicates
        fire_f, fire_b = torch.isfinite(keys_FB).nonzero(as_tuple=True)
        win_tok, win_acts = b.windows(fire_f, fire_b, self.left, self.right)
        slot_FB = torch.full((F, B), -1, dtype=torch.long)
        slot_FB[fire_f, fire_b] = torch.arange(len(fire_f))
        hash_FB = torch.zeros((F, B), dtype=torch.long)
        hash_FB[fire_f, fire_b] = window_hash(win_tok)
        doc_FB = self._docs(b.context)[None, :].expand(F, B)
        keys = eligible_keys(torch.cat([self._ranks(), keys_FB], dim=1), torch.cat([self.hashes, hash_FB], dim=1),
                             torch.cat([self.doc, doc_FB], dim=1), self.per_document)
        top_keys, sel = keys.topk(K, dim=1)
        live = torch.isfinite(top_keys)
        is_new = (sel >= K) & live
        keep_old = (sel < K) & live
        rows = torch.arange(F)[:, None].expand_as(sel)
        old_j = sel.clamp(max=K - 1)
        r, j = rows[keep_old], old_j[keep_old]
        new_vals = torch.full_like(self.values, -math.inf)
        new_ctx = torch.full_like(self.context, -1)
        new_tok = torch.full_like(self.tokens, -1)
        new_acts = torch.zeros_like(self.acts)
        new_hash = torch.zeros_like(self.hashes)
        new_doc = torch.full_like(self.doc, -1)
        new_vals[keep_old] = self.values[r, j]
        new_ctx[keep_old] = self.context[r, j]
        new_tok[keep_old] = self.tokens[r, j]
        new_acts[keep_old] = self.acts[r, j]
        new_hash[keep_old] = self.hashes[r, j]
        new_doc[keep_old] = self.doc[r, j]
        if bool(is_new.any()):
            f_idx = rows[is_new]
            b_idx = sel[is_new] - K
            s_idx = slot_FB[f_idx, b_idx]
            new_vals[is_new] = vals_FB[f_idx, b_idx]
            new_ctx[is_new] = b.context[b_idx]
            new_tok[is_new], new_acts[is_new] = win_tok[s_idx], win_acts[s_idx]
            new_hash[is_new] = hash_FB[f_idx, b_idx]
            new_doc[is_new] = doc_FB[f_idx, b_idx]
        self.values, self.context, self.tokens, self.acts = new_vals, new_ctx, new_tok, new_acts
        self.hashes, self.doc = new_hash, new_doc
        self._set_ranks(torch.where(live, top_keys, torch.full_like(top_keys, -math.inf)))

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
    (a reservoir), seeded by `seed`, with the same de-duplication."""

    name = "sample"

    def __init__(self, n_features: int, k: int, window: tuple[int, int], seed: int = 0, *,
                 context_doc: Tensor | None = None, per_document: int | None = PER_DOCUMENT) -> None:
        super().__init__(n_features, k, window, context_doc=context_doc, per_document=per_document)
        self.generator = torch.Generator().manual_seed(seed)
        self.ranks = torch.full((n_features, k), -math.inf)

    def _keys(self, vals_FB: Tensor) -> Tensor:
        rnd = torch.rand(vals_FB.shape, generator=self.generator)
        return torch.where(vals_FB > 0, rnd, -math.inf)

    def _ranks(self) -> Tensor:
        return self.ranks

    def _set_ranks(self, top_keys: Tensor) -> None:
        self.ranks = top_keys


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
    "PER_DOCUMENT",
    "ActivationHistogram",
    "ContextSample",
    "CooccurrenceSample",
    "FiringStats",
    "LatentBatch",
    "TopContexts",
    "eligible_keys",
    "window_hash",
]
