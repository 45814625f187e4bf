"""Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka SAEs";
Nabeshima 2024).

The dictionary is a set of nested prefixes m_1 < m_2 < ... < m_n = n_latents (`matryoshka_prefixes`,
with n_latents always the last level). Codes come from one BatchTopK over the whole dictionary
(`batchtopk.py`: k * B per batch while training, the estimated global threshold at inference); each
prefix must reconstruct on its own from its own latents:

    x_hat_m = sum_{active i < m} latents_i W_dec_i + b_dec
    loss = (w * sum over inner levels m of FVU(x, x_hat_m) + FVU(x, x_hat)) / (w * (levels - 1) + 1) + AuxK

so the first latents learn general, high-level features and later ones refine them (no feature
absorption into a wide dictionary's long tail). The mean (rather than the paper's sum) keeps the loss
on the FVU scale that AuxK's weight assumes; Adam is indifferent to the overall factor. Every other
recipe element is BatchTopK's. SaeOutput.fvu is the full dictionary's FVU.

Dead latents: the nested losses starve the later levels. On Gemma 3 270M resid_post.6 (1024 latents, prefixes
64/256/1024, k 32, 330k tokens, batch 1024) 52% of the latents never fired on 8,192 held-out tokens: 1.6% of the
first 64, 25% of the next 192, 63% of the last 768 (AuxK, 55k-token window, counted 33% at the end). BatchTopK's
pre-activation loss (`BatchTopKSae.pre_act_theta`, `SaeConfig.pre_act_coefficient`) was on here at 1.5 (`saes/pre_act.py`;
measured in its first form, a sum over latents divided by the total variance, at 5e-4 at 1024 latents): 0.9% dead (0.0 / 0.5 / 1.0% by level),
FVU 0.0866 as without it; 0.9 left 4.2%, 2.9 left none at FVU 0.091.
With BatchTopK's 90% TopK warm-up (ninth session; TopK's coefficient in the warm-up), 1.5 in the short batch phase
left 6.1% of 4096 latents dead at L0 16 (1M tokens, 65,536 held-out tokens); 3.0 left 0.7% at FVU 0.078 and CE-loss
recovered 0.962 (1.5: 0.075 / 0.962; 6.0: 0.1% at 0.088 / 0.948), so the batch phase's default is 3.0.
On the synthetic dictionary (d 32, 512 features, 1024 latents, L0 4, 1M samples) the warm-up took recovery from 34%
to 70%; the nested loss itself holds it there (its TopK phase alone recovers 71%): each inner level must also answer
for rare features it has no latent for, so the outer latents learn mixtures (BENCHMARKS.md, "Synthetic dictionary
recovery", ninth session).
The inner levels' weight w (`SaeConfig.matryoshka_inner_weight`, Chanin et al. 2025's "balance" Matryoshka SAEs;
1.0, the default, is the paper's equal weights) trades the two measured goods against each other (2026-12-07's
data, one run each; BENCHMARKS.md, "Synthetic dictionary recovery"):
- synthetic dictionary (flat, no hierarchy; prefixes 64/256, 1M samples): recovered 70.3% / 81.8% / 88.1% / 91.6% /
  94.9% at w = 1 / 0.5 / 0.3 / 0.2 / 0.1 (plain BatchTopK, w = 0: 94.5%), first-64 FVU 0.497 / 0.556 / 0.599 /
  0.650 / 0.803 (w = 0: 0.966);
- Gemma 3 270M resid_post.6 (4096 latents, L0 16, 1M tokens; 65,536 held-out tokens), w = 1 / 0.2 / BatchTopK: FVU
  0.078 / 0.068 / 0.066, CE-loss recovered 0.958 / 0.966 / 0.968, FVU of the first 256 latents alone 0.130 / 0.148 /
  0.843, first-letter absorption (`saekit.evals.absorption`) full rate 0.027 / 0.047 / 0.051 and absorption
  fraction 0.064 / 0.079 / 0.124.
So 0.2 meets the synthetic recovery target and matches BatchTopK's reconstruction while keeping the nested prefixes,
but gives back most of the full-absorption advantage, the reason to choose Matryoshka; the default stays the paper's.
Neither paper has a dead-latent remedy of its own: Bussmann et al. train with BatchTopK's AuxK, Nabeshima's
code (L1 with random prefixes) re-sorts the latents by use instead.
"""

