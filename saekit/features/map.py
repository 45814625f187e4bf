"""A 2-D map of an SAE's decoder directions, and per-feature colourings for it.

    xy = map_coordinates(sae)                         # [F, 2]: PCA of the unit decoder rows (built in)
    xy = map_coordinates(sae, method="umap", seed=0)  # UMAP on cosine distance (pip install 'saekit[umap]')
    label, share = dominant_label(latents_NF, source_N, n_labels=3)   # e.g. each feature's main language

PCA is exact (an eigendecomposition of the D x D covariance of the unit decoder rows), with each axis's
sign fixed so that its largest loading is positive: the same SAE always gives the same map. UMAP takes
`seed` as its random_state (and then runs single-threaded, which is what makes it reproducible).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import FeatureError

METHODS = ("pca", "umap")


def _unit_rows(sae_or_W: Any) -> Tensor:
    W = sae_or_W.W_dec if hasattr(sae_or_W, "W_dec") else sae_or_W
    if not isinstance(W, Tensor) or W.dim() != 2:
        raise FeatureError(f"map_coordinates takes an SAE or decoder rows [F, D], got {type(sae_or_W).__name__}")
    W = W.detach().double().cpu()
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


def map_coordinates(sae: Any, *, method: str = "pca", seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> Tensor:
    """[F, 2] float32 coordinates of the decoder directions ('pca', or 'umap' with umap-learn installed)."""
    if method not in METHODS:
        raise FeatureError(f"method={method!r}: choose 'pca' (built in) or 'umap' (pip install 'saekit[umap]')")
    W_FD = _unit_rows(sae)
    if method == "pca":
        X = W_FD - W_FD.mean(0)
        evals, evecs = torch.linalg.eigh(X.T @ X)  # ascending
        comps_D2 = evecs[:, [-1, -2]]
        signs = torch.sign(comps_D2.gather(0, comps_D2.abs().argmax(0, keepdim=True)))
        return (X @ (comps_D2 * signs)).float()
    try:
        import umap  # optional extra
    except ImportError:
        raise FeatureError("method='umap' needs umap-learn: pip install 'saekit[umap]' (or umap-learn); method='pca' needs nothing") from None
    reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed)
    return torch.from_numpy(reducer.fit_transform(W_FD.float().numpy())).float()


def dominant_label(latents_NF: Tensor, labels_N: Tensor, n_labels: int | None = None) -> tuple[Tensor, Tensor]:
    """Each feature's dominant label by activation mass over a token sample, and that label's share of it.

    `labels_N` holds an integer label per token (e.g. 0 en, 1 es, 2 fr, 3 code). Returns (label [F] int64,
    share [F] float in [0, 1]); features that never fire get label -1 and share 0. Shares are of raw mass: a
    label with more tokens in the sample wins more often, so pass a sample balanced across labels.
    """
    if latents_NF.dim() != 2 or labels_N.shape != latents_NF.shape[:1]:
        raise FeatureError(f"latents [N, F] and one label per token [N] expected, got {tuple(latents_NF.shape)} and {tuple(labels_N.shape)}")
    labels_N = labels_N.long()
    n = int(n_labels if n_labels is not None else labels_N.max() + 1)
    mass_LF = torch.zeros(n, latents_NF.shape[1], dtype=torch.float64)
    mass_LF.index_add_(0, labels_N, latents_NF.double().clamp_min(0))
    total_F = mass_LF.sum(0)
    share_F, label_F = mass_LF.max(0)
    share_F = torch.where(total_F > 0, share_F / total_F.clamp_min(1e-30), torch.zeros_like(share_F))
    label_F = torch.where(total_F > 0, label_F, torch.full_like(label_F, -1))
    return label_F, share_F.float()


__all__ = ["METHODS", "dominant_label", "map_coordinates"]
