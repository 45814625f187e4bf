"""Target sparsity for penalty architectures: a controller that steers the sparsity coefficient so a run
ends at the L0 it was asked for (`SaeConfig.target_l0`), instead of the user sweeping a coefficient.

ReLU/L1, Gated and JumpReLU SAEs trade reconstruction against a penalty lambda * P (an L1 norm or an
L0 count); which L0 a given lambda reaches depends on the data, the width and the budget. With
`target_l0` set, lambda is exp(log_coefficient), and after every optimiser step

    log_coefficient += CONTROL_GAIN * clamp(log(l0 / target_l0), -1, 1)

with l0 the batch's mean number of active latents (the same encoder as inference: these codes do not
depend on the batch). That is an integral controller in log space: lambda rises while the code is
too dense and falls while it is too sparse, and stops moving only at the target. The coefficient is a
buffer of the SAE (`log_coefficient`), so checkpoints carry it and resume is exact; it starts at the
configured coefficient (`l1_coefficient` / `l0_coefficient`), and it does not move during the
coefficient's warmup (`sparsity_warmup`), when lambda is still ramping up from 0 by design.

Without `target_l0` the coefficient stays fixed at its configured value (the papers' usage).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CONTROL_GAIN = 0.05
"""Step of log(lambda) per optimiser step per unit of log(l0 / target): about 20 steps of time constant,
fast enough for runs of a few hundred steps and slow enough not to oscillate against Adam's momentum."""

MAX_LOG_ERROR = 1.0
"""The log-error is clamped to +/- this, so one step moves lambda by at most a factor exp(CONTROL_GAIN)."""


def warmup_factor(progress: float, warmup: float) -> float:
    """Linear warmup of a sparsity coefficient from 0 to 1 over the first `warmup` of training."""
    if warmup <= 0:
        return 1.0
    return min(1.0, progress / warmup)


class ControlledCoefficient:
    """Mixin for nn.Module SAEs with a sparsity coefficient: the `log_coefficient` buffer and its controller.

    The class calls `_init_coefficient(value)` in `__init__` and uses `coefficient(progress)` in its loss.
    """

    saekit_state = ("log_coefficient",)

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

    def coefficient(self, progress: float) -> Tensor:
        """lambda at this point of training: exp(log_coefficient), times the warmup ramp."""
        return self.log_coefficient.exp() * warmup_factor(progress, self.cfg.sparsity_warmup)

    @torch.no_grad()
    def update_sparsity(self, l0: Tensor, progress: float) -> None:
        """One controller step toward `cfg.target_l0` (nothing without a target or during the warmup)."""
        target = self.cfg.target_l0
        if target is None or progress < self.cfg.sparsity_warmup:
            return
        err = torch.log(l0.detach().float().clamp_min(1e-3) / target).clamp(-MAX_LOG_ERROR, MAX_LOG_ERROR)
        self.log_coefficient.add_(CONTROL_GAIN * err.to(self.log_coefficient.device))


__all__ = ["CONTROL_GAIN", "ControlledCoefficient", "warmup_factor"]
