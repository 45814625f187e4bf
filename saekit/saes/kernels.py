"""Sparse TopK kernels: encode and decode that touch only the k active latents in the backward pass.

A dense TopK SAE spends most of its step on two [B, F] x [F, D] products that a sparse code does not
need: the decoder (x_hat = latents_BF @ W_dec_FD) and the encoder's weight gradient. With k active
latents of F, both shrink to B*k*D multiply-adds. Only the encoder's forward pre-activation stays dense,
because choosing the top k needs every latent's value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..gemm import linear

def _scatter_rows(idx_BK: Tensor, coef_BK: Tensor, rows_BD: Tensor, n_latents: int) -> Tensor:
    """Return out_FD with out[f] = sum over (b, k) with idx[b, k] == f of coef[b, k] * rows[b]."""
    B, K = idx_BK.shape
    # a sparse [F, B] matrix with B*K non-zeros times the dense [B, D] rows
    col_N = torch.arange(B, device=idx_BK.device).repeat_interleave(K)  # [B*K]
    sparse_FB = torch.sparse_coo_tensor(
        torch.stack([idx_BK.reshape(-1), col_N]),
        coef_BK.reshape(-1).to(rows_BD.dtype),
        size=(n_latents, B),
        check_invariants=False,
    )
    return torch.sparse.mm(sparse_FB, rows_BD)


def _gather_dots(idx_BK: Tensor, W_FD: Tensor, v_BD: Tensor, chunk: int = 64) -> Tensor:
    """out[b, k] = W[idx[b, k]] . v[b], the rows gathered chunk by chunk into one reused buffer (6x faster than
    gathering all B*K rows at once, 2x faster than a fresh buffer per chunk: no page faults)."""
    B, K = idx_BK.shape
    D = W_FD.shape[1]
    out_BK = torch.empty(B, K, dtype=W_FD.dtype, device=v_BD.device)
    rows_buf = torch.empty(min(chunk, B) * K, D, dtype=W_FD.dtype, device=W_FD.device)
    for s in range(0, B, chunk):
        idx_N = idx_BK[s : s + chunk].reshape(-1)
        rows_ND = torch.index_select(W_FD, 0, idx_N, out=rows_buf[: idx_N.numel()])
        v_b1D = v_BD[s : s + chunk].unsqueeze(-1).to(W_FD.dtype)
        out_BK[s : s + chunk] = torch.bmm(rows_ND.view(-1, K, D), v_b1D).squeeze(-1)  # [b, K, D] @ [b, D, 1]
    return out_BK.to(torch.promote_types(W_FD.dtype, v_BD.dtype))


def encode_backward(ctx, x_BD, W_enc_FD, idx_BK, acts_BK, grad_acts_BK):
    """Gradients (x, W_enc, b_enc) of a sparse code (acts, idx): the backward of TopK-style encoders."""
    g_BK = grad_acts_BK * (acts_BK > 0)
    grad_x = grad_W = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = F.embedding_bag(idx_BK, W_enc_FD, per_sample_weights=g_BK.to(W_enc_FD.dtype), mode="sum")
    if ctx.needs_input_grad[1]:
        grad_W = _scatter_rows(idx_BK, g_BK, x_BD, W_enc_FD.shape[0])
    if ctx.needs_input_grad[2]:
        grad_b = torch.zeros(W_enc_FD.shape[0], dtype=g_BK.dtype, device=g_BK.device)
        grad_b.index_add_(0, idx_BK.reshape(-1), g_BK.reshape(-1))
    return grad_x, grad_W, grad_b


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, k: int):
        pre_BF = linear(x_BD, W_enc_FD, b_enc_F)
        vals_BK, idx_BK = pre_BF.topk(k, dim=-1, sorted=False)
        del pre_BF
        acts_BK = vals_BK.relu_()
        ctx.save_for_backward(x_BD, W_enc_FD, idx_BK, acts_BK)
        ctx.mark_non_differentiable(idx_BK)
        return acts_BK, idx_BK

    @staticmethod
    def backward(ctx, grad_acts_BK: Tensor, _grad_idx):
        x_BD, W_enc_FD, idx_BK, acts_BK = ctx.saved_tensors
        return (*encode_backward(ctx, x_BD, W_enc_FD, idx_BK, acts_BK, grad_acts_BK), None)


def topk_encode(x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """ReLU(TopK(x @ W_enc.T + b_enc)) as (values [B, k], indices [B, k]); backward touches active rows only."""
    return _TopKEncode.apply(x_BD, W_enc_FD, b_enc_F, k)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, acts_BK: Tensor, idx_BK: Tensor, W_dec_FD: Tensor):
        ctx.save_for_backward(acts_BK, idx_BK, W_dec_FD)
        return F.embedding_bag(idx_BK, W_dec_FD, per_sample_weights=acts_BK.to(W_dec_FD.dtype), mode="sum")

    @staticmethod
    def backward(ctx, grad_out_BD: Tensor):
        acts_BK, idx_BK, W_dec_FD = ctx.saved_tensors
        grad_acts = grad_W = None
        if ctx.needs_input_grad[0]:
            # d x_hat[b] / d acts[b, k] = W_dec[idx[b, k]]: k dot products per row, no [B, F] product
            grad_acts = _gather_dots(idx_BK, W_dec_FD, grad_out_BD).to(acts_BK.dtype)
        if ctx.needs_input_grad[2]:
            grad_W = _scatter_rows(idx_BK, acts_BK, grad_out_BD, W_dec_FD.shape[0])
        return grad_acts, None, grad_W


def sparse_decode(acts_BK: Tensor, idx_BK: Tensor, W_dec_FD: Tensor) -> Tensor:
    """sum_k acts[b, k] * W_dec[idx[b, k]] as [B, D], without forming the [B, F] latent matrix."""
    return _SparseDecode.apply(acts_BK, idx_BK, W_dec_FD)


def dense_decode(acts_BK: Tensor, idx_BK: Tensor, W_dec_FD: Tensor) -> Tensor:
    """The reference: scatter into [B, F] and multiply by W_dec (benchmarks and tests only)."""
    latents_BF = acts_BK.new_zeros(acts_BK.shape[0], W_dec_FD.shape[0]).scatter(-1, idx_BK, acts_BK)
    return latents_BF @ W_dec_FD