from __future__ import annotations

from torch import Tensor

from ..gemm import matmul
from ..metrics import fvu, total_variance as total_variance_of
from .base import SaeOutput
from .batchtopk import BatchTopKSae
from .kernels import sparse_decode
from .topk import sparse_fired_l0


class MatryoshkaSae(BatchTopKSae, architecture="matryoshka"):
    """Matryoshka BatchTopK SAE: nested prefixes of the latents each reconstruct the input on their own (this module's docstring has the recipe)."""

    required_fields = {"matryoshka_prefixes": "(128, 512, 2048)"}
    default_pre_act_coefficient = 3.0
    """The batch phase's, as BatchTopK's (module docstring: 0.7% dead at 4096 latents and L0 16 after the 90% TopK
    warm-up, where 1.5 left 6.1%); the warm-up takes TopK's (`BatchTopKSae.pre_act_coefficient_for`)."""
    absolute_max_grad_norm = None
    """No clip by default (BatchTopK's is 1.0): not yet measured with Matryoshka's nested loss on Gemma; on the
    synthetic dictionary the clip left recovery at 70.3% (70.3% unclipped)."""
    relative_pre_act_coefficient = 0.75
    """Under `relative_selection` (Gemma 3 270M resid_post.6, 4096 latents, L0 16, 1M tokens; dead on 65,536 held-out
    tokens): 1.5 left no latent dead at FVU 0.085, 0.25 left 21% dead at FVU 0.077; 0.75 is measured in BENCHMARKS.md's
    frontier."""

    default_inner_weight = 1.0
    """`SaeConfig.matryoshka_inner_weight` when it is None: the paper's equal weights (the module docstring has the
    trade-off measured at 0.2, which recovers 92% of the synthetic dictionary where 1.0 recovers 70%)."""

    @property
    def inner_weight(self) -> float:
        """Each inner prefix's loss weight relative to the full dictionary's (`SaeConfig.matryoshka_inner_weight`)."""
        w = self.cfg.matryoshka_inner_weight
        return float(self.default_inner_weight if w is None else w)

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        x_BD = x_BD.to(self.W_enc.dtype)
        x_in_BD = x_BD - self.b_dec
        per_token = self.per_token_selection(progress)
        acts_BK, idx_BK, pre_RF = self._encode_train(x_in_BD, self.pre_act_rows(x_BD.shape[0]), per_token)
        total_variance = total_variance_of(x_BD)
        levels = self.cfg.matryoshka_levels
        fvus = []
        x_hat_BD = x_BD
        for m in levels:
            acts_m_BK = acts_BK * (idx_BK < m) if m < self.n_latents else acts_BK
            x_hat_BD = sparse_decode(acts_m_BK, idx_BK, self.W_dec) + self.b_dec
            fvus.append(fvu(x_BD, x_hat_BD, total_variance))
        fvu_ = fvus[-1]  # x_hat_BD is now the full dictionary's reconstruction
        w = self.inner_weight
        nested = (w * sum(fvus[:-1]) + fvu_) / (w * (len(fvus) - 1) + 1)
        aux = nested - fvu_
        if dead_mask is not None and self.cfg.auxk_alpha > 0:  # zero when none is dead
            aux = aux + self.auxk_loss(x_in_BD, (x_BD - x_hat_BD).detach(), dead_mask, total_variance)
        aux = aux + self.pre_act_loss(x_in_BD, acts_BK, total_variance, pre_RF, per_token)
        return SaeOutput(x_hat_BD, acts_BK, idx_BK, fvu_, aux, fvu_ + aux, *sparse_fired_l0(acts_BK, idx_BK, self.n_latents))

    def prefix(self, latents_BF: Tensor, m: int) -> Tensor:
        """Reconstruction from the first `m` latents only (dense latents [B, F] -> [B, D])."""
        return matmul(latents_BF[..., :m].to(self.W_dec.dtype), self.W_dec[:m]) + self.b_dec


__all__ = ["MatryoshkaSae"]
