"""BatchTopK SAE (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders").

Recipe: TopK's recipe (unit-norm decoder rows with the parallel gradient removed, encoder initialised
along the decoder's transpose, `b_dec` at the geometric median, AuxK for dead latents) with one change:
while training, the k * B largest ReLU pre-activations *across the whole batch* are kept, so a token
may use more or fewer than k latents and the mean stays k. A token alone has no batch, so inference
uses a global threshold theta instead:

    latents = pre * (pre > theta),   pre = ReLU(W_enc (x - b_dec) + b_enc)

While training, theta is a moving average (decay `threshold_beta`) of the smallest activation
BatchTopK kept in each batch (the paper's estimate), which lags weights that are still moving; when
training ends the trainer calls `calibrate`, which sets theta from the final weights so that the mean
inference L0 on a sample of training inputs is exactly k (held-out L0 then matches k within a few
percent; tests/test_target_l0.py checks it). theta is a buffer in input units, so folding the
input scale divides it (under `relative_selection`, below, it is a ratio and folding leaves it). Before any training step theta is unset (-1) and encoding falls
back to per-token TopK. Saved to SAELens's format it is a JumpReLU with a uniform threshold, which is
how SAELens itself ships BatchTopK SAEs.

Departure: the encoder starts at `encoder_init_scale` (0.1) x W_dec^T, not at W_dec^T. The first batch's selection
is by raw projections of random directions, which concentrate on the rows far from b_dec (on the
synthetic benchmark one row of 1024 took 124 latents and 680 rows none) and, at full scale, overshoot
(initial FVU 3.6); the run then settled on dense, mixed latents (held-out FVU 0.70, no true feature
recovered at 300k tokens). At 0.1 it starts below the data's scale (FVU ~1) and ends at FVU 0.41. That holds for the
paper's batch selection from the first step (`topk_warmup=0`); with the default TopK warm-up the first steps are
TopK's; under `relative_selection` the encoder then starts at `warmup_encoder_init_scale` (0.3), which recovered the
most, and under the paper's absolute ranking it stays at 0.1 (`BatchTopKSae.initial_encoder_scale`).

Dead latents: Anthropic's pre-activation loss (January 2025 update; `SaeConfig.pre_act_coefficient`, default
3.0 here (6.0 until the ninth session), `saes/pre_act.py`, with theta the batch's threshold, the smallest activation kept: `pre_act_theta`) pulls every
pre-activation below theta up toward it (`TopKSae.pre_act_loss`). Without it, on Gemma 3 270M resid_post.6 (1024 latents, k 32, 330k tokens,
batch 1024), 30% of the latents never fired on 8,192 held-out tokens (TopK: 12%): a latent the batch selection
stops picking gets no reconstruction gradient, its encoder row stays short (median norm 0.60 vs 1.29 for the
living ones), and AuxK reaches it only after `TrainConfig.dead_tokens` (55k tokens there; at the end AuxK
counted 17% dead while 30% were silent on held-out text, and a window of 8,192 tokens only took 30% to 26%).
It is not an artefact of the inference threshold: as many latents are silent under batch selection on held-out
batches (29%) and on the training sample (31%). With the loss at 2.9 (measured as its first form, a sum over latents divided by the total variance, at 1e-3): 2.4% dead, FVU 0.0747 vs 0.0731,
held-out L0 31.1 vs 31.3 (1.5: 6.1% dead, FVU 0.0735; 0.9: 11%, 0.0729). At 4096 latents (k 16, 1M tokens) the
sum form's 1e-3 (12 in the present form) cost 0.104 held-out FVU, 2.9 gave 0.086 at 2.8% dead. In the
present form on a second harvest, 3.0 left 16.5% dead (FVU 0.085) and 6.0 0.1% (FVU 0.089): a cliff near 3, so the
default was 6 (BENCHMARKS.md, "Dead latents at 4096 latents"). Since the 90% TopK warm-up (below) the batch phase is
short and the warm-up itself has TopK's coefficient; there 3.0 gave held-out FVU 0.067 / 0.047 / 0.031 at L0 16 / 32 /
64 with 2.7 / 0.1 / 0.0% dead (6.0: 0.069 / 0.048 / 0.033, 0.5 / 0.0 / 0.0%), so the default is 3.0. Cost: a dense [B, F] pre-activation product with
its backward (the whole run: 75 -> 89 s on one CPU thread).

Gradient clip (`Sae.default_max_grad_norm` 1.0, as TopK; `TrainConfig.max_grad_norm` overrides it, 0 turns it off):
the gradient of the per-token summed squared error is clipped at norm 1 (Anthropic's April 2024 update,
dictionary_learning), in the TopK warm-up and the batch phase. On Gemma 3 270M resid_post.6 (4096 latents, 1M tokens,
`benchmarks/bench_frontier.py`, one run each) it took held-out FVU from 0.067 / 0.047 / 0.031 to 0.062 / 0.044 / 0.028
at L0 16 / 32 / 64 and CE-loss recovered from 0.966 / 0.979 / 0.987 to 0.970 / 0.981 / 0.991, with 1.0 / 0.0 / 0.0%
dead on 65,536 held-out tokens (clipped TopK: 0.064 / 0.045 / 0.029 and 0.971 / 0.980 / 0.990). On the synthetic
dictionary it recovers 94.3% (95.9% unclipped). Matryoshka and `relative_selection` keep no clip (`absolute_max_grad_norm`, `default_max_grad_norm`).

Relative selection (`SaeConfig.relative_selection`, off by default; a departure from the paper's encoder that
restores the effect of the paper's setup): the batch is ranked by pre / ||x - b_dec|| (each token's centred norm),
and inference keeps pre > theta * ||x - b_dec|| with theta a ratio (calibrated the same way, unchanged by folding).
Why: ranked by raw pre-activations, the batch's selection follows the tokens' norms (Gemma 3 270M resid_post.6:
||x - median|| spans 626 to 2,098 between the 1st and 99th percentile, up to 30,000), so long tokens take most of the
latents. The paper's comparison runs (github.com/bartbussmann/BatchTopK, main.py) normalise every input to unit norm
first (`input_unit_norm`), which removes that; saekit keeps the SAE on raw activations, so only the ranking is
normalised. Measured on Gemma 3 270M resid_post.6 (4096 latents, k 16, batch 1024; held-out FVU on 16,384 test-split
tokens; the 400k-token rows from scratch scripts not in the repo, the 1M-token ones from `benchmarks/bench_pre_act.py`):
- 400k tokens, pre-activation loss off: absolute 0.095, relative 0.075 (TopK in the same pass, at its default: 0.081).
  The inference threshold does not explain the absolute rule's gap: encoding the held-out tokens with the batch
  selection itself gives the same FVU (0.094).
- Relative training with an *absolute* threshold at inference fails (FVU 0.37): the encoder learns the ratio rule,
  so inference must use it too. SAELens has no such encoder, so these folders name an architecture SAELens
  refuses (`saekit_batchtopk`); saekit reads them exactly.
- 1M tokens, one pass (`bench_pre_act.py topk:16:default batchtopk-relative:16:0 batchtopk-relative:16:1
  batchtopk-relative:16:2.5`), FVU / dead on 65,536 held-out tokens: TopK 0.0647 / 1.4%; relative with the
  pre-activation loss off 0.0595 / 33.5%, at 1.0 0.0650 / 4.3%, at 2.5 0.0666 / 0.1% (held-out L0 15.3-15.5). At
  BatchTopK's absolute default 6 it reached 0.080 / 0.0%, so the relative rule's default is 1.0
  (`relative_pre_act_coefficient`); the loss's threshold is then per token, theta * ||x - b_dec||.
- At L0 16, 32 and 64 (`bench_frontier.py`, BENCHMARKS.md) relative BatchTopK's FVU was 0.067 / 0.044 / 0.029
  against TopK's 0.068 / 0.047 / 0.033, with CE-loss recovered 0.967 / 0.982 / 0.988 against 0.966 / 0.982 / 0.986.
- On the synthetic dictionary (d 32, 512 features, 1024 latents, L0 4, 1M samples) recovery at cosine > 0.9 goes
  from 12% (absolute) to 35% (relative); TopK recovers 88%.

TopK warm-up (`SaeConfig.topk_warmup`, default 0.9 here, 0.5 under `relative_selection`; 0 is the paper's recipe):
the first 90% of training keeps k latents per token, as TopK does (the same code, kernels and pre-activation
threshold, TopK's default pre-activation coefficient, and the encoder at `warmup_encoder_init_scale`, 0.3), and the
batch's selection takes over for the rest, while the learning rate decays; the inference threshold's moving average
starts with the batch phase and `calibrate` sets it from the final weights as before, so the trained SAE is a
BatchTopK SAE in every respect. Why: from the first step, the batch's selection gives the latents that start strong
most of the activations, and the rest die or learn mixtures. On the synthetic dictionary (d 32, 512 features, 1024
latents, L0 4, 1M samples; `benchmarks/bench_synthetic.py`, one run each) batch selection from the first step
recovered 11% of the true features at cosine > 0.9 (relative ranking: 41%; TopK: 96%). Switching at 0.3 / 0.5 / 0.7
of training recovered 49% / 60% / 64% with BatchTopK's own coefficient (6 x k / 16) in the warm-up and the encoder
at 0.1 (relative: 80% / 84% / 83%). Three changes took the absolute ranking to TopK's level, each measured alone
(BENCHMARKS.md, "Synthetic dictionary recovery"): the warm-up at 0.9 (66.8%), TopK's coefficient in the warm-up
(0.5: 66.0%, 0.7: 77.5%, 0.9: 88.1%) and the encoder at 0.3 with both (0.5: 82.0%, 0.7: 87.7%, **0.9: 95.9%**,
TopK 96.1%). BatchTopK's coefficient (6 then) was tuned for the batch phase's dead latents, and in a per-token phase it pulls every
latent toward each token's threshold, which is TopK at 8x its default coefficient (TopK itself recovered 88% at
4x). The batch phase still loses features when it runs longer: the features the TopK phase found drift toward
mixtures once the batch's selection decides (the batch's latents go to its high-norm tokens). The reference loop
(github.com/bartbussmann/BatchTopK's recipe, re-implemented in a scratch script for this comparison:
Kaiming-initialised encoder, lr 3e-4, AuxK after 5 silent batches) recovered 0.4% on the same data (12.5% at
saekit's lr 4e-3), so that loss is the recipe's, not an artefact of saekit's code. Gemma 3 270M's frontier for these
defaults is in BENCHMARKS.md ("Absolute BatchTopK warms up as TopK").

Training encode and decode are sparse (the same backward as TopK's kernels): rows carry a padded
[B, K_max] code whose padding has value 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import SaeConfig
from ..gemm import linear
from .kernels import encode_backward, exact_values, rows_of, selection_pre
from .pre_act import at_sparsity
from .topk import TopKSae

CALIBRATION_ROWS = 8192
"""Rows of training inputs used to set the final inference threshold (a [rows, F] matrix)."""


class _BatchTopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, k_total: int, relative: bool, select_dtype, rows):
        pre_BF = selection_pre(x_BD, W_enc_FD, b_enc_F, select_dtype)
        pre_RF = rows_of(pre_BF, rows, x_BD.dtype)  # before the ReLU: the pre-activation loss's input
        pre_BF = pre_BF.relu_()
        B, F_ = pre_BF.shape
        score_BF = pre_BF / token_norm(x_BD).to(pre_BF.dtype) if relative else pre_BF  # what the batch is ranked by
        flat_vals, flat_idx = score_BF.view(-1).topk(min(k_total, B * F_), sorted=False)
        keep_N = torch.zeros(B * F_, dtype=torch.bool, device=pre_BF.device)
        keep_N.scatter_(0, flat_idx, flat_vals > 0)  # unique indices; no boolean indexing (a host sync on a GPU)
        keep_BF = keep_N.view(B, F_)  # [B, F]
        k_max = max(int(keep_BF.sum(-1).max()), 1)
        # the kept values of each row, padded with zeros to the busiest row's count
        vals_BK, idx_BK = torch.where(keep_BF, pre_BF, -1.0).topk(k_max, dim=-1, sorted=False)
        del pre_BF, score_BF, keep_BF
        if vals_BK.dtype != x_BD.dtype:  # chosen in reduced precision: the kept values themselves in full
            vals_BK = torch.where(vals_BK > 0, exact_values(x_BD, W_enc_FD, b_enc_F, idx_BK), 0.0)
        acts_BK = vals_BK.clamp_min_(0)
        ctx.save_for_backward(x_BD, W_enc_FD, idx_BK, acts_BK)
        ctx.mark_non_differentiable(idx_BK, pre_RF)
        return acts_BK, idx_BK, pre_RF

    @staticmethod
    def backward(ctx, grad_acts_BK: Tensor, _grad_idx, _grad_pre):
        x_BD, W_enc_FD, idx_BK, acts_BK = ctx.saved_tensors
        return (*encode_backward(ctx, x_BD, W_enc_FD, idx_BK, acts_BK, grad_acts_BK), None, None, None, None)


def token_norm(x_in_BD: Tensor) -> Tensor:
    """||x - b_dec|| of each row [B, 1] (at least the dtype's smallest normal number): the scale
    `relative_selection` measures pre-activations against."""
    return x_in_BD.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x_in_BD.dtype).tiny)


def batch_topk_encode(
    x_BD: Tensor, W_enc_FD: Tensor, b_enc_F: Tensor, k: int, relative: bool = False,
    select_dtype: torch.dtype | None = None, rows: slice | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the k * B largest ReLU pre-activations of the batch (with `relative`, the k * B largest
    pre / ||x||, x the rows as given: x - b_dec): (values [B, K_max], indices [B, K_max], the pre-activation's rows
    `rows` [R, F] for the pre-activation loss, empty for None). `select_dtype` as `kernels.topk_encode_train`."""
    return _BatchTopKEncode.apply(x_BD, W_enc_FD, b_enc_F, k * x_BD.shape[0], relative, select_dtype, rows)


class BatchTopKSae(TopKSae, architecture="batchtopk"):
    """BatchTopK SAE (Bussmann et al. 2024): the k·B largest pre-activations over the batch while training, a learned global threshold at inference (relative to each token's norm under `relative_selection`; this module's docstring has the recipe)."""

    encoder_init_scale = 0.1
    """Without a TopK warm-up (`topk_warmup=0`, the paper's recipe) the encoder starts at 0.1 x W_dec^T (module
    docstring); with one it starts at `warmup_encoder_init_scale` (0.3), where the TopK phase finds most features."""
    default_topk_warmup = 0.9
    """The paper's absolute ranking: the first 90% of training per token (module docstring, "TopK warm-up": synthetic
    recovery 60% at 0.5 -> 96% at 0.9 with TopK's pre-activation coefficient in the warm-up)."""
    relative_topk_warmup = 0.5
    """Under `relative_selection` (93% of the synthetic dictionary recovered at 0.5; not re-measured at 0.9)."""
    default_pre_act_coefficient = 3.0
    """The batch phase's: without the loss 30% of the latents were dead on held-out text; 6 until the 90% TopK warm-up,
    after which 3 reconstructs better at every L0 with under 3% dead (this module's docstring)."""
    absolute_max_grad_norm: float | None = 1.0
    """The default clip under the paper's absolute ranking: TopK's (1.0 on the papers' scale, `train.grad_clip`), also
    through the batch phase. On Gemma (4096 latents, 1M tokens) held-out FVU 0.067 / 0.047 / 0.031 -> 0.062 / 0.044 /
    0.028 at L0 16 / 32 / 64, CE-loss recovered 0.966 / 0.979 / 0.987 -> 0.970 / 0.981 / 0.991, level with clipped
    TopK; synthetic recovery 95.9% -> 94.3% (module docstring, "Gradient clip"). Under `relative_selection`: no clip
    (its recipe was measured without one)."""
    relative_pre_act_coefficient = 1.0
    """The default under `relative_selection`, where 6 costs FVU (frontier runs at L0 16: 0.080 at 6, 0.067 at 1.0; module docstring)."""

    @property
    def default_max_grad_norm(self) -> float | None:  # type: ignore[override]  # a ClassVar on Sae, per instance here
        """`TrainConfig.max_grad_norm` when it is None: `absolute_max_grad_norm`, or no clip under `relative_selection`."""
        return None if self.relative else self.absolute_max_grad_norm

    @property
    def topk_warmup(self) -> float:
        """`cfg.topk_warmup`, or the ranking's default: `default_topk_warmup` (0.9) for the paper's absolute ranking,
        `relative_topk_warmup` (0.5) under `relative_selection`."""
        w = self.cfg.topk_warmup
        return float(w if w is not None else self.relative_topk_warmup if self.relative else self.default_topk_warmup)

    def default_pre_act_for_rule(self) -> float:
        """The default pre-activation coefficient of the selection rule in use (before `TopKSae.pre_act_coefficient`
        scales it for k below 16)."""
        return float(self.relative_pre_act_coefficient if self.relative else self.default_pre_act_coefficient)

    def pre_act_coefficient_for(self, per_token: bool) -> float:
        """The batch phase's coefficient is `pre_act_coefficient`. The absolute ranking's TopK warm-up (`per_token`) uses
        TopK's default instead (`TopKSae.default_pre_act_coefficient`, 0.75, scaled by min(1, k / 16)) unless
        `cfg.pre_act_coefficient` is given: BatchTopK's own (then 6, tuned for the batch phase's dead latents) in the warm-up cost
        the synthetic dictionary a third of its features (module docstring, "TopK warm-up"). `relative_selection`
        keeps its own coefficient in both phases (measured that way)."""
        if per_token and self.cfg.pre_act_coefficient is None and not self.relative:
            return at_sparsity(TopKSae.default_pre_act_coefficient, self.cfg.k)
        return self.pre_act_coefficient

    @property
    def relative(self) -> bool:
        """`SaeConfig.relative_selection`: thresholds are ratios pre / ||x - b_dec|| rather than activations."""
        return bool(self.cfg.relative_selection)

    @property
    def scale_with_input(self) -> tuple[str, ...]:
        return () if self.relative else ("threshold",)  # a ratio does not change with the input's scale

    @property
    def saelens_architecture(self) -> str | None:
        """For inference a BatchTopK SAE is a JumpReLU SAE with its one threshold on every latent; SAELens has no
        threshold relative to the token's norm (`relative_selection`), so those folders name an architecture it refuses."""
        return None if self.relative else "jumprelu"

    def saelens_fields(self) -> dict:
        return {}

    def saelens_tensors(self) -> dict[str, Tensor]:
        sd = super().saelens_tensors()
        sd["threshold"] = self.threshold.detach().to(self.W_enc.dtype).expand(self.n_latents)  # [F]
        return sd

    def from_saelens_tensors(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        sd = super().from_saelens_tensors(t)
        sd["threshold"] = sd["threshold"].reshape(-1)[0].float()  # [] (exact unless stored in bf16: see disk.py)
        return sd

    def __init__(self, cfg: SaeConfig, *, device=None, seed: int | None = 0) -> None:
        super().__init__(cfg, device=device, seed=seed)
        self.register_buffer("threshold", torch.tensor(-1.0, device=device))

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        if float(self.threshold) < 0:  # never trained: no estimate yet
            return super().encode_raw(x_BD)
        x_in_BD = x_BD - self.b_dec
        pre_BF = linear(x_in_BD, self.W_enc, self.b_enc).relu_()
        theta = self.threshold.to(pre_BF.dtype)
        if self.relative:
            theta = theta * token_norm(x_in_BD)  # [B, 1]
        return pre_BF * (pre_BF > theta), pre_BF.new_empty(0, dtype=torch.long)

    def plain_encoder(self) -> dict:
        if float(self.threshold) < 0:  # never trained: per-token TopK, as encode_raw
            return super().plain_encoder()
        rule = "relative_threshold" if self.relative else "threshold"
        return self._plain(rule, threshold=self.threshold.detach().float().cpu())

    def _scores(self, x_in_BD: Tensor, acts_BK: Tensor) -> Tensor:
        """What the selection ranks, for the kept values `acts_BK` [B, K] of rows `x_in_BD` = x - b_dec."""
        return acts_BK / token_norm(x_in_BD) if self.relative else acts_BK

    @torch.no_grad()
    def update_threshold(self, scores_BK: Tensor) -> None:
        """Moving average of the smallest kept score (`_scores`; the inference threshold's estimate)."""
        # in tensor ops only (no boolean indexing, no read of the threshold): no host sync on a GPU
        smallest = torch.where(scores_BK > 0, scores_BK, torch.inf).min().float()  # inf: the batch kept nothing
        beta = self.cfg.threshold_beta
        averaged = self.threshold * beta + (1 - beta) * smallest
        new = torch.where(self.threshold < 0, smallest, averaged)  # the first estimate starts the average
        self.threshold.copy_(torch.where(torch.isfinite(smallest), new, self.threshold))

    @torch.no_grad()
    def calibrate(self, x_ND: Tensor) -> None:
        """Set theta from the final weights so that inference keeps k latents per token on average: the
        (k * N)-th largest ReLU pre-activation (or ratio, with `relative_selection`) over the sample's N rows
        (up to CALIBRATION_ROWS; the moving average only serves while training, where it lags the weights)."""
        x_ND = x_ND[:CALIBRATION_ROWS].to(self.device, self.W_enc.dtype)
        if x_ND.shape[0] == 0:
            return
        x_in_ND = x_ND - self.b_dec
        pre_NF = linear(x_in_ND, self.W_enc, self.b_enc).relu_()
        if self.relative:
            pre_NF = pre_NF / token_norm(x_in_ND)
        n_keep = min(self.cfg.k * x_ND.shape[0], pre_NF.numel())
        kth = pre_NF.view(-1).topk(n_keep, sorted=False).values.min()  # the smallest value kept
        below = pre_NF[pre_NF < kth]
        # theta halfway to the next smaller value: `pre > theta` keeps exactly the top k * N
        nxt = below.max() if below.numel() else torch.zeros((), dtype=kth.dtype, device=kth.device)
        self.threshold.copy_(((kth + nxt) / 2).float())

    def per_token_selection(self, progress: float) -> bool:
        """Per-token TopK for the first `topk_warmup` of training, the batch's selection after it."""
        return progress < self.topk_warmup

    def pre_act_theta(self, acts_BK: Tensor, x_in_BD: Tensor, per_token: bool = False) -> Tensor:
        """The pre-activation loss's threshold (`TopKSae.pre_act_loss`): the batch's, the smallest activation
        BatchTopK kept (a scalar, detached; 0 when nothing was kept); with `relative_selection` the smallest kept
        ratio times each row's norm [B, 1]. No host sync (boolean indexing would). In the per-token phase
        (`per_token`), TopK's: each token's smallest kept activation."""
        if per_token:
            return super().pre_act_theta(acts_BK, x_in_BD)
        kept_BK = self._scores(x_in_BD, acts_BK.detach())
        theta = torch.where(kept_BK > 0, kept_BK, torch.inf).min()
        theta = torch.where(torch.isfinite(theta), theta, torch.zeros_like(theta))
        return theta * token_norm(x_in_BD) if self.relative else theta

    def _encode_train(
        self, x_in_BD: Tensor, rows: slice | None = None, per_token: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        if per_token:  # the TopK phase: the inference threshold is estimated from the batch phase only
            return super()._encode_train(x_in_BD, rows)
        acts_BK, idx_BK, pre_RF = batch_topk_encode(
            x_in_BD, self.W_enc, self.b_enc, self.cfg.k, self.relative, self.select_dtype, rows
        )
        if self.training:
            self.update_threshold(self._scores(x_in_BD, acts_BK.detach()))
        return acts_BK, idx_BK, pre_RF

__all__ = ["BatchTopKSae", "batch_topk_encode", "token_norm"]
