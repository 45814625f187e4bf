"""ReLU SAE with an L1 penalty, in the form of Anthropic's "Circuits Updates - April 2024".

    latents_BF = ReLU(W_enc (x - b_dec) + b_enc)          x_hat_BD = latents_BF @ W_dec + b_dec
    loss = FVU + lambda(t) * sum_b sum_i latents_bi * ||W_dec_i|| / total_variance + AuxK

Recipe (April update): the L1 term is weighted by each latent's decoder-row norm and the decoder is
*not* constrained to unit norm (so the penalty cannot be dodged by shrinking latents and growing
rows); W_enc = W_dec^T at the start; lambda rises linearly from 0 over the first `sparsity_warmup` of training (5%);
inputs are scaled so E||x||^2 = d_in (the trainer's `normalize`); the learning rate decays linearly over the last 20%
(`decay_start=0.8`).

Coefficient: dividing the whole objective by the batch's total variance is a constant rescaling (Adam
is invariant to it), but it makes the L1 term scale with 1/scale of the data (latents grow with the
data, the variance with its square), so a fixed lambda means different sparsities on different data
and widths (a cliff between lambda 5 and 10 at 4096 latents). Choose a sparsity instead: with
`target_l0` set, lambda is steered by the target-L0 controller (`sparsity.py`) and `l1_coefficient`
is only its starting value; when training ends `calibrate` shifts every b_enc by one common amount so the L0 on a
training sample is the target (the controller's lag left a 200k-sample synthetic run 19% over it).

Departures, each measured on Gemma 3 270M resid_post.6 (4096 latents, target_l0 32, batch 1024, 300k tokens, held-out
FVU on 16,384 test-split tokens; BENCHMARKS.md, "ReLU/L1 starts at its target L0"):
- **The rows start at unit norm, and b_enc at each latent's target-density quantile** (`sparsity.opening_bias`, as
  Gated's gate), not at norm 0.1 and zero. With the April update's start the run was stuck: every latent opened at
  the first step (L0 ~1,500), the controller's lambda rose to 11-18 to close them, and at that lambda the L1 term
  shrinks every kept activation by lambda / 2 in units where a token's distance from b_dec is ~7.5, so the code could
  not grow its gain (decoder rows stayed at norm 0.1, encoder rows at 0.8). Held-out FVU 0.72 (0.82 without the 1% of
  tokens with the largest norms, so not an outlier effect), reconstructions 3x too short. Started at unit norm and
  at the target L0, lambda settles near 1 and the FVU was 0.13 (0.70 with the quantile bias alone, 0.42 at unit norm
  alone, where the first steps closed every latent). At 1M tokens: FVU 0.676 / 0.516 / 0.342 -> 0.170 / 0.089 /
  0.056 at L0 16 / 32 / 64, CE-loss recovered 0.555 / 0.648 / 0.770 -> 0.886 / 0.952 / 0.971.
- **Anthropic's pre-activation loss (January 2025) is on by default** (`default_pre_act_coefficient`, threshold 0,
  decoder-norm weighted): the new start leaves 39% / 16% / 9% of the latents dead without it.
- `b_dec` is subtracted before encoding (SAELens's `apply_b_dec_to_input`; an equivalent reparametrisation of b_enc)
  and starts at the data's geometric median rather than zero; AuxK (`Sae.dead_latent_loss`) also reaches dead latents.
- The April update clipped gradients at norm 1: `TrainConfig.max_grad_norm=1.0` does that (off by default: on the FVU
  scale the gradient norm is far below 1, so clipping at 1 would never engage).

On the synthetic dictionary (d 32, 512 features, 1024 latents, L0 4) the code still recovers under half of the true
features: to reach L0 4 against interference that grows with each sample's norm, the ReLU's threshold must sit above
the interference, and a ReLU's threshold is also its shrinkage (BENCHMARKS.md, "Synthetic dictionary recovery").

Optional resampling of dead latents ("Towards Monosemanticity", 2023), on when
`resample_every > 0`: every that many steps, each latent the trainer counts as dead gets the
direction of an input drawn with probability proportional to its squared reconstruction error
(minus b_dec, unit norm) as its decoder row (at the mean norm of the living rows), 0.2 x the mean
living encoder norm along the same direction as its encoder row, and b_enc = 0; the trainer then
clears those latents' Adam moments. Measured on Gemma 3 270M resid_post.6 (4096 latents, 1M tokens, target_l0 32 and
64, `resample_every=200`; BENCHMARKS.md, "SAE family frontier (4096 latents, 1M tokens, pre-activation loss on)"), it
collapsed the SAE: a resampling round that rewrote most of the dictionary at once sent the batch FVU to 11 and the
training L0 to ~1, and the held-out FVU ended at 1.74 and 7.7. That was with the April update's start, before the
departures above. Under the new defaults one run at L0 32 did not collapse (FVU 0.114 against 0.108 without
resampling), but the trainer counted no latent dead, so resampling itself was not exercised. Resampled latents still
start at b_enc = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import SaeConfig
from ..gemm import linear, matmul
from ..metrics import fvu, total_variance as total_variance_of
from .base import Sae, SaeOutput
from .pre_act import configured_or_default, penalty_scale, pre_act_penalty
from .sparsity import ControlledCoefficient, opening_bias, target_shift

INIT_ROWS = 8192
"""Rows of the first training sample used to set the initial b_enc."""

RESAMPLE_ENCODER_SCALE = 0.2
"""A resampled encoder row gets this fraction of the mean living encoder-row norm (Anthropic 2023)."""


def l1_penalty(l1_BF: Tensor, total_variance: Tensor) -> Tensor:
    """sum of a batch's (decoder-weighted) L1 terms / total_variance (the objective's common scale)."""
    return l1_BF.sum() / total_variance


class ReluSae(ControlledCoefficient, Sae, architecture="relu"):
    """ReLU SAE with a decoder-norm-weighted L1 penalty (Anthropic, April 2024 update) (this module's docstring has the recipe)."""

    default_l1_coefficient = 5.0
    default_pre_act_coefficient = 4.0
    """On by default at 4.0 for L0 >= 16, scaled by min(1, target_l0 / 16) below it (`pre_act.at_sparsity`), with threshold
    0 and the decoder-norm weight. On Gemma 3 270M resid_post.6 (4096 latents, 1M tokens, batch 1024) dead latents on
    65,536 held-out tokens at L0 16 / 32 / 64: 39.3% / 15.7% / 9.4% at 0, 4.3% / 0.0% / 0.0% at 4 (L0 16 at 2: 7.7%),
    for held-out FVU 0.170 / 0.089 / 0.056 -> 0.208 / 0.105 / 0.063 (BENCHMARKS.md, "ReLU/L1 starts at its target L0").
    It costs dictionary quality on synthetic data: recovery of the true features 40% -> 37% on the benchmark's
    dictionary (L0 4), and on notebook 08's smaller one 46% / 28% / 22% -> 41% / 10% / 1% at L0 2 / 4 / 8. Pulling only
    the latents the trainer counts dead left the synthetic recovery alone but 19-25% dead on Gemma at L0 16 (4, 16, 64),
    since latents that fire once in the trainer's window are still silent on held-out text. 0 gives the April
    update's recipe (and the better synthetic dictionary)."""

    @property
    def pre_act_coefficient(self) -> float:
        """`cfg.pre_act_coefficient` as given, or the default scaled to the target L0 (`pre_act.configured_or_default`)."""
        return configured_or_default(self.cfg, self.default_pre_act_coefficient)

    unit_norm_decoder = False

    def __init__(self, cfg: SaeConfig, *, device=None, seed: int | None = 0) -> None:
        super().__init__(cfg, device=device, seed=seed)  # unit-norm rows, W_enc = W_dec^T (module docstring)
        self._init_coefficient(self.l1_coefficient)

    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor, target_ND: Tensor | None = None) -> None:
        """`b_dec` at the geometric median, then each b_enc at minus its latent's target-density quantile of the
        projections (`sparsity.opening_bias`), so the first step's L0 is about target_l0 (else k)."""
        super().init_from_data(x_ND)
        x_ND = x_ND[:INIT_ROWS].to(self.device, self.W_enc.dtype)
        target = self.cfg.target_l0 if self.cfg.target_l0 is not None else self.cfg.k
        self.b_enc.copy_(opening_bias(linear(x_ND - self.b_dec, self.W_enc), target))

    @torch.no_grad()
    def calibrate(self, x_ND: Tensor) -> None:
        """With `target_l0` set: shift every b_enc by one common amount (`sparsity.target_shift`) so that the mean L0
        on the sample (up to INIT_ROWS rows) is the target. The controller steers L0 with a lag, and at short budgets
        the run ended up to 19% off target without this (synthetic known-answer test, 200k samples). The per-latent
        differences of the biases, which training chose, are kept; the shift also moves each open latent's
        activation by that amount (a ReLU code's threshold is its shrinkage), so it stays small by design."""
        target = self.cfg.target_l0
        x_ND = x_ND[:INIT_ROWS].to(self.device, self.W_enc.dtype)
        if target is None or x_ND.shape[0] == 0:
            return
        shift = target_shift(linear(x_ND - self.b_dec, self.W_enc, self.b_enc), target)
        if torch.isfinite(shift):
            self.b_enc.sub_(shift)

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
            dec_norm = enc_norm = torch.tensor(1.0, device=self.device)  # the rows' starting norm
        self.W_dec[dead_G] = (dirs_GD * dec_norm).to(self.W_dec.dtype)
        self.W_enc[dead_G] = (dirs_GD * enc_norm * RESAMPLE_ENCODER_SCALE).to(self.W_enc.dtype)
        self.b_enc[dead_G] = 0
        return dead_G


__all__ = ["ReluSae", "l1_penalty"]
