"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"; the Gemma Scope recipe, Lieberum et al. 2024).

    pre_BF = W_enc (x - b_dec) + b_enc        latents_BF = pre * H(pre - theta)        x_hat = latents @ W_dec + b_dec

Each latent has a learned threshold theta (a parameter in input units). The step H has no useful
gradient, so theta learns through straight-through estimators with a rectangle kernel of width
epsilon (`bandwidth`, Gemma Scope: 0.001):

    d/dtheta JumpReLU(z) = -(theta / eps) * rect((z - theta) / eps)       (reconstruction term)
    d/dtheta H(z - theta) = -(1 / eps) * rect((z - theta) / eps)          (L0 term)

while z gets the ordinary gradient H(z - theta) of the JumpReLU and none from the L0 term.

Loss = FVU + lambda(t) * (L0 / target_l0 - 1)^2, with L0 the batch's mean number of active latents:
an L0 penalty *toward a target* (as dictionary_learning's JumpReLU trainer does) rather than Gemma
Scope's one-sided lambda * L0, so one config lands at a chosen sparsity instead of needing a lambda
sweep. lambda (`l0_coefficient`) rises linearly over the first `sparsity_warmup` of training.

Gemma Scope also: inputs scaled so E||x||^2 = d_in, unit-norm decoder rows (gradient projected,
renormalised after each step), W_enc = W_dec^T at init, thresholds kept positive. Departure for short
budgets: theta starts at each latent's (1 - target_l0 / n_latents) quantile of its pre-activations on
the initial sample (not 0.001), so training starts near the target L0 instead of spending thousands
of steps raising thresholds through a kernel 0.001 wide.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import SaeConfig
from ..metrics import fvu, total_variance as total_variance_of
from .base import Sae, SaeOutput
from .sparsity import warmup_factor

INIT_ROWS = 8192
"""Sample rows used to place the initial thresholds (a [rows, F] matrix of pre-activations)."""


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre_BF: Tensor, theta_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_BF, theta_F)
        ctx.bandwidth = bandwidth
        return pre_BF * (pre_BF > theta_F)

    @staticmethod
    def backward(ctx, grad_BF: Tensor):
        pre_BF, theta_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad_BF * (pre_BF > theta_F)
        grad_theta = (-(theta_F / eps) * _rectangle((pre_BF - theta_F) / eps) * grad_BF).sum(0)
        return grad_pre, grad_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre_BF: Tensor, theta_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_BF, theta_F)
        ctx.bandwidth = bandwidth
        return (pre_BF > theta_F).to(pre_BF.dtype)

    @staticmethod
    def backward(ctx, grad_BF: Tensor):
        pre_BF, theta_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = (-(1.0 / eps) * _rectangle((pre_BF - theta_F) / eps) * grad_BF).sum(0)
        return None, grad_theta, None


def jumprelu(pre_BF: Tensor, theta_F: Tensor, bandwidth: float) -> Tensor:
    """pre * H(pre - theta), with the straight-through gradient to theta."""
    return _JumpReLU.apply(pre_BF, theta_F, bandwidth)


def step(pre_BF: Tensor, theta_F: Tensor, bandwidth: float) -> Tensor:
    """H(pre - theta) as floats, with the straight-through gradient to theta (none to pre)."""
    return _Step.apply(pre_BF, theta_F, bandwidth)


class JumpReluSae(Sae, architecture="jumprelu"):
    saelens_architecture = "jumprelu"

    def saelens_fields(self) -> dict:
        return {}

    scale_with_input = ("threshold",)
    required_fields = {"target_l0": "32"}

    def __init__(self, cfg: SaeConfig, *, device=None, seed: int | None = 0) -> None:
        super().__init__(cfg, device=device, seed=seed)
        self.threshold = nn.Parameter(torch.full((cfg.n_latents,), 0.001, device=device, dtype=self.W_enc.dtype))

    def _pre(self, x_BD: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, x_BD - self.b_dec, self.W_enc.t())

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        pre_BF = self._pre(x_BD)
        return pre_BF * (pre_BF > self.threshold), pre_BF.new_empty(0, dtype=torch.long)

    def plain_encoder(self) -> dict:
        return self._plain("threshold", threshold=self.threshold.detach().float().cpu())

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        x_BD = x_BD.to(self.W_enc.dtype)
        pre_BF = self._pre(x_BD)
        latents_BF = jumprelu(pre_BF, self.threshold, self.cfg.bandwidth)
        x_hat_BD = latents_BF @ self.W_dec + self.b_dec
        total_variance = total_variance_of(x_BD)
        fvu_ = fvu(x_BD, x_hat_BD, total_variance)
        l0 = step(pre_BF, self.threshold, self.cfg.bandwidth).sum(-1).mean()
        lam = self.cfg.l0_coefficient * warmup_factor(progress, self.cfg.sparsity_warmup)
        aux = lam * (l0 / self.cfg.target_l0 - 1).pow(2)
        active_BF = latents_BF > 0
        return SaeOutput(
            x_hat_BD, latents_BF, pre_BF.new_empty(0, dtype=torch.long), fvu_, aux, fvu_ + aux,
            active_BF.any(0), l0.detach(),
        )

    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor, target_ND: Tensor | None = None) -> None:
        """`b_dec` at the geometric median, then each threshold at its latent's target-density quantile."""
        super().init_from_data(x_ND)
        x_ND = x_ND[:INIT_ROWS].to(self.device, self.W_enc.dtype)
        pre_NF = self._pre(x_ND)
        n = pre_NF.shape[0]
        keep = max(1, round(n * self.cfg.target_l0 / self.n_latents))  # tokens each latent should fire on
        theta_F = pre_NF.kthvalue(max(1, n - keep), dim=0).values
        self.threshold.copy_(theta_F.clamp_min(self.cfg.bandwidth))

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.threshold.clamp_min_(0.0)


__all__ = ["JumpReluSae", "jumprelu", "step"]
