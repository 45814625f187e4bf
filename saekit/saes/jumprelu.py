"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"; the Gemma Scope recipe, Lieberum et al. 2024).

    pre_BF = W_enc (x - b_dec) + b_enc        latents_BF = pre * H(pre - theta)        x_hat = latents @ W_dec + b_dec

Each latent has a learned threshold theta (a parameter in input units). The step H has no useful
gradient, so theta learns through straight-through estimators with a rectangle kernel of width
epsilon (`bandwidth`, Gemma Scope: 0.001):

    d/dtheta JumpReLU(z) = -(theta / eps) * rect((z - theta) / eps)       (reconstruction term)
    d/dtheta H(z - theta) = -(1 / eps) * rect((z - theta) / eps)          (L0 term)

while z gets the ordinary gradient H(z - theta) of the JumpReLU and none from the L0 term.

Loss = FVU + lambda(t) * L0 + AuxK, with L0 the batch's mean number of active latents (Gemma Scope's
one-sided L0 penalty, on the FVU scale of every saekit objective). lambda (`l0_coefficient`) rises
linearly over the first `sparsity_warmup` of training; with `target_l0` set it is then steered by the
target-L0 controller (`sparsity.py`), so the run ends at the asked-for L0 and `l0_coefficient` is only
the starting value. AuxK (`Sae.dead_latent_loss`) gives dead latents a gradient (the step function
gives an inactive latent's encoder none).

Dead latents: a latent whose pre-activations all sit below its threshold gets no reconstruction gradient
(the step blocks it) and no threshold gradient (nothing falls in the kernel); AuxK moves its encoder, and
the pre-activation loss (Anthropic's January 2025 update, `pre_act_penalty`; on by default, below) pulls every
pre-activation below its threshold up toward it.

Gemma Scope also: inputs scaled so E||x||^2 = d_in, unit-norm decoder rows (gradient projected,
renormalised after each step), W_enc = W_dec^T at init, thresholds kept positive. Departures, both
measured on the synthetic benchmark (benchmarks/bench_synthetic.py):
- the encoder starts at `encoder_init_scale` (0.1) x W_dec^T. At full scale the latents that open at the first
  step are random projections whose sum overshoots the input (the reconstruction is several times
  the data's variance), the first updates push every active pre-activation below its threshold, and
  L0 collapsed from 4 to 0.3 within 50 steps (FVU 0.92 at the end); at 0.1 the run starts under-
  shooting and L0 follows the controller.
- theta starts at each latent's (1 - target_l0 / n_latents) quantile of its pre-activations on the
  initial sample (not 0.001), so training starts near the target L0 instead of spending thousands
  of steps raising thresholds through a kernel 0.001 wide.

TopK warm-up (`SaeConfig.topk_warmup`, default 0.9; 0 gives the Gemma Scope recipe): the first 90% of training keeps
the round(target_l0) largest pre-activations of each token, as TopK does (FVU + AuxK, no L0 term, the encoder starting
at `Sae.warmup_encoder_init_scale`), and sets every threshold to that batch's threshold; the JumpReLU code, its L0
penalty and the pre-activation loss take over after it, with the thresholds starting there. The trained SAE is a
JumpReLU SAE in every respect (per-latent thresholds, calibrated to the target L0). Why: trained with its own code from
the first step, JumpReLU recovered 19.5% of the synthetic dictionary (d 32, 512 features, 1024 latents, L0 4, 1M
samples; `benchmarks/bench_synthetic.py`) where TopK recovered 93%; the thresholds learn slowly through a narrow kernel
while the encoder moves fast. With the warm-up it recovers 95.7%, but its held-out FVU there is 0.450 (the recipe's:
0.329): at the switch the latents TopK never selected sit above any common threshold on long tokens (the batch FVU
jumps to ~2 and the training L0 falls to ~1 before it climbs back), so the short JumpReLU phase ends with a decoder
tuned to fewer latents than inference uses. On Gemma 3 270M resid_post.6 (4096 latents, 1M tokens,
`benchmarks/bench_frontier.py`): BENCHMARKS.md, "JumpReLU's new default". Warm-up 0.8 at the earlier encoder scale
(0.1) and a pre-activation loss that also reached the thresholds gave held-out FVU / CE-loss recovered / dead 0.071 /
0.960 / 3.6% at L0 16, 0.050 / 0.977 / 0.5% at 32 and 0.035 / 0.985 / 0.0% at 64, against the recipe's 0.069 / 0.969 /
3.6%, 0.058 / 0.974 / 2.0% and 0.052 / 0.975 / 0.3% (TopK: 0.068 / 0.966, 0.047 / 0.982, 0.033 / 0.986); for two passes
(2M tokens, L0 32) 0.048 / 0.979 / 0.9% dead where the recipe fell to 0.095 / 0.910 / 46.5%.

Gradient clip (`Sae.default_max_grad_norm` 1.0, as TopK; `TrainConfig.max_grad_norm` overrides it, 0 turns it off):
the gradient of the per-token summed squared error (with the penalties' terms) is clipped at norm 1 in both phases.
On Gemma 3 270M resid_post.6 (4096 latents, 1M tokens, `benchmarks/bench_frontier.py`, one run each) held-out FVU
0.066 / 0.048 / 0.031 -> 0.063 / 0.046 / 0.029 at L0 16 / 32 / 64, CE-loss recovered 0.967 / 0.979 / 0.987 -> 0.969 /
0.980 / 0.986, dead on 65,536 held-out tokens 2.9 / 0.6 / 0.0% -> 2.6 / 1.5 / 2.1% (clipped TopK: FVU 0.064 / 0.045 /
0.029, CE-loss recovered 0.971 / 0.980 / 0.990); synthetic recovery unchanged (95.7%).

Pre-activation loss (default 2.0 at target_l0 >= 16, scaled by min(1, target_l0 / 16) below it, `pre_act.at_sparsity`):
without it the warm-up left 10-20% of the latents dead on Gemma's held-out text (L0 32: 19.7%, 64: 9.2%); at 1.0 5.2% /
1.9% / 0.0% at L0 16 / 32 / 64 (FVU 0.065 / 0.047 / 0.031), at 2.0 2.9% / 0.6% / 0.0% (FVU 0.066 / 0.048 / 0.031). It moves the
pre-activations only: relu(theta - pre) also falls when theta falls, and under Adam that small gradient moved every
threshold a full step down at each step (synthetic, warm-up 0.8, loss 1.0: 63% dead with it, 19% without).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import SaeConfig
from ..gemm import linear, matmul
from ..metrics import fvu, total_variance as total_variance_of
from .base import Sae, SaeOutput
from .pre_act import configured_or_default, penalty_scale, pre_act_penalty
from .sparsity import ControlledCoefficient, batch_threshold

INIT_ROWS = 8192
"""Sample rows used to place the initial thresholds (a [rows, F] matrix of pre-activations)."""

CALIBRATION_ROWS = 8192
"""Rows of training inputs `calibrate` uses to rescale the final thresholds (a [rows, F] matrix)."""


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


class JumpReluSae(ControlledCoefficient, Sae, architecture="jumprelu"):
    """JumpReLU SAE (Gemma Scope recipe): a learned threshold per latent, trained through straight-through estimators (this module's docstring has the recipe)."""

    saelens_architecture = "jumprelu"

    def saelens_fields(self) -> dict:
        return {}

    scale_with_input = ("threshold",)
    encoder_init_scale = 0.1
    default_topk_warmup = 0.9
    """On by default: the first 90% of training is TopK's (module docstring: recovery of the synthetic dictionary
    19.5% -> 90%, Gemma at L0 32 and 64 within TopK's FVU). 0 gives the Gemma Scope recipe."""
    default_max_grad_norm = 1.0
    """TopK's clip (1.0 on the papers' scale, `train.grad_clip`) through both phases: on Gemma (4096 latents, 1M
    tokens) held-out FVU 0.066 / 0.048 / 0.031 -> 0.063 / 0.046 / 0.029 at L0 16 / 32 / 64 (module docstring,
    "Gradient clip")."""
    default_pre_act_coefficient = 2.0
    """On by default at 2.0 for L0 >= 16 (scaled by min(1, target_l0 / 16) below: `pre_act.at_sparsity`): after the
    warm-up, without it 10-20% of the latents died on Gemma's held-out text, and at 1.0 5.2% at L0 16 (module
    docstring). 0 gives the Gemma Scope recipe."""

    @property
    def pre_act_coefficient(self) -> float:
        """`cfg.pre_act_coefficient` as given, or the default scaled to the target L0 (`pre_act.at_sparsity`)."""
        return configured_or_default(self.cfg, self.default_pre_act_coefficient)

    def __init__(self, cfg: SaeConfig, *, device=None, seed: int | None = 0) -> None:
        super().__init__(cfg, device=device, seed=seed)
        self.threshold = nn.Parameter(torch.full((cfg.n_latents,), 0.001, device=device, dtype=self.W_enc.dtype))
        self._init_coefficient(cfg.l0_coefficient)

    def _pre(self, x_BD: Tensor) -> Tensor:
        return linear(x_BD - self.b_dec, self.W_enc, self.b_enc)

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        pre_BF = self._pre(x_BD)
        return pre_BF * (pre_BF > self.threshold), pre_BF.new_empty(0, dtype=torch.long)

    def plain_encoder(self) -> dict:
        return self._plain("threshold", threshold=self.threshold.detach().float().cpu())

    def _topk_forward(self, x_BD: Tensor, dead_mask: Tensor | None) -> SaeOutput:
        """The TopK warm-up's step (`SaeConfig.topk_warmup`): the warmup_k largest ReLU pre-activations of each token,
        FVU + AuxK (no L0 term, no pre-activation loss; the thresholds get no gradient). While training, every
        threshold is set to the batch's threshold, the (k * B)-th largest pre-activation, so that when the JumpReLU
        code takes over it starts at about the same L0 and learns per-latent thresholds from there."""
        pre_BF = self._pre(x_BD)
        vals_BK, idx_BK = pre_BF.topk(self.warmup_k, dim=-1)
        latents_BF = torch.zeros_like(pre_BF).scatter(-1, idx_BK, vals_BK.relu())
        x_hat_BD = matmul(latents_BF, self.W_dec) + self.b_dec
        total_variance = total_variance_of(x_BD)
        fvu_ = fvu(x_BD, x_hat_BD, total_variance)
        aux = self.dead_latent_loss(x_BD - self.b_dec, (x_BD - x_hat_BD).detach(), dead_mask, total_variance)
        if self.training:
            with torch.no_grad():
                self.threshold.fill_(batch_threshold(pre_BF, self.warmup_k))
        active_BF = latents_BF > 0
        return SaeOutput(
            x_hat_BD, latents_BF, pre_BF.new_empty(0, dtype=torch.long), fvu_, aux, fvu_ + aux,
            active_BF.any(0), active_BF.sum(-1).float().mean(),
        )

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        x_BD = x_BD.to(self.W_enc.dtype)
        if progress < self.topk_warmup:
            return self._topk_forward(x_BD, dead_mask)
        pre_BF = self._pre(x_BD)
        latents_BF = jumprelu(pre_BF, self.threshold, self.cfg.bandwidth)
        x_hat_BD = matmul(latents_BF, self.W_dec) + self.b_dec
        total_variance = total_variance_of(x_BD)
        fvu_ = fvu(x_BD, x_hat_BD, total_variance)
        l0 = step(pre_BF, self.threshold, self.cfg.bandwidth).sum(-1).mean()
        aux = self.coefficient(progress) * l0
        if self.pre_act_coefficient > 0:
            aux = aux + self.pre_act_coefficient * pre_act_penalty(pre_BF, self.threshold.detach(), penalty_scale(total_variance, *x_BD.shape))  # moves pre only
        aux = aux + self.dead_latent_loss(x_BD - self.b_dec, (x_BD - x_hat_BD).detach(), dead_mask, total_variance)
        active_BF = latents_BF > 0
        return SaeOutput(
            x_hat_BD, latents_BF, pre_BF.new_empty(0, dtype=torch.long), fvu_, aux, fvu_ + aux,
            active_BF.any(0), l0.detach(),
        )

    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor, target_ND: Tensor | None = None) -> None:
        """`b_dec` at the geometric median, then each threshold at its latent's target-density quantile
        (target_l0; without one, k)."""
        super().init_from_data(x_ND)
        x_ND = x_ND[:INIT_ROWS].to(self.device, self.W_enc.dtype)
        pre_NF = self._pre(x_ND)
        n = pre_NF.shape[0]
        target = self.cfg.target_l0 if self.cfg.target_l0 is not None else self.cfg.k
        keep = max(1, round(n * target / self.n_latents))  # tokens each latent should fire on
        theta_F = pre_NF.kthvalue(max(1, n - keep), dim=0).values
        self.threshold.copy_(theta_F.clamp_min(self.cfg.bandwidth))

    @torch.no_grad()
    def calibrate(self, x_ND: Tensor) -> None:
        """With `target_l0` set: multiply every threshold by one common factor, found by bisection, so the
        mean L0 on the sample (up to CALIBRATION_ROWS rows) is the target. The controller steers L0 while
        training, but thresholds follow lambda through Adam with a lag, so the last steps can still drift
        (on the synthetic benchmark: L0 2.8 at the end for a target of 4); the relative order of the
        thresholds, which training chose, is kept."""
        target = self.cfg.target_l0
        x_ND = x_ND[:CALIBRATION_ROWS].to(self.device, self.W_enc.dtype)
        if target is None or x_ND.shape[0] == 0:
            return
        pre_NF = self._pre(x_ND)
        theta_F = self.threshold.detach()
        l0_at = lambda c: float((pre_NF > theta_F * c).sum(-1).float().mean())  # noqa: E731  (falls as c rises)
        lo, hi = 0.0, 1.0
        while l0_at(hi) > target and hi < 1e6:
            lo, hi = hi, hi * 2
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if l0_at(mid) > target else (lo, mid)
        c = lo if abs(l0_at(lo) - target) < abs(l0_at(hi) - target) else hi
        self.threshold.mul_(c)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.threshold.clamp_min_(0.0)


__all__ = ["JumpReluSae", "jumprelu", "step"]
