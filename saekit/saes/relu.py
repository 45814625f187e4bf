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
- The April update clipped gradients at norm 1: `TrainConfig.max_grad_norm=1.0` does that, on the update's scale
  (`train.grad_clip`). Off by default for ReLU/L1 (`Sae.default_max_grad_norm`): its recipe here was tuned without it.

TopK warm-up (`SaeConfig.topk_warmup`; by default the Trainer plans it from the run's steps, `budget_topk_warmup`:
the ReLU code keeps the last 100 steps or more, at most 90% warm-up, none in runs of 100 steps or fewer; 0 is the
April update's code from the first step): the first part of training keeps, for each token, the round(target_l0) latents with the largest projections
W_enc (x - b_dec) at those values (FVU + AuxK: no L1, no pre-activation loss; the encoder starts at
`Sae.warmup_encoder_init_scale`), holds the decoder rows at unit norm, and sets every b_enc to minus the batch's
threshold (`sparsity.batch_threshold`). The ReLU code, its decoder-norm-weighted L1, the free row norms and the
controller take over after it. The unit rows matter: with the April update's free norms a latent can grow its encoder
row, shrink its decoder row and win every token's selection (a warm-up tried that way left 99% of the latents dead).
Trained with its own code from the first step, ReLU/L1 recovered 36.7% of the synthetic dictionary (d 32, 512 features,
1024 latents, L0 4, 1M samples; FVU 0.627): to reach L0 4 against interference that grows with each sample's norm,
the ReLU's threshold must sit above the interference, and a ReLU's threshold is also its shrinkage. With the warm-up it
recovers 91.4% (FVU 0.449): the directions are found by the TopK phase and kept through the short ReLU phase. Two
pieces make the hand-over work: the encoder's gain, least squares of each token's relative error (`_hand_over`), and
the coefficient starting at `warmup_l1_coefficient`. On Gemma 3 270M resid_post.6 (4096 latents, 1M tokens, the
budget's plan: 0.898) the default takes held-out FVU from 0.208 / 0.108 / 0.067 (no warm-up) to 0.100 / 0.070 / 0.050
at L0 16 / 32 / 64 and CE-loss recovered from 0.860 / 0.942 / 0.966 to 0.943 / 0.967 / 0.978, with 2.4% / 0.8% / 0.0%
dead on 65,536 held-out tokens. With the gain's plain least-squares sums, one outlier token in the hand-over's batch
could halve the gain, and the run ended at 0.151 / 29% dead. At short budgets 0.9 was worse than no warm-up, hence
the budget's plan (BENCHMARKS.md, "ReLU/L1's TopK warm-up").

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

import math

import torch
import torch.distributed as dist
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


def hand_over_gain(x_BD: Tensor, r_BD: Tensor) -> Tensor:
    """[numerator, denominator] (float32) of the gain c minimising sum_b |x_b - c r_b|^2 / |x_b|^2: every token's
    relative error counts once, so a token of outlying norm (on Gemma 3 270M some apostrophes, 15-25x the typical norm)
    cannot decide c alone, as it can in the plain least-squares sums. Tokens at x = 0 are left out."""
    w_B = x_BD.float().pow(2).sum(-1)
    w_B = torch.where(w_B > 0, 1.0 / w_B.clamp_min(1e-30), torch.zeros_like(w_B))
    return torch.stack([((x_BD * r_BD).sum(-1).float() * w_B).sum(), (r_BD.pow(2).sum(-1).float() * w_B).sum()])


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
    """Outside the TopK warm-up (the April update: the L1 is weighted by the free rows' norms). During the warm-up the
    rows are held at unit norm (`before_optimizer_step`, `after_optimizer_step`)."""

    default_topk_warmup = 0.0
    """What `topk_warmup` is outside a Trainer's run (and the registry's sign that the phase exists). A Trainer plans
    the default from the budget (`plan`, `budget_topk_warmup`)."""

    relu_phase_steps = 100
    """`budget_topk_warmup`: the ReLU code's own phase lasts at least this many steps (all of a shorter run)."""

    max_budget_topk_warmup = 0.9
    """`budget_topk_warmup`'s ceiling: JumpReLU's and Gated's warm-up, the best measured at 1M tokens."""

    @classmethod
    def budget_topk_warmup(cls, steps: int) -> float:
        """The default TopK warm-up for a run of `steps` optimiser steps: max(0, 1 - relu_phase_steps / steps), at most
        `max_budget_topk_warmup`, so the ReLU phase keeps at least 100 steps (a run of 100 steps or fewer has none).
        One fixed fraction does not fit every budget. Measured on Gemma 3 270M resid_post.6 (4096 latents, L0 16, batch
        1024; held-out FVU / dead on 16,384 test-split tokens; BENCHMARKS.md, "ReLU/L1's TopK warm-up"): 293 steps
        0.271 / 38% with no warm-up, 0.176 / 19% at this rule's 0.66, 0.172 / 22% at 0.49, 0.430 at 0.9; 977 steps 0.205
        with none, 0.127 at 0.5, 0.123 / 15% at 0.85, 0.151 / 29% at this rule's 0.898 and 0.096 / 8% at 0.9; 48 steps
        (1024 latents, L0 32, train-split tokens) 0.300 with none, 1.13 at 0.5 (rule: none). So every warm-up measured
        beat the April update's code above ~300 steps, and none did at 48. The spread at 977 steps (0.898 and 0.9 hand
        over three steps apart) was the hand-over's gain taken from one batch, which one outlier token could decide;
        with the per-token weights (`hand_over_gain`) both end at 0.094-0.095 / 6-7% dead on those tokens (0.097 /
        2.2% dead on 65,536). On the synthetic dictionary (d 32, 512 features, 1024 latents, L0 4) 977 steps recovered
        36.7% of the true features with none and 91.4% at this rule's 0.898 (also at 0.85 and 0.9); 196 steps 4.9% with
        none and 22.7% at this rule's 0.49 (24.6% with the former gain)."""
        return min(cls.max_budget_topk_warmup, max(0.0, 1.0 - cls.relu_phase_steps / max(int(steps), 1)))

    _planned_topk_warmup: float | None = None
    """The budget's warm-up once a Trainer has planned this SAE (`plan`); None before. The buffer
    `planned_topk_warmup` keeps it for a resumed run (-1: not planned)."""

    @property
    def topk_warmup(self) -> float:
        """`cfg.topk_warmup` as given; else the budget's (`budget_topk_warmup`) once a Trainer planned the run, 0 before."""
        w = self.cfg.topk_warmup
        if w is not None:
            return float(w)
        return self._planned_topk_warmup if self._planned_topk_warmup is not None else self.default_topk_warmup

    @torch.no_grad()
    def plan(self, steps: int, fresh: bool) -> None:
        """Settle the default TopK warm-up from the run's steps (`budget_topk_warmup`). On a fresh SAE still at its
        construction weights, a warm-up also takes its start: the encoder at `warmup_encoder_init_scale`, nothing
        handed over yet, the coefficient at `warmup_l1_coefficient`. An SAE given other weights before its first run
        (a fine-tune) keeps them and the April update's code (no warm-up); a resumed run keeps what it planned."""
        if self.cfg.topk_warmup is not None:
            return
        if not fresh and float(self.planned_topk_warmup) >= 0:  # resumed: the plan it started with
            self._planned_topk_warmup = float(self.planned_topk_warmup)
            return
        untouched = torch.equal(self.W_enc, self.W_dec * self.encoder_init_scale) and not bool(self.b_enc.any())
        self._planned_topk_warmup = self.budget_topk_warmup(steps) if untouched else 0.0
        self.planned_topk_warmup.fill_(self._planned_topk_warmup)
        if self._planned_topk_warmup > 0:
            self.W_enc.copy_(self.W_dec * self.warmup_encoder_init_scale)
            self.handed_over.fill_(0.0)
            self.log_coefficient.fill_(math.log(self.l1_coefficient))

    _warming: bool | None = None
    """Whether the last training forward in this process was a TopK warm-up step (None: none yet). The decoder
    constraint hooks read it, and its change to False marks the hand-over (`_hand_over`)."""

    saekit_state = ControlledCoefficient.saekit_state + ("handed_over", "planned_topk_warmup")
    saekit_state_defaults = {**ControlledCoefficient.saekit_state_defaults, "handed_over": 1.0, "planned_topk_warmup": -1.0}
    """Folders written before the TopK warm-up existed were trained without one: nothing left to hand over; before
    the budget's plan, none was planned."""

    def _topk_forward(self, x_BD: Tensor, dead_mask: Tensor | None) -> SaeOutput:
        """The TopK warm-up's step (`SaeConfig.topk_warmup`): each token keeps the warmup_k latents with the largest
        projections W_enc (x - b_dec) at those values; FVU + AuxK (no L1, no pre-activation loss). While training,
        every b_enc is set to minus the batch's threshold (`sparsity.batch_threshold`), so the ReLU code opens at
        about the warm-up's L0 when it takes over."""
        proj_BF = linear(x_BD - self.b_dec, self.W_enc)
        return self.projection_topk_step(x_BD, proj_BF, proj_BF, dead_mask)

    def before_optimizer_step(self) -> None:
        """During the TopK warm-up the decoder rows stay at unit norm: with free norms a latent that grows its
        encoder row and shrinks its decoder row wins every token's selection (half the latents died that way)."""
        if self._warming:
            self.remove_gradient_parallel_to_decoder_directions()

    def after_optimizer_step(self) -> None:
        if self._warming:
            self.set_decoder_norm_to_unit_norm()

    def __init__(self, cfg: SaeConfig, *, device=None, seed: int | None = 0) -> None:
        super().__init__(cfg, device=device, seed=seed)  # unit-norm rows, W_enc = W_dec^T (module docstring)
        self._init_coefficient(self.l1_coefficient)
        # 1 once the ReLU code has taken over from the TopK warm-up (`_hand_over`); a buffer, so a resumed run knows
        self.register_buffer("handed_over", torch.tensor(0.0 if self.topk_warmup > 0 else 1.0, device=self.W_enc.device))
        self.register_buffer("planned_topk_warmup", torch.tensor(-1.0, device=self.W_enc.device))  # `plan`

    @torch.no_grad()
    def _hand_over(self, x_BD: Tensor) -> None:
        """The ReLU code's first training step after the TopK warm-up: scale every encoder row and b_enc by one common
        gain c, the least-squares factor of this batch's relative errors: c = sum_b <x_b, r_b> / |x_b|^2 over
        sum_b |r_b|^2 / |x_b|^2, with x_b the token minus b_dec and r_b = ReLU(pre) @ W_dec. ReLU(c pre) = c ReLU(pre),
        so L0 is unchanged; the gain makes up, on average, for the ReLU's shrinkage (each kept value loses the
        threshold that the TopK values did not), which the short ReLU phase was too short to learn: on Gemma 3 270M
        (1024 latents, L0 32, 48 steps) held-out FVU 0.436 -> 0.299 (0.365 with no warm-up); gain ~1.7.

        Each token counts once (`hand_over_gain`): with the plain sums one outlier token decided the gain. On Gemma 3
        270M resid_post.6 one batch in five holds a token 15-25x the typical norm, and one or two such tokens carry
        55-90% of sum |r|^2; those batches gave 0.52-0.85 where the others gave 1.25-1.28, and a run handing over on such a
        batch ended at held-out FVU 0.152 / 27% dead instead of 0.096 / 8% (1M tokens, L0 16)."""
        x_in_BD = x_BD - self.b_dec
        r_BD = matmul(linear(x_in_BD, self.W_enc, self.b_enc).relu(), self.W_dec)
        num_den = hand_over_gain(x_in_BD, r_BD)
        if dist.is_available() and dist.is_initialized():  # data-parallel: the global batch's factor on every rank
            dist.all_reduce(num_den)
        num, den = num_den
        gain = torch.where(den > 0, num / den.clamp_min(1e-30), torch.ones_like(den)).clamp_min(1e-3).to(self.W_enc.dtype)
        self.W_enc.mul_(gain)
        self.b_enc.mul_(gain)
        self.handed_over.fill_(1.0)

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

    warmup_l1_coefficient = 1.0
    """The coefficient's starting value after a TopK warm-up (the default): at 5.0 the short ReLU phase spent itself
    closing latents (notebook 08's toy, 293 steps: training L0 8 -> 2 after the hand-over, held-out FVU 0.583 / 0.489 /
    0.500 at L0 2 / 4 / 8; at 1.0: 0.530 / 0.388 / 0.306). On Gemma 3 270M at 1M tokens the controller ended near 1.3
    from 5.0."""

    @property
    def l1_coefficient(self) -> float:
        """The configured (starting) coefficient, else `warmup_l1_coefficient` with the TopK warm-up and
        `default_l1_coefficient` without it; `coefficient(progress)` is the one in use."""
        c = self.cfg.l1_coefficient
        if c is not None:
            return c
        return self.warmup_l1_coefficient if self.topk_warmup > 0 else self.default_l1_coefficient

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        pre_BF = linear(x_BD - self.b_dec, self.W_enc, self.b_enc)
        return pre_BF.relu_(), pre_BF.new_empty(0, dtype=torch.long)

    def plain_encoder(self) -> dict:
        return self._plain("relu")

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        x_BD = x_BD.to(self.W_enc.dtype)
        warming = progress < self.topk_warmup
        if self.training:
            # the first ReLU step after the warm-up in this process (or, resumed, in the run: the buffer says)
            if not warming and self.topk_warmup > 0 and (self._warming or (self._warming is None and not bool(self.handed_over))):
                self._hand_over(x_BD)
            self._warming = warming
        if warming:
            return self._topk_forward(x_BD, dead_mask)
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


__all__ = ["ReluSae", "hand_over_gain", "l1_penalty"]
