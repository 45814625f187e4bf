"""Feature splitting: match the features of SAEs of different widths on the same hook point and build the
tree from the smallest dictionary to the largest (which feature splits into which, with the scores).

    tree = split_tree([sae_512, sae_1024, sae_4096], acts_ND)      # acts: a shared token sample [N, D]
    tree.children(0, 17)        # DataFrame of feature 17 of level 0's children at level 1, with scores
    tree.descendants(17)        # nested {feature, children: [...]} down to the largest dictionary

Two similarities between a feature i of a smaller SAE and a feature j of a larger one:
- decoder cosine: cos(W_dec[i], W_dec'[j]), the direction each writes (the Scaling Monosemanticity test);
- co-activation: the Pearson correlation of their activations over the shared token sample (do they fire
  on the same tokens, with the same strength).
Each feature of level l+1 gets as parent the level-l feature it is most similar to (by `by`: the decoder
cosine, the co-activation, or their mean 'both'); a parent with two or more children has split. A child
whose best score is below `threshold` gets no parent (a feature new at that width).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from ..errors import FeatureError

BY = ("decoder", "coactivation", "both")


def _decoder(x: Any) -> Tensor:
    """Decoder rows [F, D] of an SAE (its W_dec) or a tensor."""
    W = x.W_dec if hasattr(x, "W_dec") else x
    if not isinstance(W, Tensor) or W.dim() != 2:
        raise FeatureError(f"pass SAEs or decoder matrices [F, D], got {type(x).__name__}")
    return W.detach().float().cpu()


def decoder_cosine(small: Any, large: Any) -> Tensor:
    """[F_small, F_large] cosine similarity between decoder rows."""
    a, b = _decoder(small), _decoder(large)
    if a.shape[1] != b.shape[1]:
        raise FeatureError(f"decoders of width {a.shape[1]} and {b.shape[1]}: match SAEs trained on the same hook point")
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ b.T


def coactivation(latents_a_NF: Tensor, latents_b_NG: Tensor) -> Tensor:
    """[F, G] Pearson correlation of two SAEs' latent activations over the same N tokens (0 where one never fires)."""
    if latents_a_NF.shape[0] != latents_b_NG.shape[0]:
        raise FeatureError("co-activation needs the two SAEs' latents on the same tokens (same number of rows)")
    a, b = latents_a_NF.double(), latents_b_NG.double()
    n = a.shape[0]
    a = a - a.mean(0)
    b = b - b.mean(0)
    cov = a.T @ b / n
    sa, sb = a.pow(2).mean(0).sqrt(), b.pow(2).mean(0).sqrt()
    denom = sa[:, None] * sb[None, :]
    return torch.where(denom > 0, cov / denom.clamp_min(1e-30), torch.zeros_like(cov)).float()


@torch.no_grad()
def _latents(sae: Any, acts_ND: Tensor, batch: int = 4096) -> Tensor:
    return torch.cat([sae.encode(acts_ND[i : i + batch].to(sae.device)).float().cpu() for i in range(0, acts_ND.shape[0], batch)])


@dataclass
class Splits:
    """Matches between consecutive dictionary sizes. `edges` has one row per (level, parent, child)."""

    widths: list[int]
    """Dictionary size of each level, smallest first."""

    edges: Any
    """pandas DataFrame: level (of the parent), parent, child, cosine, coactivation (NaN without a token
    sample), score (what `by` ranks)."""

    by: str = "both"
    """Which similarity chose the parents: 'decoder', 'coactivation' or 'both' (their mean)."""

    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form facts (threshold, sample size)."""

    def children(self, level: int, feature: int):
        """Children at level+1 of `feature` of `level`, best score first (DataFrame)."""
        e = self.edges
        return e[(e.level == level) & (e.parent == feature)].sort_values("score", ascending=False).reset_index(drop=True)

    def descendants(self, feature: int, level: int = 0) -> dict[str, Any]:
        """{'level', 'feature', 'score', 'cosine', 'coactivation', 'children': [...]}, down to the largest level."""
        node: dict[str, Any] = {"level": level, "feature": int(feature), "children": []}
        if level + 1 < len(self.widths):
            for _, r in self.children(level, feature).iterrows():
                child = self.descendants(int(r.child), level + 1)
                child.update(score=float(r.score), cosine=float(r.cosine), coactivation=float(r.coactivation))
                node["children"].append(child)
        return node

    def splits(self, level: int = 0, min_children: int = 2):
        """Parents of `level` with at least `min_children` children: (parent, number of children), most first."""
        e = self.edges[self.edges.level == level]
        counts = e.groupby("parent").size()
        return counts[counts >= min_children].sort_values(ascending=False)


def split_tree(
    saes: Sequence[Any],
    acts_ND: Tensor | None = None,
    *,
    by: str = "both",
    threshold: float = 0.3,
) -> Splits:
    """Match consecutive SAEs of `saes` (sorted by width here) and return the tree.

    `acts_ND`, a token sample of the hook point they read, adds the co-activation score; without it only
    the decoder cosine is available (`by` must then be 'decoder').
    """
    import pandas as pd

    if by not in BY:
        raise FeatureError(f"by={by!r}: choose one of {BY}")
    if len(saes) < 2:
        raise FeatureError("split_tree needs at least two SAEs of different widths")
    if acts_ND is None and by != "decoder":
        raise FeatureError(f"by={by!r} needs a shared token sample: pass acts_ND (activations [N, D]) or by='decoder'")
    saes = sorted(saes, key=lambda s: _decoder(s).shape[0])
    widths = [_decoder(s).shape[0] for s in saes]
    if len(set(widths)) != len(widths):
        raise FeatureError(f"two SAEs share a width ({widths}): match dictionaries of different sizes")
    lat = [_latents(s, acts_ND) for s in saes] if acts_ND is not None else None
    rows = []
    for lvl in range(len(saes) - 1):
        cos = decoder_cosine(saes[lvl], saes[lvl + 1])  # [F_small, F_large]
        co = coactivation(lat[lvl], lat[lvl + 1]) if lat is not None else torch.full_like(cos, float("nan"))
        score = {"decoder": cos, "coactivation": co, "both": (cos + co) / 2}[by]
        best, parent = score.max(0)  # each larger feature's most similar smaller feature
        for child in range(score.shape[1]):
            if best[child] < threshold:
                continue
            p = int(parent[child])
            rows.append({"level": lvl, "parent": p, "child": child, "cosine": float(cos[p, child]),
                         "coactivation": float(co[p, child]), "score": float(best[child])})
    edges = pd.DataFrame(rows, columns=["level", "parent", "child", "cosine", "coactivation", "score"])
    return Splits(widths, edges, by, {"threshold": threshold, "sample_tokens": 0 if acts_ND is None else int(acts_ND.shape[0])})


__all__ = ["Splits", "coactivation", "decoder_cosine", "split_tree"]
