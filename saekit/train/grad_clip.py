"""Gradient clipping on the papers' scale.

Anthropic's April 2024 update and dictionary_learning's TopK trainer clip the gradient of the per-token squared error
summed over dimensions at norm 1, on inputs scaled to E||x||^2 = d_in. saekit trains on that error divided by the
batch's total variance (FVU), whose gradient is smaller by the batch's variance per token (about 77 on Gemma 3 270M's
resid_post.6 at that scale), so a clip of 1 on FVU's scale would never engage. `clip_` converts the limit.

The clip matters under Adam even though Adam normalises each coordinate: a batch with outlier tokens has a gradient
many times the typical one, and its square stays in Adam's second moment for about a thousand steps (beta2 0.999),
shrinking every later step. Clipped, each batch counts about equally (BENCHMARKS.md, "Gradient clipping on the
papers' scale").
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..metrics import total_variance
from . import distributed as dd


def limit_on_fvu_scale(max_grad_norm: float, target_BD: Tensor) -> Tensor:
    """The norm on FVU's scale that equals `max_grad_norm` on the papers' (rows / total variance of the batch, as a
    tensor: no host read; averaged over data-parallel ranks so every rank clips alike)."""
    per_token_var = (total_variance(target_BD.detach().float()) / target_BD.shape[0]).reshape(1)
    return max_grad_norm / dd.mean_over_ranks_(per_token_var)[0]


def clip_(params: list[torch.nn.Parameter], max_grad_norm: float, target_BD: Tensor) -> Tensor:
    """Scale the gradients of `params` in place so their global norm is at most `max_grad_norm` on the papers' scale
    (`limit_on_fvu_scale`); `target_BD` is the batch the loss was divided by. Returns the norm before clipping, on
    FVU's scale (a tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads)
    coef = (limit_on_fvu_scale(max_grad_norm, target_BD) / (norm + 1e-12)).clamp(max=1.0)
    torch._foreach_mul_(grads, coef.to(grads[0].dtype))
    return norm
