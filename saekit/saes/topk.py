"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Recipe: keep the k largest pre-activations per token (ReLU after), unit-norm decoder rows with the
gradient component parallel to each row removed before every step, encoder initialised as the
decoder's transpose, `b_dec` at the data's geometric median, and the AuxK loss: the k_aux largest
pre-activations among latents dead for a while reconstruct the residual x - x_hat, which keeps
latents from dying. Loss = FVU + auxk_alpha * AuxK.

Encode and decode are sparse (`kernels.py`): the backward pass touches only the active latents.

On by default at 0.75 (`SaeConfig.pre_act_coefficient`; 0 is Gao et al.'s recipe): Anthropic's pre-activation
loss (`saes/pre_act.py`) with theta each token's k-th largest pre-activation (`pre_act_loss`). On Gemma 3 270M
resid_post.6 at 4096 latents, k 16, 1M tokens, batch 1024 (one run each; dead = silent on 65,536 held-out tokens):

    pre_act_coefficient   0        0.74     2.9      (measured as 0.25 and 1.0 over the total variance, see pre_act.py)
    dead                  45%      2.1%     0.0%
    held-out FVU          0.0651   0.0642   0.0677

(AuxK alone does not reach them: its `TrainConfig.dead_tokens` window counts far fewer dead than held-out text
shows.) Its gradient is dense over latents, which TopK's sparse backward otherwise avoids, so it is taken on a
sample of at most 512 rows per batch (`pre_act.sample_rows`): the step costs 10% more at 4096 latents, 22% more at
16384 (batch 4096, this CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..gemm import linear
from ..metrics import fvu, total_variance as total_variance_of
from .base import Sae, SaeOutput
from .pre_act import penalty_scale, pre_act_penalty, sample_rows
from .kernels import sparse_decode, topk_encode


class TopKSae(Sae, architecture="topk"):
    """TopK SAE (Gao et al. 2024): the k largest pre-activations per token, ReLU'd; sparse kernels and AuxK (this module's docstring has the recipe)."""

    saelens_architecture = "topk"
    sparsity_from_k = True
    default_pre_act_coefficient = 0.75
    """On by default at 0.75 (module docstring: dead latents 45% -> 2.1% at 4096 latents); Gao et al.'s recipe has no
    such loss, and `SaeConfig.pre_act_coefficient=0` gives it back (10-22% faster per step)."""

    def saelens_fields(self) -> dict:
        return {"k": int(self.cfg.k), "rescale_acts_by_decoder_norm": False}

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        return topk_encode(x_BD - self.b_dec, self.W_enc, self.b_enc, self.cfg.k)

    def plain_encoder(self) -> dict:
        return self._plain("topk", k=int(self.cfg.k))

    def _encode_train(self, x_in_BD: Tensor) -> tuple[Tensor, Tensor]:
        """The sparse code used while training (BatchTopK overrides it to select across the batch)."""
        return topk_encode(x_in_BD, self.W_enc, self.b_enc, self.cfg.k)

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        x_BD = x_BD.to(self.W_enc.dtype)
        x_in_BD = x_BD - self.b_dec
        acts_BK, idx_BK = self._encode_train(x_in_BD)
        x_hat_BD = sparse_decode(acts_BK, idx_BK, self.W_dec) + self.b_dec
        total_variance = total_variance_of(x_BD)
        fvu_ = fvu(x_BD, x_hat_BD, total_variance)
        aux = x_BD.new_zeros(())
        if dead_mask is not None and self.cfg.auxk_alpha > 0 and bool(dead_mask.any()):
            aux = self.auxk_loss(x_in_BD, (x_BD - x_hat_BD).detach(), dead_mask, total_variance)
        aux = aux + self.pre_act_loss(x_in_BD, acts_BK, total_variance)
        return SaeOutput(x_hat_BD, acts_BK, idx_BK, fvu_, aux, fvu_ + aux, *sparse_fired_l0(acts_BK, idx_BK, self.n_latents))

    def auxk_loss(self, x_in_BD: Tensor, err_BD: Tensor, dead_F: Tensor, total_variance: Tensor) -> Tensor:
        """AuxK on the dead latents (`Sae.dead_latent_loss`)."""
        return self.dead_latent_loss(x_in_BD, err_BD, dead_F, total_variance)

    def pre_act_theta(self, acts_BK: Tensor, x_in_BD: Tensor) -> Tensor:
        """The threshold the pre-activation loss pulls toward: each token's smallest kept activation [B, 1]
        (detached; 0 for a row that kept nothing). `x_in_BD` (x - b_dec) serves subclasses whose threshold
        depends on the row (BatchTopK's `relative_selection`)."""
        kept_BK = acts_BK.detach()
        theta_B1 = torch.where(kept_BK > 0, kept_BK, torch.inf).min(-1, keepdim=True).values
        return torch.where(torch.isfinite(theta_B1), theta_B1, torch.zeros_like(theta_B1))

    def pre_act_loss(self, x_in_BD: Tensor, acts_BK: Tensor, total_variance: Tensor) -> Tensor:
        """Anthropic's pre-activation loss (`pre_act.pre_act_penalty`) with theta the code's threshold
        (`pre_act_theta`), weighted by `pre_act_coefficient`: every pre-activation W_enc x_in + b_enc below it
        gets a gradient toward it, so a latent the selection never picks still learns (the selection gives it no
        reconstruction gradient, and AuxK only after `TrainConfig.dead_tokens`). Dense over latents, so it is
        taken on an even sample of at most `pre_act.SAMPLE_ROWS` of the batch's rows (`pre_act.sample_rows`):
        one more [R, D] x [D, F] product forward and two backward."""
        c = self.pre_act_coefficient
        if c <= 0:
            return x_in_BD.new_zeros(())
        rows = sample_rows(x_in_BD.shape[0])
        theta = self.pre_act_theta(acts_BK, x_in_BD)
        if theta.dim() == 2:  # per token [B, 1]
            theta = theta[rows]
        pre_RF = linear(x_in_BD[rows], self.W_enc, self.b_enc)
        return c * pre_act_penalty(pre_RF, theta, penalty_scale(total_variance, *x_in_BD.shape))


def sparse_fired_l0(acts_BK: Tensor, idx_BK: Tensor, n_latents: int) -> tuple[Tensor, Tensor]:
    """(fired [F]: latents active on some row, l0: mean active latents per row) of a sparse code."""
    active_BK = acts_BK > 0
    fired_F = torch.zeros(n_latents, dtype=torch.bool, device=acts_BK.device)
    fired_F[idx_BK[active_BK]] = True
    return fired_F, active_BK.sum(-1).float().mean()


__all__ = ["TopKSae", "sparse_fired_l0"]
