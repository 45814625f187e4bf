"""Next-token scores from final hidden states, the unembedding applied in vocabulary chunks.

The 262k-token head of Gemma 3 makes logits the largest tensors of an evaluation ([N, V] floats per run).
`head_scores` never holds them: it multiplies the hidden states of every run by one slice of the
unembedding at a time and keeps running (online) sums per row, so memory stays bounded by one chunk
([R * N, chunk] floats) whatever the vocabulary. Per row and run it returns the next-token NLL
(logsumexp - target logit) and, against run 0 (the clean run), KL(clean || run):

    KL = sum_v p0_v (z0_v - zr_v) + lse_r - lse_0,   sum_v p0_v (z0_v - zr_v) = A / s0,

with s0 = sum exp(z0 - m0) and A = sum exp(z0 - m0) (z0 - zr) rescaled whenever the running maximum m0
moves (the streaming softmax of Milakov & Gimelshein 2018). Plain torch; the readable reference is
`torch.log_softmax` over whole logits (`in_trace.compare_logits`), which the tests compare against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..gemm import linear

CHUNK_BYTES = 8 * 2**20
"""Bytes of float32 logits held at once (all runs' rows times one vocabulary chunk). 8 MB measured 18% faster than
32 MB for 3 x 508 rows on the CPU (fresh buffers over glibc's mmap threshold pay page faults every chunk)."""


def head_scores(
    hidden_RND: Tensor,
    W_VD: Tensor,
    b_V: Tensor | None,
    target_N: Tensor,
    *,
    softcap: float | None = None,
    kl: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, Tensor]:
    """{'nll' [R, N]} (and with `kl`, 'kl' [R, N]: KL(run 0 || run r), zero for r = 0) of the next tokens
    `target_N` given R runs' final hidden states [R, N, D] and the unembedding W [V, D] (bias [V] or None;
    `softcap`: logits -> tanh(logits / cap) * cap, Gemma 2's final soft-capping). Float64 results.
    `target_N` may also be [N, K], K candidate next tokens per row: 'nll' is then [R, N, K], each from the same
    log-sum-exp (one pass over the vocabulary whatever K)."""
    K = target_N.shape[1] if target_N.dim() == 2 else 0
    R, N, D = hidden_RND.shape
    V = W_VD.shape[0]
    dev = hidden_RND.device
    h = hidden_RND.reshape(R * N, D).to(W_VD.dtype)
    chunk = max(256, min(V, chunk_bytes // max(4 * R * N, 1)))
    m = torch.full((R, N), -torch.inf, device=dev, dtype=torch.float32)
    s = torch.zeros(R, N, device=dev, dtype=torch.float64)
    A = torch.zeros(R, N, device=dev, dtype=torch.float64)
    target = target_N.to(dev).view(N, max(K, 1))  # [N, K]
    z_target = torch.zeros(R, N, target.shape[1], device=dev, dtype=torch.float32)
    for v0 in range(0, V, chunk):
        v1 = min(V, v0 + chunk)
        z = linear(h, W_VD[v0:v1], None if b_V is None else b_V[v0:v1])
        if softcap is not None:
            z = torch.tanh(z / softcap) * softcap
        z = z.float().view(R, N, v1 - v0)
        m_new = torch.maximum(m, z.amax(-1))
        rescale = torch.exp(m - m_new).double()
        e = torch.exp(z - m_new[..., None])
        s = s * rescale + e.sum(-1).double()
        if kl and R > 1:
            d = z[:1] - z[1:]  # [R-1, N, Vc]: z0 - zr
            A[1:] = A[1:] * rescale[:1] + (e[:1] * d).sum(-1).double()
        m = m_new
        inside = (target >= v0) & (target < v1)  # no `if inside.any()`: that would sync a GPU per chunk
        idx = (target - v0).clamp(0, v1 - v0 - 1)
        picked = z.gather(-1, idx.expand(R, N, idx.shape[1]))
        z_target = torch.where(inside, picked, z_target)
    lse = m.double() + s.log()
    nll = lse[..., None] - z_target.double()
    out = {"nll": nll if K else nll.squeeze(-1)}
    if kl:
        out["kl"] = A / s[:1] + lse - lse[:1]
        out["kl"][0] = 0.0
    return out


__all__ = ["CHUNK_BYTES", "head_scores"]
