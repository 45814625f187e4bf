"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

Recipe: keep the k largest pre-activations per token (ReLU after), unit-norm decoder rows with the
gradient component parallel to each row removed before every step, encoder initialised along the
decoder's transpose (at 0.3 x W_dec^T, a departure: `TopKSae.encoder_init_scale`), `b_dec` at the data's geometric median, and the AuxK loss: the k_aux largest
pre-activations among latents dead for a while reconstruct the residual x - x_hat, which keeps
latents from dying. Loss = FVU + auxk_alpha * AuxK. The gradient is clipped at norm 1 on the scale of the
per-token summed squared error (`TopKSae.default_max_grad_norm`, `train.grad_clip`), as Anthropic's April 2024
update and dictionary_learning clip theirs.

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

from ..gemm import bf16_matrix_units, linear
from ..metrics import fvu, total_variance as total_variance_of
from .base import Sae, SaeOutput
from .pre_act import PRE_ACT_TUNED_K, at_sparsity, penalty_scale, pre_act_penalty, rows_penalty, sample_rows
from .kernels import sparse_decode, topk_encode, topk_encode_train


class TopKSae(Sae, architecture="topk"):
    """TopK SAE (Gao et al. 2024): the k largest pre-activations per token, ReLU'd; sparse kernels and AuxK (this module's docstring has the recipe)."""

    saelens_architecture = "topk"
    sparsity_from_k = True
    encoder_init_scale = 0.3
    """The encoder starts at 0.3 x W_dec^T (Gao et al.: 1.0). Measured against 1.0, one run each (BENCHMARKS.md,
    "TopK's encoder starts at 0.3"): synthetic dictionary (d 32, 512 features, 1024 latents, L0 4, 1M samples) 96% of
    the true features recovered against 93%; Gemma 3 270M resid_post.6 (4096 latents, 1M tokens) held-out FVU / CE-loss
    recovered 0.065 / 0.972, 0.046 / 0.981, 0.032 / 0.989 at L0 16 / 32 / 64 against 0.068 / 0.966, 0.047 / 0.982,
    0.033 / 0.987; 24 steps of 4096 tokens (the peers' comparison) dead 53% -> 31%, CE-loss recovered 0.730 -> 0.774 at
    the same FVU. A shorter row turns further under Adam's fixed step, so the dictionary's directions move sooner."""
    default_max_grad_norm = 1.0
    """Clipped at 1 on the papers' scale (`train.grad_clip`), as Anthropic's April update and dictionary_learning do.
    Measured at 16384 latents, 244 steps of 4096 tokens on Gemma 3 270M resid_post.6 (BENCHMARKS.md, "Gradient
    clipping on the papers' scale"; one run each): held-out FVU / CE-loss recovered 0.067 / 0.971 unclipped, 0.058 /
    0.978 clipped (dictionary_learning 0.063 / 0.975); at 4096 latents, 1M tokens, no worse at L0 16 / 32 / 64."""
    default_pre_act_coefficient = 0.75
    """On by default at 0.75 (module docstring: dead latents 45% -> 2.1% at 4096 latents); Gao et al.'s recipe has no
    such loss, and `SaeConfig.pre_act_coefficient=0` gives it back (10-22% faster per step)."""

    @property
    def pre_act_coefficient(self) -> float:
        """`cfg.pre_act_coefficient` as given, or the default (`default_pre_act_for_rule`) scaled by
        min(1, k / PRE_ACT_TUNED_K): the defaults were tuned at k 16, and below it the loss's pull grows relative to a
        latent's reconstruction gradient (which scales with k / n_latents; the loss's with 1 / n_latents). On the
        synthetic dictionary at k 4 (d 32, 512 features, 1024 latents, 1M samples) TopK recovered 87.7% of the true
        features at 0.75 and 93.0% at 0.19 (0% dead; 90.0% with 35% dead at 0): BENCHMARKS.md, "Synthetic
        dictionary recovery"."""
        c = self.cfg.pre_act_coefficient
        if c is not None:
            return float(c)
        return at_sparsity(self.default_pre_act_for_rule(), self.cfg.k)

    def default_pre_act_for_rule(self) -> float:
        """The architecture's default pre-activation coefficient at k >= PRE_ACT_TUNED_K (subclasses with a second
        selection rule override it)."""
        return self.default_pre_act_coefficient or 0.0

    def pre_act_coefficient_for(self, per_token: bool) -> float:
        """The pre-activation coefficient of a step that keeps k latents per token (`per_token`) or not: TopK's is
        `pre_act_coefficient` always (BatchTopK's TopK warm-up overrides it)."""
        return self.pre_act_coefficient

    def saelens_fields(self) -> dict:
        return {"k": int(self.cfg.k), "rescale_acts_by_decoder_norm": False}

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        return topk_encode(x_BD - self.b_dec, self.W_enc, self.b_enc, self.cfg.k)

    def plain_encoder(self) -> dict:
        return self._plain("topk", k=int(self.cfg.k))

    @property
    def select_dtype(self) -> torch.dtype | None:
        """The dtype training selects in (`SaeConfig.selection_dtype`), None for the weights' own: 'auto' is bfloat16
        for float32 weights on a CPU with bfloat16 matrix units (`gemm.bf16_matrix_units`)."""
        choice = self.cfg.selection_dtype
        if choice == "auto":
            fast = self.W_enc.device.type == "cpu" and self.W_enc.dtype == torch.float32 and bf16_matrix_units()
            choice = "bfloat16" if fast else "float32"
        dt = torch.bfloat16 if choice == "bfloat16" else torch.float32
        return None if dt == self.W_enc.dtype else dt

    def per_token_selection(self, progress: float) -> bool:
        """Whether training keeps k latents per token at this point of training (`progress` in [0, 1]): always for
        TopK; BatchTopK only for its first `topk_warmup` of training."""
        return True

    def _encode_train(
        self, x_in_BD: Tensor, rows: slice | None = None, per_token: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The sparse code used while training, and the pre-activation's rows `rows` for the pre-activation loss
        (`kernels.topk_encode_train`; BatchTopK overrides it to select across the batch unless `per_token`)."""
        return topk_encode_train(x_in_BD, self.W_enc, self.b_enc, self.cfg.k, self.select_dtype, rows)

    def pre_act_rows(self, n_rows: int) -> slice | None:
        """The rows of a batch of n_rows the pre-activation loss is taken on (`pre_act.sample_rows`), None when it is off."""
        return sample_rows(n_rows) if self.pre_act_coefficient > 0 else None

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        x_BD = x_BD.to(self.W_enc.dtype)
        x_in_BD = x_BD - self.b_dec
        per_token = self.per_token_selection(progress)
        acts_BK, idx_BK, pre_RF = self._encode_train(x_in_BD, self.pre_act_rows(x_BD.shape[0]), per_token)
        x_hat_BD = sparse_decode(acts_BK, idx_BK, self.W_dec) + self.b_dec
        total_variance = total_variance_of(x_BD)
        fvu_ = fvu(x_BD, x_hat_BD, total_variance)
        aux = x_BD.new_zeros(())
        if dead_mask is not None and self.cfg.auxk_alpha > 0:  # zero when none is dead
            aux = self.auxk_loss(x_in_BD, (x_BD - x_hat_BD).detach(), dead_mask, total_variance)
        aux = aux + self.pre_act_loss(x_in_BD, acts_BK, total_variance, pre_RF, per_token)
        return SaeOutput(x_hat_BD, acts_BK, idx_BK, fvu_, aux, fvu_ + aux, *sparse_fired_l0(acts_BK, idx_BK, self.n_latents))

    def auxk_loss(self, x_in_BD: Tensor, err_BD: Tensor, dead_F: Tensor, total_variance: Tensor) -> Tensor:
        """AuxK on the dead latents (`Sae.dead_latent_loss`)."""
        return self.dead_latent_loss(x_in_BD, err_BD, dead_F, total_variance)

    def pre_act_theta(self, acts_BK: Tensor, x_in_BD: Tensor, per_token: bool = True) -> Tensor:
        """The threshold the pre-activation loss pulls toward: each token's smallest kept activation [B, 1]
        (detached; 0 for a row that kept nothing). `x_in_BD` (x - b_dec) serves subclasses whose threshold
        depends on the row (BatchTopK's `relative_selection`), `per_token` those whose selection rule
        changes during training (`per_token_selection`)."""
        kept_BK = acts_BK.detach()
        theta_B1 = torch.where(kept_BK > 0, kept_BK, torch.inf).min(-1, keepdim=True).values
        return torch.where(torch.isfinite(theta_B1), theta_B1, torch.zeros_like(theta_B1))

    def pre_act_loss(
        self, x_in_BD: Tensor, acts_BK: Tensor, total_variance: Tensor, pre_RF: Tensor | None = None,
        per_token: bool = True,
    ) -> Tensor:
        """Anthropic's pre-activation loss (`pre_act.pre_act_penalty`) with theta the code's threshold
        (`pre_act_theta`), weighted by `pre_act_coefficient_for(per_token)`: every pre-activation W_enc x_in + b_enc below it
        gets a gradient toward it, so a latent the selection never picks still learns (the selection gives it no
        reconstruction gradient, and AuxK only after `TrainConfig.dead_tokens`). Dense over latents, so it is
        taken on an even sample of at most `pre_act.SAMPLE_ROWS` of the batch's rows (`pre_act_rows`). `pre_RF`,
        those rows' pre-activations as the encoder computed them, saves the forward product
        (`pre_act.rows_penalty`); without it they are recomputed (the readable path, same values)."""
        c = self.pre_act_coefficient_for(per_token)
        if c <= 0:
            return x_in_BD.new_zeros(())
        rows = sample_rows(x_in_BD.shape[0])
        theta = self.pre_act_theta(acts_BK, x_in_BD, per_token)
        if theta.dim() == 2:  # per token [B, 1]
            theta = theta[rows]
        scale = penalty_scale(total_variance, *x_in_BD.shape)
        if pre_RF is not None and pre_RF.numel():
            return c * rows_penalty(x_in_BD[rows], self.W_enc, self.b_enc, pre_RF, theta, scale, self.select_dtype)
        pre_RF = linear(x_in_BD[rows], self.W_enc, self.b_enc)
        return c * pre_act_penalty(pre_RF, theta, scale)


def sparse_fired_l0(acts_BK: Tensor, idx_BK: Tensor, n_latents: int) -> tuple[Tensor, Tensor]:
    """(fired [F]: latents active on some row, l0: mean active latents per row) of a sparse code."""
    active_BK = acts_BK > 0
    # index_add_ rather than fired_F[idx_BK[active_BK]] = True: no boolean indexing, so no host sync on a GPU
    counts_F = torch.zeros(n_latents, dtype=torch.int32, device=acts_BK.device)
    fired_F = counts_F.index_add_(0, idx_BK.reshape(-1), active_BK.reshape(-1).to(torch.int32)) > 0
    return fired_F, active_BK.sum(-1).float().mean()


__all__ = ["TopKSae", "sparse_fired_l0"]
