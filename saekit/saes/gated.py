"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders").

Which latents fire and how strongly are decided by two paths that share one encoder matrix:

    x_in = x - b_dec
    pi_gate = W_enc x_in + b_enc                     (W_enc is W_gate; b_enc is SAELens's b_gate)
    pi_mag  = exp(r_mag) * (W_enc x_in) + b_mag      (W_mag = exp(r_mag) (.) W_gate, the paper's r_mag tying)
    latents = 1[pi_gate > 0] * ReLU(pi_mag)          x_hat = latents @ W_dec + b_dec

Loss (the paper's, divided by the batch's total variance like every saekit objective):

    ||x - x_hat||^2 + lambda(t) * ||ReLU(pi_gate)||_1 + ||x - (ReLU(pi_gate) @ sg(W_dec) + sg(b_dec))||^2

The L1 penalty acts on the gate path only, so it does not shrink magnitudes; the auxiliary term
sends a reconstruction gradient through the gate path (the Heaviside blocks it), with a frozen
(stop-gradient) copy of the decoder. Decoder rows are kept at unit norm (the paper's constraint, which
makes the plain L1 meaningful). The L1 term is divided by the total variance as ReLU/L1's (`relu.l1_penalty`); lambda (`l1_coefficient`, default `default_l1_coefficient`) rises linearly
over the first `sparsity_warmup` of training and, with `target_l0` set, is then steered by the
target-L0 controller (`sparsity.py`). AuxK (`Sae.dead_latent_loss`) keeps latents alive.

Initialisation (without the TopK warm-up below; with it the first step's gates are the warm-up's): r_mag = b_mag = 0, and b_gate (b_enc) at minus each latent's target-density quantile
of its projections on the initial sample, so about target_l0 (else k) latents are open per token at
the first step. With b_gate = 0 (the paper's zero init) half the dictionary opens at once: initial L0
2,040 of 4,096 and FVU 267 on the synthetic benchmark, and half the run went to recovering.

The shared encoder starts at 0.1 x W_dec^T (`Sae.encoder_init_scale`): on the synthetic benchmark at
300k tokens that took the recovered share of true features from 6% to 35% (FVU 0.50 -> 0.38).

TopK warm-up (`SaeConfig.topk_warmup`, default 0.9 as JumpReLU's; 0 gives the paper's recipe from the first step): the
first 90% of training keeps, for each token, the round(target_l0) latents with the largest projections W_enc (x - b_dec)
at their magnitudes ReLU(pi_mag) (FVU + AuxK: no L1, no gate reconstruction, no pre-activation loss; the encoder starts
at `Sae.warmup_encoder_init_scale`), and sets every gate bias to minus the batch's threshold (the (k * B)-th largest
projection; AuxK ranks the dead latents' projections likewise, without that bias). The gated code, its L1 penalty and
its controller take over after it, the gates opening at about the warm-up's L0; the controller does not move during the
warm-up (`sparsity.py`), and the gate's pre-activation loss is 6.0 after it (3.0 without a warm-up:
`warmup_pre_act_coefficient`). With `target_l0` set, `calibrate` shifts all gate biases by one common amount at the end
of training so the L0 on a training sample is the target (as JumpReLU's thresholds are scaled).

Trained with its own code from the first step, Gated recovered 47.1% of the synthetic dictionary (d 32, 512 features,
1024 latents, L0 4, 1M samples; `benchmarks/bench_synthetic.py`; FVU 0.358); with the warm-up 91.8% (FVU 0.366). On
Gemma 3 270M resid_post.6 (4096 latents, 1M tokens, L0 16 / 32 / 64) held-out FVU 0.071 / 0.052 / 0.039 and CE-loss
recovered 0.960 / 0.974 / 0.981 without it, 0.073 / 0.054 / 0.038 and 0.967 / 0.973 / 0.985 with it (BENCHMARKS.md,
"Gated's TopK warm-up").

On disk (SAELens's "gated" layout) b_enc is called b_gate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import SaeConfig
from ..gemm import linear, matmul
from ..metrics import fvu, total_variance as total_variance_of
from .base import Sae, SaeOutput
from .pre_act import penalty_scale, pre_act_penalty
from .relu import l1_penalty
from .sparsity import ControlledCoefficient, opening_bias, target_shift

INIT_ROWS = 8192
"""Sample rows used to place the initial gate biases (a [rows, F] matrix of projections)."""


class GatedSae(ControlledCoefficient, Sae, architecture="gated"):
    """Gated SAE (Rajamanoharan et al. 2024): a gate decides which latents fire, a magnitude path sets their values (this module's docstring has the recipe)."""

    default_l1_coefficient = 1.0
    default_pre_act_coefficient = 3.0
    """The gate's pre-activation loss (threshold 0) without the TopK warm-up (`topk_warmup=0`): on Gemma 3 270M
    resid_post.6 (4096 latents, target_l0 16, 1M tokens, batch 1024) latents dead on 65,536 held-out tokens 42% -> 1.3%, FVU 0.0676 -> 0.0679
    (measured as 1.0 over the total variance, 2.9 in the present form: `saes/pre_act.py`).
    The paper has no such loss: `SaeConfig.pre_act_coefficient=0`."""
    warmup_pre_act_coefficient = 6.0
    """The gate's pre-activation loss after the TopK warm-up (the default): the short gated phase needs the stronger
    pull. On Gemma 3 270M resid_post.6 (4096 latents, 1M tokens) latents dead on 65,536 held-out tokens at L0 16 / 32 /
    64: 6.0% / 2.9% / 0.3% at 3.0, 3.5% / 1.7% / 0.0% at 6.0; FVU 0.073 / 0.052 / 0.038 and 0.073 / 0.054 / 0.038."""
    encoder_init_scale = 0.1
    scale_with_input = ("b_mag",)

    @property
    def pre_act_coefficient(self) -> float:
        """`cfg.pre_act_coefficient` as given, else `warmup_pre_act_coefficient` with the TopK warm-up and
        `default_pre_act_coefficient` without it."""
        c = self.cfg.pre_act_coefficient
        if c is not None:
            return float(c)
        return self.warmup_pre_act_coefficient if self.topk_warmup > 0 else float(self.default_pre_act_coefficient)
    default_topk_warmup = 0.9
    """On by default (module docstring: synthetic recovery 47% -> 91%). 0 gives the paper's recipe."""

    def _topk_forward(self, x_BD: Tensor, dead_mask: Tensor | None) -> SaeOutput:
        """The TopK warm-up's step (`SaeConfig.topk_warmup`): each token keeps the warmup_k latents with the largest
        projections W_enc (x - b_dec), at their magnitudes ReLU(pi_mag); FVU + AuxK (no L1, no gate
        reconstruction, no pre-activation loss). While training, every gate bias is set to minus the batch's
        threshold, the (k * B)-th largest projection, so that when the gated code takes over its gates open at about
        the warm-up's L0 (the per-token selection does not depend on a bias common to every latent)."""
        proj_BF = linear(x_BD - self.b_dec, self.W_enc)
        return self.projection_topk_step(x_BD, proj_BF, proj_BF * self.r_mag.exp() + self.b_mag, dead_mask)

    def __init__(self, cfg: SaeConfig, *, device=None, seed: int | None = 0) -> None:
        super().__init__(cfg, device=device, seed=seed)
        self.r_mag = nn.Parameter(torch.zeros(cfg.n_latents, device=device, dtype=self.W_enc.dtype))
        self.b_mag = nn.Parameter(torch.zeros(cfg.n_latents, device=device, dtype=self.W_enc.dtype))
        self._init_coefficient(self.l1_coefficient)

    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor, target_ND: Tensor | None = None) -> None:
        """`b_dec` at the geometric median, then each gate bias at minus its latent's target-density quantile
        of the projections, so the first step opens about target_l0 (else k) latents per token rather than
        half the dictionary (b_mag stays 0: an open latent's magnitude starts at its projection)."""
        super().init_from_data(x_ND)
        x_ND = x_ND[:INIT_ROWS].to(self.device, self.W_enc.dtype)
        target = self.cfg.target_l0 if self.cfg.target_l0 is not None else self.cfg.k
        self.b_enc.copy_(opening_bias(linear(x_ND - self.b_dec, self.W_enc), target))

    @property
    def l1_coefficient(self) -> float:
        c = self.cfg.l1_coefficient
        return self.default_l1_coefficient if c is None else c

    def _paths(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        proj_BF = linear(x_BD - self.b_dec, self.W_enc)
        return proj_BF + self.b_enc, proj_BF * self.r_mag.exp() + self.b_mag

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        gate_BF, mag_BF = self._paths(x_BD)
        return (gate_BF > 0) * mag_BF.relu(), gate_BF.new_empty(0, dtype=torch.long)

    def plain_encoder(self) -> dict:
        return self._plain("gated", mag_scale=self.r_mag.detach().exp().float().cpu(), b_mag=self.b_mag.detach().float().cpu())

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        x_BD = x_BD.to(self.W_enc.dtype)
        if progress < self.topk_warmup:
            return self._topk_forward(x_BD, dead_mask)
        gate_BF, mag_BF = self._paths(x_BD)
        latents_BF = (gate_BF > 0) * mag_BF.relu()
        x_hat_BD = matmul(latents_BF, self.W_dec) + self.b_dec
        total_variance = total_variance_of(x_BD)
        fvu_ = fvu(x_BD, x_hat_BD, total_variance)
        gate_relu_BF = gate_BF.relu()
        l1 = l1_penalty(gate_relu_BF, total_variance)
        x_gate_BD = matmul(gate_relu_BF, self.W_dec.detach()) + self.b_dec.detach()
        gate_recon = fvu(x_BD, x_gate_BD, total_variance)
        aux = self.coefficient(progress) * l1 + gate_recon
        if self.pre_act_coefficient > 0:  # the closed gates' pre-activations pulled up toward 0
            aux = aux + self.pre_act_coefficient * pre_act_penalty(gate_BF, 0.0, penalty_scale(total_variance, *x_BD.shape))
        aux = aux + self.dead_latent_loss(x_BD - self.b_dec, (x_BD - x_hat_BD).detach(), dead_mask, total_variance)
        active_BF = latents_BF > 0
        return SaeOutput(
            x_hat_BD, latents_BF, gate_BF.new_empty(0, dtype=torch.long), fvu_, aux, fvu_ + aux,
            active_BF.any(0), active_BF.sum(-1).float().mean(),
        )

    @torch.no_grad()
    def calibrate(self, x_ND: Tensor) -> None:
        """With `target_l0` set: shift every gate bias by one common amount so that the mean L0 on the sample (up to
        INIT_ROWS rows) is the target: the gates then open on the sample's round(target * N) largest gate
        pre-activations among latents with a positive magnitude. The controller steers L0 while training with a lag,
        and after the TopK warm-up its phase is short (at the known-answer test's budget the held-out L0 ended 40% off
        target without this); the per-latent differences of the biases, which training chose, are kept."""
        target = self.cfg.target_l0
        x_ND = x_ND[:INIT_ROWS].to(self.device, self.W_enc.dtype)
        if target is None or x_ND.shape[0] == 0:
            return
        gate_NF, mag_NF = self._paths(x_ND)
        gate_NF = gate_NF.masked_fill(mag_NF <= 0, float("-inf"))  # a latent with no magnitude adds nothing to L0
        shift = target_shift(gate_NF, target)
        if torch.isfinite(shift):
            self.b_enc.sub_(shift)

    saelens_architecture = "gated"

    def saelens_tensors(self) -> dict[str, Tensor]:
        sd = super().saelens_tensors()
        sd["b_gate"] = sd.pop("b_enc")
        return sd

    def from_saelens_tensors(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        sd = super().from_saelens_tensors(t)
        sd["b_enc"] = sd.pop("b_gate")
        return sd


__all__ = ["GatedSae"]
