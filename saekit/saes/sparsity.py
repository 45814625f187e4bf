"""Target sparsity for penalty architectures: a controller that steers the sparsity coefficient so a run
ends at the L0 it was asked for (`SaeConfig.target_l0`), instead of the user sweeping a coefficient.

ReLU/L1, Gated and JumpReLU SAEs trade reconstruction against a penalty lambda * P (an L1 norm or an
L0 count); which L0 a given lambda reaches depends on the data, the width and the budget. With
`target_l0` set, lambda is exp(log_coefficient), and after every optimiser step, with
e = clamp(log(l0 / target_l0), -1, 1) and l0 the batch's mean number of active latents (the same encoder
as inference: these codes do not depend on the batch),

    log_coefficient += CONTROL_GAIN * e + DAMPING * (e - e_previous)

That is a PI controller in velocity form, in log space. The integral part (the first term) raises
lambda while the code is too dense and lowers it while it is too sparse, and stops moving only at the
target. The second term is the damping: L0 follows lambda with a lag of tens of steps (Adam's momentum,
the encoder catching up), so a pure integral controller keeps pushing after L0 has started to move and
overshoots; measured on the synthetic benchmark (d 32, 512 features, 1024 latents, target 4, 195
steps), ReLU/L1's L0 swung 512 -> 0.1 -> 50 -> 13 and ended 3x off target. The damping term pulls back
as soon as the error shrinks. The coefficient and the last error are buffers of the SAE
(`log_coefficient`, `last_log_error`), so checkpoints carry them and resume is exact; lambda starts at
the configured coefficient (`l1_coefficient` / `l0_coefficient`), and it does not move during the
coefficient's warmup (`sparsity_warmup`), when lambda is still ramping up from 0 by design, nor during a TopK
warm-up (`topk_warmup`: JumpReLU, Gated, ReLU/L1), when the per-token selection fixes L0 and the penalty is off.

Without `target_l0` the coefficient stays fixed at its configured value (the papers' usage).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

CONTROL_GAIN = 0.03
"""Step of log(lambda) per optimiser step per unit of log(l0 / target) (the integral part). Measured on the
synthetic benchmark with DAMPING 1 (d 32, 512 features, 1024 latents, target 4, 195 steps): 0.02 brings
JumpReLU and Gated to the target too late in the run, 0.05 leaves ReLU/L1 swinging +/-30% at the end."""

DAMPING = 1.0
"""Step of log(lambda) per unit change of the log-error between consecutive steps (the proportional part
of the PI controller): DAMPING / CONTROL_GAIN = 33 steps, about the lag of L0 behind lambda (measured as above: 0.3 and 0.5
still overshoot by 5x, 2 turns batch noise into swings)."""

MAX_LOG_ERROR = 1.0
"""The log-error is clamped to +/- this, so the integral part moves lambda by at most exp(CONTROL_GAIN) a step."""

NO_ERROR_YET = 2 * MAX_LOG_ERROR
"""`last_log_error` before the first controller step: a value the clamped error never takes (finite, so
state dicts compare equal), meaning no damping on that step."""


def warmup_factor(progress: float, warmup: float) -> float:
    """Linear warmup of a sparsity coefficient from 0 to 1 over the first `warmup` of training."""
    if warmup <= 0:
        return 1.0
    return min(1.0, progress / warmup)


def opening_bias(proj_NF: Tensor, l0: float) -> Tensor:
    """Minus each latent's (1 - l0 / n_latents) quantile of its projections `proj_NF` on a sample [N, F] (at most 0):
    the bias at which the latents open on about `l0` of them per token. ReLU/L1's b_enc and Gated's b_gate start here,
    so the first step's code is near its target L0 instead of about half the dictionary."""
    n, n_latents = proj_NF.shape
    keep = max(1, round(n * l0 / n_latents))
    return -proj_NF.kthvalue(max(1, n - keep), dim=0).values.clamp_min(0)


