"""ReLU SAE with an L1 penalty, in the form of Anthropic's "Circuits Updates - April 2024".

    latents_BF = ReLU(W_enc (x - b_dec) + b_enc)          x_hat_BD = latents_BF @ W_dec + b_dec
    loss = FVU + lambda(t) * sum_b sum_i latents_bi * ||W_dec_i|| / total_variance + AuxK

Recipe (April update): the L1 term is weighted by each latent's decoder-row norm and the decoder is
*not* constrained to unit norm (so the penalty cannot be dodged by shrinking latents and growing
rows); W_dec rows start as random directions of norm 0.1 with W_enc = W_dec^T; lambda rises linearly
from 0 over the first `sparsity_warmup` of training (5%); inputs are scaled so E||x||^2 = d_in (the
trainer's `normalize`); the learning rate decays linearly over the last 20% (`decay_start=0.8`).

Coefficient: dividing the whole objective by the batch's total variance is a constant rescaling (Adam
is invariant to it), but it makes the L1 term scale with 1/scale of the data (latents grow with the
data, the variance with its square), so a fixed lambda means different sparsities on different data
and widths (a cliff between lambda 5 and 10 at 4096 latents). Choose a sparsity instead: with
`target_l0` set, lambda is steered by the target-L0 controller (`sparsity.py`) and `l1_coefficient`
is only its starting value.

Departures: `b_dec` is subtracted before encoding (SAELens's `apply_b_dec_to_input`; an equivalent
reparametrisation of b_enc) and starts at the data's geometric median rather than zero; AuxK
(`Sae.dead_latent_loss`) keeps latents alive. The April update also clipped gradients at norm 1:
`TrainConfig.max_grad_norm=1.0` does that (off by default: on the FVU scale the gradient norm is
far below 1, so clipping at 1 would never engage).

Optional resampling of dead latents ("Towards Monosemanticity", 2023), on when
`resample_every > 0`: every that many steps, each latent the trainer counts as dead gets the
direction of an input drawn with probability proportional to its squared reconstruction error
(minus b_dec, unit norm) as its decoder row (at the mean norm of the living rows), 0.2 x the mean
living encoder norm along the same direction as its encoder row, and b_enc = 0; the trainer then
clears those latents' Adam moments. Measured on Gemma 3 270M resid_post.6 (4096 latents, 1M tokens, target_l0 32 and
64, `resample_every=200`; BENCHMARKS.md, "SAE family frontier (4096 latents, 1M tokens, pre-activation loss on)"), it
collapsed the SAE: a resampling round that rewrote most of the dictionary at once sent the batch FVU to 11 and the
training L0 to ~1, and the held-out FVU ended at 1.74 and 7.7. It is not usable there as it stands.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import SaeConfig
from ..gemm import linear, matmul
from ..metrics import fvu, total_variance as total_variance_of
from .base import Sae, SaeOutput
from .pre_act import penalty_scale, pre_act_penalty
from .sparsity import ControlledCoefficient

INIT_NORM = 0.1
"""Norm of the initial decoder and encoder rows (April update)."""

RESAMPLE_ENCODER_SCALE = 0.2
"""A resampled encoder row gets this fraction of the mean living encoder-row norm (Anthropic 2023)."""


def l1_penalty(l1_BF: Tensor, total_variance: Tensor) -> Tensor:
    """sum of a batch's (decoder-weighted) L1 terms / total_variance (the objective's common scale)."""
    return l1_BF.sum() / total_variance


class ReluSae(ControlledCoefficient, Sae, architecture="relu"):
    """ReLU SAE with a decoder-norm-weighted L1 penalty (Anthropic, April 2024 update) (this module's docstring has the recipe)."""

    default_l1_coefficient = 5.0
    default_pre_act_coefficient = 0.0
    """Off by default (the April update's recipe). With threshold 0 and the decoder-norm weight it keeps latents
    alive on Gemma 3 270M resid_post.6 (4096 latents, target_l0 16, 1M tokens, batch 1024): dead on 65,536 held-out
    tokens 47% (off) -> 21% (2.9) -> 3.5% (12), FVU 0.661 -> 0.678 -> 0.692 (measured as 1.0 and 4.0 over the total
    variance: `saes/pre_act.py`). But at 12 the synthetic ReLU SAE of notebook 08 asked for L0 8 collapsed (L0 0.42,
    FVU 1.0), so it is opt-in: `SaeConfig.pre_act_coefficient=12`."""
    unit_norm_decoder = False

    def __init__(self, cfg: SaeConfig, *, device=None, seed: int | None = 0) -> None:
        super().__init__(cfg, device=device, seed=seed)
        with torch.no_grad():
            self.W_dec.mul_(INIT_NORM)
            self.W_enc.mul_(INIT_NORM)
        self._init_coefficient(self.l1_coefficient)

    @property
    def l1_coefficient(self) -> float:
        """The configured (starting) coefficient; `coefficient(progress)` is the one in use."""
        c = self.cfg.l1_coefficient
        return self.default_l1_coefficient if c is None else c

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        pre_BF = linear(x_BD - self.b_dec, self.W_enc, self.b_enc)
        return pre_BF.relu_(), pre_BF.new_empty(0, dtype=torch.long)

    def plain_encoder(self) -> dict:
        return self._plain("relu")

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        x_BD = x_BD.to(self.W_enc.dtype)
        pre_BF = linear(x_BD - self.b_dec, self.W_enc, self.b_enc)
        latents_BF = pre_BF.relu()
        x_hat_BD = matmul(latents_BF, self.W_dec) + self.b_dec
        total_variance = total_variance_of(x_BD)
        fvu_ = fvu(x_BD, x_hat_BD, total_variance)
        dec_norm_F = self.W_dec.norm(dim=-1)
        l1 = l1_penalty(latents_BF * dec_norm_F, total_variance)
        aux = self.coefficient(progress) * l1
        if self.pre_act_coefficient > 0:  # negative pre-activations pulled up toward 0, decoder-norm weighted
            aux = aux + self.pre_act_coefficient * pre_act_penalty(pre_BF, 0.0, penalty_scale(total_variance, *x_BD.shape), dec_norm_F)
        aux = aux + self.dead_latent_loss(x_BD - self.b_dec, (x_BD - x_hat_BD).detach(), dead_mask, total_variance)
        active_BF = latents_BF > 0
        return SaeOutput(
            x_hat_BD, latents_BF, latents_BF.new_empty(0, dtype=torch.long), fvu_, aux, fvu_ + aux,
            active_BF.any(0), active_BF.sum(-1).float().mean(),
        )

    @torch.no_grad()
    def on_step(self, step: int, x_BD: Tensor, dead_F: Tensor, generator: torch.Generator) -> Tensor | None:
        every = self.cfg.resample_every
        if not every or step % every != 0 or not bool(dead_F.any()):
            return None
        return self.resample_dead(x_BD, dead_F, generator)

    @torch.no_grad()
    def resample_dead(self, x_BD: Tensor, dead_F: Tensor, generator: torch.Generator) -> Tensor:
        """Anthropic's resampling: dead latents take the directions of badly reconstructed inputs."""
        dead_G = dead_F.nonzero().squeeze(-1)
        x_BD = x_BD.to(self.W_enc.dtype)
        err_B = (x_BD - self.reconstruct(x_BD)).pow(2).sum(-1)
        prob_B = err_B.pow(2).float()
        if not bool(prob_B.sum() > 0):
            prob_B = torch.ones_like(prob_B)
        pick_G = torch.multinomial(prob_B.cpu(), dead_G.numel(), replacement=True, generator=generator)
        dirs_GD = x_BD[pick_G.to(x_BD.device)] - self.b_dec
        dirs_GD = dirs_GD / dirs_GD.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive_F = ~dead_F
        if bool(alive_F.any()):
            dec_norm = self.W_dec[alive_F].norm(dim=-1).mean()
            enc_norm = self.W_enc[alive_F].norm(dim=-1).mean()
        else:
            dec_norm = enc_norm = torch.tensor(INIT_NORM, device=self.device)
        self.W_dec[dead_G] = (dirs_GD * dec_norm).to(self.W_dec.dtype)
        self.W_enc[dead_G] = (dirs_GD * enc_norm * RESAMPLE_ENCODER_SCALE).to(self.W_enc.dtype)
        self.b_enc[dead_G] = 0
        return dead_G


__all__ = ["ReluSae", "l1_penalty"]
