"""Sparse TopK kernels: encode and decode that touch only the k active latents in the backward pass.

A dense TopK SAE spends most of its step on two [B, F] x [F, D] products that a sparse code does not
need: the decoder (x_hat = latents_BF @ W_dec_FD) and the encoder's weight gradient. With k active
latents of F, both shrink to B*k*D multiply-adds. Only the encoder's forward pre-activation stays dense,
because choosing the top k needs every latent's value.
"""

from __future__ import annotations

import warnings

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
    """out[b, k] = W[idx[b, k]] . v[b]: on the CPU in full precision a sampled product (`_sampled_dots`), elsewhere
    the rows gathered chunk by chunk into one reused buffer (6x faster than gathering all B*K rows at once, 2x
    faster than a fresh buffer per chunk: no page faults)."""
    if W_FD.device.type == "cpu" and W_FD.dtype in (torch.float32, torch.float64) and v_BD.dtype == W_FD.dtype:
        return _sampled_dots(idx_BK, W_FD, v_BD)
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


def _sampled_dots(idx_BK: Tensor, W_FD: Tensor, v_BD: Tensor) -> Tensor:
    """out[b, k] = W[idx[b, k]] . v[b] as a sampled dense product (SDDMM): v @ W.T evaluated only at the B*K
    positions of a CSR pattern whose row b holds idx[b] (in the code's order; a row's indices must be distinct,
    as a top-k's are). Each dot reads its row of W in place: no [B*K, D] gather is written, which made the
    gathering version 9x slower at B 4096, K 32, F 16384 on this CPU (`benchmarks/bench_train_device.py`)."""
    B, K = idx_BK.shape
    crow_N = torch.arange(0, B * K + 1, K, device=idx_BK.device)  # [B + 1]: K entries per row
    with warnings.catch_warnings():  # torch calls its CSR support beta on first use
        warnings.simplefilter("ignore", UserWarning)
        pattern_BF = torch.sparse_csr_tensor(crow_N, idx_BK.reshape(-1), W_FD.new_zeros(B * K),
                                             size=(B, W_FD.shape[0]), check_invariants=False)
        out_BF = torch.sparse.sampled_addmm(pattern_BF, v_BD, W_FD.t(), beta=0.0)
    return out_BF.values().view(B, K)


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


def selection_pre(x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, select_dtype: torch.dtype | None) -> Tensor:
    """The dense pre-activation x @ W_enc.T + b_enc [B, F] that a selection ranks: in full precision (`gemm.linear`),
    or in `select_dtype` (bfloat16) when it is given and differs from x's dtype (the caller then takes the kept
    values from `exact_values`)."""
    if select_dtype is None or select_dtype == x_BD.dtype:
        return linear(x_BD, W_enc_FD, b_enc_F)
    return F.linear(x_BD.to(select_dtype), W_enc_FD.to(select_dtype), b_enc_F.to(select_dtype))


def exact_values(x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, idx_BK: Tensor) -> Tensor:
    """W_enc[idx[b, k]] . x[b] + b_enc[idx[b, k]] in x's precision [B, K]: the chosen latents' pre-activations
    (B*K*D products instead of the selection's B*F*D). A row's indices must be distinct."""
    return _gather_dots(idx_BK, W_enc_FD, x_BD) + b_enc_F[idx_BK]


def rows_of(pre_BF: Tensor, rows: slice | None, dtype: torch.dtype) -> Tensor:
    """A copy of pre's rows `rows` in `dtype` [R, F] (for the pre-activation loss), or an empty tensor for None."""
    if rows is None:
        return pre_BF.new_empty(0, dtype=dtype)
    return pre_BF[rows].to(dtype, copy=True)


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, k: int, select_dtype, rows):
        pre_BF = selection_pre(x_BD, W_enc_FD, b_enc_F, select_dtype)
        vals_BK, idx_BK = pre_BF.topk(k, dim=-1, sorted=False)
        pre_RF = rows_of(pre_BF, rows, x_BD.dtype)
        del pre_BF
        if vals_BK.dtype != x_BD.dtype:  # chosen in reduced precision: the values themselves in full
            vals_BK = exact_values(x_BD, W_enc_FD, b_enc_F, idx_BK)
        acts_BK = vals_BK.relu_()
        ctx.save_for_backward(x_BD, W_enc_FD, idx_BK, acts_BK)
        ctx.mark_non_differentiable(idx_BK, pre_RF)
        return acts_BK, idx_BK, pre_RF

    @staticmethod
    def backward(ctx, grad_acts_BK: Tensor, _grad_idx, _grad_pre):
        x_BD, W_enc_FD, idx_BK, acts_BK = ctx.saved_tensors
        return (*encode_backward(ctx, x_BD, W_enc_FD, idx_BK, acts_BK, grad_acts_BK), None, None, None)


def topk_encode(x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """ReLU(TopK(x @ W_enc.T + b_enc)) as (values [B, k], indices [B, k]); backward touches active rows only."""
    acts_BK, idx_BK, _ = _TopKEncode.apply(x_BD, W_enc_FD, b_enc_F, k, None, None)
    return acts_BK, idx_BK


def topk_encode_train(
    x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, k: int, select_dtype: torch.dtype | None = None, rows: slice | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """`topk_encode` as training uses it: the top k chosen on a `select_dtype` product (`selection_pre`; values
    exact), and also a copy of the pre-activation's rows `rows` [R, F] (empty for None; no gradient), which the
    pre-activation loss takes instead of a product of its own (`pre_act.rows_penalty`)."""
    return _TopKEncode.apply(x_BD, W_enc_FD, b_enc_F, k, select_dtype, rows)


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
