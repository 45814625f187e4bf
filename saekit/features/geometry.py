"""Per-feature quantities that need no corpus pass, or only a sparse sample of one: co-occurrence
(Jaccard of firing sets), nearest features by decoder cosine, and logit effects through the final norm
and unembedding (`saekit.features.unembed`). `saekit.features.feature_stats` calls all three."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .unembed import unembedding

if TYPE_CHECKING:
    from ..lm import Model


def cooccurrence(rows: Tensor, feats: Tensor, F: int, n_rows: int, n_top: int, block: int = 512) -> tuple[Tensor, Tensor]:
    """Top `n_top` co-firing features per feature by Jaccard similarity of their firing token sets.

    (rows, feats) lists every (token, feature) firing; the counts come from a sparse [F, N] x [N, F]
    product computed `block` features at a time, so memory stays O(F x block).
    """
    idx = torch.full((F, n_top), -1, dtype=torch.long)
    jac = torch.zeros(F, n_top)
    active, feats = torch.unique(feats, return_inverse=True)  # work on the features that fired only
    G = len(active)
    k = min(n_top, G - 1)
    if k <= 0:
        return idx, jac
    A_GN = torch.sparse_coo_tensor(torch.stack([feats, rows]), torch.ones(len(rows)), (G, n_rows), check_invariants=False).coalesce()
    n_G = torch.bincount(feats, minlength=G).float()
    for a in range(0, G, block):
        b = min(a + block, G)
        sel = (feats >= a) & (feats < b)
        dense_NB = torch.zeros(n_rows, b - a)
        dense_NB[rows[sel], feats[sel] - a] = 1.0
        both_GB = torch.sparse.mm(A_GN, dense_NB)  # [G, b-a]: tokens where both fire
        j_BG = (both_GB / (n_G[:, None] + n_G[a:b][None, :] - both_GB).clamp_min(1)).T.contiguous()
        j_BG[torch.arange(b - a), torch.arange(a, b)] = -1.0  # not its own neighbour
        v, i = j_BG.topk(k, dim=1)
        idx[active[a:b], :k] = torch.where(v > 0, active[i], -1)
        jac[active[a:b], :k] = v.clamp_min(0)
    return idx, jac


@torch.no_grad()
def decoder_neighbours(sae, n: int = 8, block: int = 2048) -> tuple[Tensor, Tensor]:
    """Nearest features by cosine similarity of decoder directions: (index [F, n], cosine [F, n])."""
    W = sae.W_dec.detach().float().cpu()
    W = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    F = W.shape[0]
    k = min(n, F - 1)
    idx = torch.full((F, n), -1, dtype=torch.long)
    cos = torch.zeros(F, n)
    if k <= 0:
        return idx, cos
    for a in range(0, F, block):
        s = W[a : a + block] @ W.T  # [blk, F]
        s[torch.arange(s.shape[0]), torch.arange(a, a + s.shape[0])] = -2.0
        v, i = s.topk(k, dim=1)
        idx[a : a + block, :k], cos[a : a + block, :k] = i, v
    return idx, cos


@torch.no_grad()
def logit_effects(model: Model, sae, n: int = 10, block: int = 128, progress: bool = True) -> dict[str, Tensor]:
    """Top and bottom `n` output tokens of every decoder direction through the final norm and W_U.

    Returns logit_top_ids / logit_top_values / logit_bottom_ids / logit_bottom_values, each [F, n].
    See `saekit.features.unembed` for how the final norm is applied (Gemma's (1 + weight) gain included).
    """
    U = unembedding(model)
    W = sae.W_dec.detach()
    F = W.shape[0]
    out = {k: [] for k in ("logit_top_ids", "logit_top_values", "logit_bottom_ids", "logit_bottom_values")}
    for a in tqdm(range(0, F, block), desc="logit effects", disable=not progress, leave=False):
        logits = U.logits(W[a : a + block]).float()  # [blk, V]
        tv, ti = logits.topk(n, dim=1)
        bv, bi = logits.topk(n, dim=1, largest=False)
        out["logit_top_ids"].append(ti.to(torch.int32).cpu())
        out["logit_top_values"].append(tv.cpu())
        out["logit_bottom_ids"].append(bi.to(torch.int32).cpu())
        out["logit_bottom_values"].append(bv.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


__all__ = ["cooccurrence", "decoder_neighbours", "logit_effects"]