def batch_threshold(score_BF: Tensor, k: int) -> Tensor:
    """The (k * B)-th largest score of a batch [B, F], at least 0 (a 0-dim tensor, never read back to the host):
    the one threshold at which the batch keeps as many latents as a TopK code with k per token. The TopK warm-ups
    of JumpReLU, Gated and ReLU/L1 put their thresholds (or minus their biases) here at every step, so their own
    code takes over at about the warm-up's L0. Under data parallelism it is the mean of the ranks' thresholds,
    so every rank fills the same value (each rank's own would leave the ranks training different SAEs until the
    final broadcast)."""
    n_keep = min(k * score_BF.shape[0], score_BF.numel())
    threshold = score_BF.detach().flatten().topk(n_keep, sorted=False).values.min().clamp_min(0.0)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(threshold)
        threshold /= dist.get_world_size()
    return threshold


def target_shift(score_NF: Tensor, l0: float) -> Tensor:
    """The one amount to subtract from every score of a sample [N, F] so that `score - shift > 0` keeps its
    round(l0 * N) largest entries, i.e. a mean L0 of `l0` on the sample (halfway between the smallest kept score and the
    next smaller one; not finite when nothing can be kept). ReLU/L1's b_enc and Gated's gate biases take it at the end
    of training (`calibrate`): the controller steers L0 with a lag, so a run can end a few tens of percent off target."""
    n_keep = min(max(1, round(l0 * score_NF.shape[0])), score_NF.numel())
    kth = score_NF.reshape(-1).topk(n_keep, sorted=False).values.min()  # the smallest score to keep
    below = score_NF[score_NF < kth]
    nxt = below.max() if below.numel() else kth - 1
    return (kth + nxt) / 2


class ControlledCoefficient:
    """Mixin for nn.Module SAEs with a sparsity coefficient: the `log_coefficient` buffer and its controller.

    The class calls `_init_coefficient(value)` in `__init__` and uses `coefficient(progress)` in its loss.
    """

    saekit_state = ("log_coefficient", "last_log_error")
    saekit_state_defaults = {"last_log_error": NO_ERROR_YET}

    def _init_coefficient(self, value: float) -> None:
        """Register `log_coefficient` at log(value); 0 (no penalty) is allowed only without a target."""
        from ..errors import ConfigError

        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"the sparsity coefficient must be a finite number >= 0, got {value!r}")
        if value == 0 and self.cfg.target_l0 is not None:
            raise ConfigError(
                f"target_l0={self.cfg.target_l0} steers the sparsity coefficient, which cannot start at 0: "
                f"leave the coefficient at its default or give a positive starting value"
            )
        log_value = math.log(value) if value > 0 else -math.inf
        self.register_buffer("log_coefficient", torch.tensor(log_value, device=self.W_enc.device))
        # the previous step's clamped log-error; NO_ERROR_YET (outside the clamp) before the controller's first step
        self.register_buffer("last_log_error", torch.tensor(NO_ERROR_YET, device=self.W_enc.device))

    def coefficient(self, progress: float) -> Tensor:
        """lambda at this point of training: exp(log_coefficient), times the warmup ramp."""
        return self.log_coefficient.exp() * warmup_factor(progress, self.cfg.sparsity_warmup)

    @torch.no_grad()
    def update_sparsity(self, l0: Tensor, progress: float) -> None:
        """One controller step toward `cfg.target_l0` (nothing without a target, during the coefficient's warmup or
        during a TopK warm-up)."""
        target = self.cfg.target_l0
        if target is None or progress < max(self.cfg.sparsity_warmup, self.topk_warmup):
            return
        err = torch.log(l0.detach().float().clamp_min(1e-3) / target).clamp(-MAX_LOG_ERROR, MAX_LOG_ERROR)
        err = err.to(self.log_coefficient.device)
        first = self.last_log_error.abs() > MAX_LOG_ERROR
        change = torch.where(first, torch.zeros_like(err), err - self.last_log_error)
        self.log_coefficient.add_(CONTROL_GAIN * err + DAMPING * change)
        self.last_log_error.copy_(err)


__all__ = ["CONTROL_GAIN", "DAMPING", "ControlledCoefficient", "opening_bias", "target_shift", "warmup_factor"]
