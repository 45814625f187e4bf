"""Anthropic's pre-activation loss (Circuits Updates, January 2025), the dead-latent remedy of every architecture.

    penalty = mean over tokens b and latents i of  relu(theta_i - pre_bi) * ||W_dec_i||  /  (d_in * sigma)

where sigma = sqrt(total variance / (tokens * d_in)) is the batch's per-coordinate standard deviation (around its
mean). Every pre-activation below the code's threshold theta gets a small gradient toward it, so a latent that the
code never selects still learns (the selection, the step function or the ReLU gives it no reconstruction gradient).
The threshold is the architecture's: JumpReLU's per-latent one, TopK's k-th largest pre-activation of each token,
BatchTopK's batch threshold, and 0 for the gate of a Gated SAE and the pre-activation of a ReLU SAE. The decoder
weight is 1 where the decoder rows are unit norm.

Why this normalisation (Anthropic sum over latents and use raw units):
- Width: the mean over latents keeps a latent's pull, relative to its reconstruction gradient (which scales with
  its firing rate, k / n_latents), the same at every dictionary width. With the sum, the coefficient chosen at 1024
  latents cost 0.104 held-out FVU at 4096 (BatchTopK on Gemma 3 270M resid_post.6) where a quarter of it gave 0.086.
- Scale: the gaps are activations and the FVU is a ratio of squared ones, so the penalty is divided by a length
  (d_in * sigma) rather than by the total variance: scaling the data's spread (or its offset, which sets sigma once
  the trainer normalises E||x||^2 to d_in) leaves the balance between the two terms unchanged. Divided by the total
  variance instead, the same coefficient was ~5x stronger on synthetic data with a large offset (sigma 0.058) than
  on Gemma (sigma ~0.27) and made a 128-latent TopK's FVU rise with more tokens (0.164 -> 0.213).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..gemm import linear


SAMPLE_ROWS = 512
"""TopK-style codes (sparse otherwise) take the loss on at most this many of a batch's rows: the penalty is a weak,
dense regulariser, and on all 4096 rows of a batch it made a 16384-latent TopK step 3.4x slower."""


PRE_ACT_TUNED_K = 16
"""The L0 at which the default pre-activation coefficients were tuned (Gemma 3 270M resid_post.6, 4096 latents)."""


def at_sparsity(default: float, l0: float) -> float:
    """An architecture's default coefficient at L0 `l0`: scaled by min(1, l0 / PRE_ACT_TUNED_K). Below the tuned L0 the
    loss's pull grows relative to a latent's reconstruction gradient (which scales with l0 / n_latents; the loss's with
    1 / n_latents)."""
    return float(default) * min(1.0, float(l0) / PRE_ACT_TUNED_K)


def configured_or_default(cfg, default: float) -> float:
    """The coefficient in use for a penalty code (JumpReLU, ReLU/L1): `cfg.pre_act_coefficient` as given, else the
    architecture's `default` scaled to its L0 (target_l0, else k) by `at_sparsity`."""
    c = cfg.pre_act_coefficient
    if c is not None:
        return float(c)
    return at_sparsity(default, cfg.target_l0 if cfg.target_l0 is not None else cfg.k)


def sample_rows(n_rows: int) -> slice:
    """An even sample of at most SAMPLE_ROWS of n_rows rows (the penalty is a mean over rows, so it needs no rescaling)."""
    return slice(None, None, -(-n_rows // SAMPLE_ROWS))  # stride: ceil(n_rows / SAMPLE_ROWS)


def penalty_scale(total_variance: Tensor, n_rows: int, d_in: int) -> Tensor:
    """d_in * sigma = sqrt(d_in * total_variance / n_rows): the length the gaps are measured in (sigma the batch's
    per-coordinate standard deviation; total_variance summed over its n_rows rows)."""
    return (total_variance * d_in / n_rows).sqrt()


def pre_act_penalty(pre_BF: Tensor, theta: Tensor | float, scale: Tensor, weight_F: Tensor | None = None) -> Tensor:
    """mean_b mean_i relu(theta - pre_bi) (* weight_i) / scale (`penalty_scale`). theta is [F] (per latent), [B, 1]
    (per token), a scalar tensor or a float; weight_F (decoder-row norms) is None for unit-norm decoders."""
    gap_BF = (theta - pre_BF).relu()
    if weight_F is not None:
        gap_BF = gap_BF * weight_F
    return gap_BF.mean() / scale


class _RowsPenalty(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_RD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, pre_RF: Tensor, theta, scale: Tensor, product_dtype):
        below_RF = pre_RF < theta  # where relu(theta - pre) has slope -1
        ctx.save_for_backward(x_RD, W_enc_FD, below_RF, scale)
        ctx.product_dtype = product_dtype
        ctx.theta_dim = theta.dim() if isinstance(theta, Tensor) else 0
        return (theta - pre_RF).relu().mean() / scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        x_RD, W_enc_FD, below_RF, scale = ctx.saved_tensors
        dt = ctx.product_dtype or x_RD.dtype
        g = -grad / (below_RF.numel() * scale)  # d penalty / d pre on the rows below theta
        m_RF = below_RF.to(dt)  # 0/1: exact in any dtype
        grad_x = grad_W = grad_b = grad_theta = None
        if ctx.needs_input_grad[4]:  # a threshold that depends on the rows (relative selection: ratio * ||x - b_dec||)
            below_R1 = below_RF.sum(-1, keepdim=True)
            grad_theta = -g * (below_R1 if ctx.theta_dim == 2 else below_R1.sum())
        if ctx.needs_input_grad[0]:
            grad_x = linear(m_RF, W_enc_FD.to(dt).t()).to(x_RD.dtype) * g  # [R, F] @ [F, D]
        if ctx.needs_input_grad[1]:
            grad_W = linear(m_RF.t(), x_RD.to(dt).t()).to(W_enc_FD.dtype) * g  # [F, R] @ [R, D]
        if ctx.needs_input_grad[2]:
            grad_b = below_RF.sum(0).to(W_enc_FD.dtype) * g
        return grad_x, grad_W, grad_b, None, grad_theta, None, None


def rows_penalty(
    x_RD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, pre_RF: Tensor, theta: Tensor | float, scale: Tensor,
    product_dtype: torch.dtype | None = None,
) -> Tensor:
    """`pre_act_penalty(x @ W_enc.T + b_enc, theta, scale)` for rows x whose pre-activation `pre_RF` the encoder
    already computed (`kernels.topk_encode_train`), with the gradients to x, W_enc and b_enc of that expression:
    no product of its own forward, and backward two products with the 0/1 mask of the entries below theta (in
    `product_dtype`, bfloat16 where the selection ran in it; None: x's dtype). A theta that carries a gradient (a
    per-token [R, 1] threshold computed from the rows) gets its own. Unit-norm decoders only (no weight)."""
    return _RowsPenalty.apply(x_RD, W_enc_FD, b_enc_F, pre_RF, theta, scale, product_dtype)


__all__ = ["PRE_ACT_TUNED_K", "SAMPLE_ROWS", "at_sparsity", "configured_or_default", "penalty_scale", "pre_act_penalty", "rows_penalty", "sample_rows"]
