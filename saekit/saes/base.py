"""The interface every SAE shares: parameters, encode/decode/forward, data-dependent init, save/load.

Parameters use the papers' names and one orientation: each latent owns a row of `W_enc` [F, D] and a row
of `W_dec` [F, D] (its decoder direction). On disk the layout is SAELens's: `W_enc` is stored [D, F].

    latents_BF = act(W_enc @ (x - b_dec) + b_enc)        x_hat_BD = latents_BF @ W_dec + b_dec
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from ..config import ARCHITECTURE_FIELDS, ArchitectureFields, ConfigError, SaeConfig
from ..errors import SaeError
from ..gemm import linear, matmul
from ..metrics import fvu, total_variance as total_variance_of
from . import disk
from .sparsity import batch_threshold

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def dead_indices(dead: Tensor | None) -> Tensor | None:
    """The dead latents' indices [G] from what `Sae.forward` takes as `dead_mask`, or None when none is dead.

    A bool mask [F] (the readable form) is read back to find them: a host synchronisation on a GPU. An int64
    tensor of indices [G] is used as it is, and its length is known on the host without reading the device:
    the Trainer passes that form, refreshed every `TrainConfig.sync_every` steps, so its steps never wait.
    """
    if dead is None:
        return None
    if dead.dtype == torch.bool:
        return dead.nonzero().squeeze(-1) if bool(dead.any()) else None
    return dead if dead.numel() else None


class SaeOutput(NamedTuple):
    """What `Sae.forward` returns; every field is a tensor so the output moves across devices as one."""

    x_hat: Tensor
    """Reconstruction [B, D]."""
    acts: Tensor
    """Active latent values: [B, K] with `indices` for sparse codes, or dense [B, F] when indices is empty."""
    indices: Tensor
    """Latent indices [B, K] of `acts`, or a 1-D empty tensor for dense codes (see `is_dense_code`)."""
    fvu: Tensor
    """Fraction of variance unexplained of this batch (scalar)."""
    aux_loss: Tensor
    """The architecture's auxiliary loss (AuxK for TopK), already weighted (scalar)."""
    loss: Tensor
    """The full training objective of this architecture (scalar)."""
    fired: Tensor
    """Bool [F]: latents that were active on at least one row of the batch."""
    l0: Tensor
    """Mean number of active latents per row (scalar)."""


def geometric_median(x_ND: Tensor, iters: int = 50, eps: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm; robust to the outlier tokens that drag the mean."""
    x_ND = x_ND.float()
    median_D = x_ND.median(0).values
    for _ in range(iters):
        w_N = 1.0 / (x_ND - median_D).norm(dim=-1).clamp_min(eps)
        new_D = (w_N[:, None] * x_ND).sum(0) / w_N.sum()
        if (new_D - median_D).norm() < eps * (1 + median_D.norm()):
            median_D = new_D
            break
        median_D = new_D
    return median_D


def _row_dots(a_FD: Tensor, b_FD: Tensor) -> Tensor:
    """[F, 1] dot products of matching rows as one batched product: no [F, D] temporary (3x faster than
    `(a * b).sum(-1)` at 16384 x 640 on the CPU, where a fresh [F, D] buffer costs its page faults)."""
    return torch.bmm(a_FD.unsqueeze(1), b_FD.unsqueeze(2)).view(-1, 1)  # [F, 1, D] @ [F, D, 1] -> [F, 1]


def is_dense_code(indices: Tensor) -> bool:
    """True when an (acts, indices) code is dense: indices is the 1-D empty marker, not a [B, K] index
    (a zero-row sparse code [0, K] is sparse, though it is empty too)."""
    return indices.dim() == 1


def architectures() -> list[str]:
    """The registered architecture names, in registration order (names starting with '_' are private
    ones, from tests and benchmarks): what `SaeConfig.architecture` and the CLI's --architecture accept."""
    return [name for name in Sae.registry if not name.startswith("_")]


class Sae(nn.Module):
    """Base class and factory: `Sae(SaeConfig(...))` builds the architecture the config names.

    Subclasses register with `class TopKSae(Sae, architecture="topk")` and implement `encode_raw`
    (sparse or dense code), `forward` and `plain_encoder` (the encoder as plain tensors, for edits inside
    traces), and declare the config fields they need (`required_fields`); everything else (init from
    data, decoder norms, folding the input scale, save/load) is shared. One file under `saes/` per
    architecture is all an architecture needs.
    """

    registry: ClassVar[dict[str, type["Sae"]]] = {}
    architecture: ClassVar[str] = ""

    required_fields: ClassVar[dict[str, str]] = {}
    """SaeConfig fields this architecture needs but that have no safe default: {name: example value}
    (SaeConfig refuses a config without them, naming the example)."""

    predicts_target: ClassVar[bool] = False
    """True for transcoders: they read `cfg.hookpoint` and predict `cfg.target_hookpoint` (required then,
    refused for every other architecture)."""

    sparsity_from_k: ClassVar[bool] = False
    """True for TopK-style codes (k latents per token by construction): `cfg.target_l0` sets k."""

    default_pre_act_coefficient: ClassVar[float | None] = None
    """The pre-activation loss weight `cfg.pre_act_coefficient=None` stands for; None: this architecture has no
    pre-activation loss (SaeConfig refuses a positive coefficient)."""

    @property
    def pre_act_coefficient(self) -> float:
        """The pre-activation loss weight in use: `cfg.pre_act_coefficient`, or the architecture's default."""
        c = self.cfg.pre_act_coefficient
        return float(c if c is not None else self.default_pre_act_coefficient or 0.0)

    default_max_grad_norm: ClassVar[float | None] = None
    """The gradient clip `TrainConfig.max_grad_norm=None` stands for, on the papers' scale (`train.grad_clip`); None: no
    clipping. TopK: 1.0, Anthropic's and dictionary_learning's; the other architectures' recipes were tuned without it."""

    default_topk_warmup: ClassVar[float | None] = None
    """The fraction of training `cfg.topk_warmup=None` stands for (a TopK phase before the architecture's own code);
    None: this architecture has no such phase (SaeConfig refuses a positive value)."""

    @property
    def topk_warmup(self) -> float:
        """The TopK warm-up in use: `cfg.topk_warmup`, or the architecture's default (0 without one)."""
        w = self.cfg.topk_warmup
        return float(w if w is not None else self.default_topk_warmup or 0.0)

    @property
    def warmup_k(self) -> int:
        """Latents kept per token during a TopK warm-up: round(target_l0), or k without a target."""
        return max(1, round(self.cfg.target_l0)) if self.cfg.target_l0 is not None else int(self.cfg.k)

    def __init_subclass__(cls, architecture: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if architecture is not None:
            cls.architecture = architecture
            Sae.registry[architecture] = cls
            ARCHITECTURE_FIELDS[architecture] = ArchitectureFields(
                dict(cls.required_fields), cls.predicts_target, cls.sparsity_from_k, cls.default_pre_act_coefficient,
                cls.default_topk_warmup,
            )

    def __new__(cls, cfg: SaeConfig | None = None, *args: Any, **kwargs: Any):
        if cls is Sae:
            if cfg is None:
                raise ConfigError("Sae(cfg) needs an SaeConfig, e.g. Sae(SaeConfig(d_in=640, n_latents=4096, k=32)).")
            cls = Sae.class_for(cfg.architecture)
        return super().__new__(cls)

    @staticmethod
    def class_for(architecture: str) -> type["Sae"]:
        if architecture not in Sae.registry:
            known = ", ".join(sorted(Sae.registry))
            raise ConfigError(f"Unknown SAE architecture {architecture!r}; known architectures: {known}.")
        return Sae.registry[architecture]

    def __init__(self, cfg: SaeConfig, *, device: str | torch.device | None = None, seed: int | None = 0) -> None:
        super().__init__()
        self.cfg = cfg
        D, F_ = cfg.d_in, cfg.n_latents
        dtype = _DTYPES[cfg.dtype]
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        W_dec_FD = torch.randn(F_, D, generator=gen, dtype=torch.float32)
        W_dec_FD /= W_dec_FD.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec_FD.to(device=device, dtype=dtype))
        # encoder initialised along the decoder's transpose (each latent reads along its own direction)
        self.W_enc = nn.Parameter((W_dec_FD * self.initial_encoder_scale).to(device=device, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(F_, device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(D, device=device, dtype=dtype))

    # -- the interface ----------------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def n_latents(self) -> int:
        return self.cfg.n_latents

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def encode(self, x: Tensor) -> Tensor:
        """Dense latent activations [..., F] for activations [..., D].

        Every row is encoded, padding included: from a padded batch [B, T, D], pass the real positions,
        `acts[ctx.attention_mask.bool()]` (or `saekit.tokens.keep_mask`, which also leaves out BOS).
        """
        x_BD, lead = self._flatten(x)
        acts, idx = self.encode_raw(x_BD)
        if is_dense_code(idx):
            return acts.reshape(*lead, self.n_latents)
        latents_BF = acts.new_zeros(acts.shape[0], self.n_latents).scatter_(-1, idx, acts)
        return latents_BF.reshape(*lead, self.n_latents)

    def decode(self, latents: Tensor) -> Tensor:
        """Reconstruction [..., D] from dense latents [..., F]."""
        if not isinstance(latents, Tensor) or latents.dim() == 0 or latents.shape[-1] != self.n_latents:
            got = f"shape {tuple(latents.shape)}" if isinstance(latents, Tensor) else type(latents).__name__
            raise SaeError(
                f"decode takes dense latents [..., {self.n_latents}] (this SAE's n_latents), got {got}: "
                f"pass what encode returned"
            )
        lead = latents.shape[:-1]
        latents_BF = latents.reshape(-1, self.n_latents).to(device=self.device, dtype=self.W_dec.dtype)
        return (matmul(latents_BF, self.W_dec) + self.b_dec).reshape(*lead, self.d_in)

    def reconstruct(self, x: Tensor) -> Tensor:
        """x_hat [..., D] for x [..., D] (no training losses computed)."""
        x_BD, lead = self._flatten(x)
        acts, idx = self.encode_raw(x_BD)
        return self.decode_raw(acts, idx).reshape(*lead, self.d_in).to(x.dtype)

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        """(acts, indices) for rows x [B, D]: sparse [B, K] pairs, or dense [B, F] and an empty index."""
        raise NotImplementedError

    def plain_encoder(self) -> dict[str, Any]:
        """This SAE's encoder as plain tensors, for code that runs inside a trace (on NDIF, where saekit is
        not installed): {'rule', 'W_enc' [F, D], 'b_enc' [F], 'x_offset' [D], and the rule's extras}.

        `saekit.lm.encode_latents` evaluates it (its docstring lists the rules) and gives `encode`'s
        latents; tests/test_saes_family.py checks that for every architecture. Feature edits
        (`saekit.interventions`) and on-server encodes use it.
        """
        raise NotImplementedError(f"the {self.architecture!r} architecture has no plain-tensor encoder")

    def _plain(self, rule: str, *, x_offset: Tensor | None = None, **extras: Any) -> dict[str, Any]:
        """The description's common part: rule, W_enc, b_enc, x_offset (default b_dec), detached fp32 on the CPU."""
        plain = lambda t: t.detach().float().cpu()  # noqa: E731
        return {
            "rule": rule,
            "W_enc": plain(self.W_enc),
            "b_enc": plain(self.b_enc),
            "x_offset": plain(self.b_dec if x_offset is None else x_offset),
            **extras,
        }

    def decode_raw(self, acts: Tensor, indices: Tensor) -> Tensor:
        if is_dense_code(indices):
            return matmul(acts, self.W_dec) + self.b_dec
        from .kernels import sparse_decode

        return sparse_decode(acts, indices, self.W_dec) + self.b_dec

    def forward(self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0) -> SaeOutput:
        """Reconstruct a batch and compute this architecture's training objective.

        `dead_mask` names the latents that have not fired for a while (for auxiliary losses): a bool mask [F], or
        their indices [G] (int64; the Trainer's form, `dead_indices`);
        `progress` in [0, 1] is the fraction of training done (for coefficient warmups).
        Transcoders (`cfg.target_hookpoint` set) also take `target_BD`, the activations they predict.
        """
        raise NotImplementedError

    # -- training support -------------------------------------------------------------------------

    def plan(self, steps: int, fresh: bool) -> None:
        """Called by the Trainer at the start of every `fit` with the run's optimiser steps, before a fresh run's
        data-dependent init (`fresh`: no step taken yet; False when a run resumes). An architecture whose recipe
        depends on the budget settles it here (ReLU/L1's TopK warm-up); the default does nothing."""

    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor, target_ND: Tensor | None = None) -> None:
        """Data-dependent initialisation: `b_dec` at the geometric median of a sample.

        `target_ND` is the matching sample of the predicted hook point (transcoders only).

        Residual streams carry a large common offset (on Gemma 3 270M the mean vector's norm is
        close to a token's norm); starting `b_dec` at zero leaves most latents dead.
        """
        self.b_dec.copy_(geometric_median(x_ND.to(self.device)).to(self.b_dec.dtype))

    encoder_init_scale: ClassVar[float] = 1.0
    """The encoder starts as this multiple of the decoder's transpose (TopK: 0.3, `TopKSae.encoder_init_scale`).
    Threshold-style codes (BatchTopK, JumpReLU, Gated) use 0.1: at full scale the latents open at the first step are random projections
    whose sum overshoots the input (synthetic benchmark: initial FVU 3.6), and those runs never recovered."""

    warmup_encoder_init_scale: ClassVar[float] = 0.3
    """The encoder's starting scale when training opens with a TopK warm-up (`topk_warmup` > 0): its first steps are
    TopK's and never see the overshoot `encoder_init_scale` guards against. Measured on the synthetic dictionary (d 32,
    512 features, 1024 latents, L0 4; true features recovered at cosine > 0.9, scale 0.1 / 0.3 / 1.0): relative
    BatchTopK 84% / 93% / 89% at 1M samples and 37% / 36% / 8% at 200k; TopK itself (no warm-up) 88% / 96% / 93% at
    1M, so TopK starts at 0.3 too (`TopKSae.encoder_init_scale`). A smaller scale learns faster at first (Adam's fixed step turns a short row further) and settles
    worse; 1.0 starts slowest (BENCHMARKS.md, "Synthetic dictionary recovery")."""

    @property
    def initial_encoder_scale(self) -> float:
        """The scale the encoder starts at: `warmup_encoder_init_scale` with a TopK warm-up, else `encoder_init_scale`."""
        return self.warmup_encoder_init_scale if self.topk_warmup > 0 else self.encoder_init_scale

    unit_norm_decoder: ClassVar[bool] = True
    """Keep decoder rows at unit norm: the trainer projects their gradient and renormalises after each step."""

    def before_optimizer_step(self) -> None:
        """Called by the trainer between backward and the optimiser step (gradients are final)."""
        if self.unit_norm_decoder:
            self.remove_gradient_parallel_to_decoder_directions()

    def after_optimizer_step(self) -> None:
        """Called by the trainer after each optimiser step: re-impose constraints on the parameters."""
        if self.unit_norm_decoder:
            self.set_decoder_norm_to_unit_norm()

    def update_sparsity(self, l0: Tensor, progress: float) -> None:
        """Called by the trainer after each optimiser step with the batch's mean L0 (averaged over ranks):
        penalty architectures steer their coefficient toward `cfg.target_l0` here (`sparsity.py`)."""

    def calibrate(self, x_ND: Tensor) -> None:
        """Called by the trainer once training ends, with a sample of (normalised) training inputs: set what
        inference needs from the final weights (BatchTopK's threshold). Must be deterministic in its input."""

    auxk_rows: ClassVar[int] = 1024
    """AuxK is taken on an even sample of at most this many rows of a batch (`dead_latent_loss`), its sum scaled by
    B / rows so its weight does not change. At batch 4096 and 16384 latents, 24 steps (the peers' budget, where a
    third of the latents count as dead for most of the run) AuxK on every row took 12.5 of the run's 22 s
    (BENCHMARKS.md, "AuxK on a sample of rows"); batches of 1024 or fewer are untouched."""

    def projection_topk_step(self, x_BD: Tensor, proj_BF: Tensor, values_BF: Tensor, dead_mask: Tensor | None) -> SaeOutput:
        """A TopK warm-up step of a code whose b_enc is a threshold (Gated's gate, ReLU/L1): each token keeps the
        warmup_k latents with the largest projections `proj_BF` = W_enc (x - b_dec), at ReLU(`values_BF`); FVU + AuxK
        (which ranks the dead latents' projections without b_enc, as the selection does). While training, every b_enc
        is set to minus the batch's threshold (`sparsity.batch_threshold`), so the architecture's own code opens at
        about the warm-up's L0 when it takes over."""
        idx_BK = proj_BF.detach().topk(self.warmup_k, dim=-1).indices
        latents_BF = torch.zeros_like(values_BF).scatter(-1, idx_BK, values_BF.gather(-1, idx_BK).relu())
        x_hat_BD = matmul(latents_BF, self.W_dec) + self.b_dec
        total_variance = total_variance_of(x_BD)
        fvu_ = fvu(x_BD, x_hat_BD, total_variance)
        no_bias_F = torch.zeros_like(self.b_enc)
        aux = self.dead_latent_loss(x_BD - self.b_dec, (x_BD - x_hat_BD).detach(), dead_mask, total_variance, no_bias_F)
        if self.training:
            with torch.no_grad():
                self.b_enc.fill_(-batch_threshold(proj_BF, self.warmup_k))
        active_BF = latents_BF > 0
        return SaeOutput(
            x_hat_BD, latents_BF, proj_BF.new_empty(0, dtype=torch.long), fvu_, aux, fvu_ + aux,
            active_BF.any(0), active_BF.sum(-1).float().mean(),
        )

    def dead_latent_loss(
        self, x_in_BD: Tensor, err_BD: Tensor, dead_mask: Tensor | None, total_variance: Tensor, b_enc_F: Tensor | None = None,
    ) -> Tensor:
        """AuxK (Gao et al. 2024) for any architecture: the k_aux largest pre-activations W_enc x_in + b_enc
        among dead latents reconstruct the residual error `err_BD` (detached); weight `cfg.auxk_alpha`.
        `b_enc_F` replaces b_enc where the code in use has another bias (Gated's TopK warm-up ranks projections).

        Dense over the dead subset G: two [R, G] x [G, D] products, on an even sample of R <= `auxk_rows` of the
        batch's rows (the sum scaled by B / R). Zero when no latent is dead. (A sparse version on the TopK kernels,
        k_aux entries per row, was slower at the densities AuxK sees: its gathers and scatters cost more than these
        products.)
        """
        dead_G = dead_indices(dead_mask) if self.cfg.auxk_alpha > 0 else None
        if dead_G is None:
            return err_BD.new_zeros(())
        n_rows = x_in_BD.shape[0]
        rows = slice(None, None, -(-n_rows // self.auxk_rows))  # stride ceil(B / auxk_rows)
        x_in_RD, err_RD = x_in_BD[rows], err_BD[rows]
        k_full = self.cfg.k_aux or self.d_in // 2
        k_aux = min(k_full, dead_G.numel())
        pre_RG = linear(x_in_RD, self.W_enc[dead_G], (self.b_enc if b_enc_F is None else b_enc_F)[dead_G])
        vals_RA, j_RA = pre_RG.topk(k_aux, dim=-1, sorted=False)
        aux_RG = torch.zeros_like(pre_RG).scatter(-1, j_RA, vals_RA.relu())
        err_hat_RD = matmul(aux_RG, self.W_dec[dead_G])
        scale = min(dead_G.numel() / k_full, 1.0) * n_rows / x_in_RD.shape[0]
        aux = self.cfg.auxk_alpha * scale * (err_hat_RD - err_RD).pow(2).sum() / total_variance
        return torch.nan_to_num(aux, 0.0)

    def on_step(self, step: int, x_BD: Tensor, dead_F: Tensor, generator: torch.Generator) -> Tensor | None:
        """Optional per-step hook after the update (e.g. resampling dead latents), given the batch just used.

        Returns the indices of latents whose parameters were rewritten (the trainer then clears their
        optimiser state and dead counters), or None. Random draws must use `generator` so resume is exact.
        """
        return None

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        norm_F1 = _row_dots(self.W_dec, self.W_dec).sqrt_().clamp_min_(torch.finfo(self.W_dec.dtype).eps)
        self.W_dec.div_(norm_F1)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        if self.W_dec.grad is None:
            return
        parallel_F1 = _row_dots(self.W_dec.grad, self.W_dec)
        self.W_dec.grad.addcmul_(parallel_F1, self.W_dec, value=-1)

    @torch.no_grad()
    def fold_input_scale_(self, scale: float, target_scale: float | None = None) -> None:
        """The SAE was trained on `x * scale`; rewrite it to read and write raw activations.

        Encoding commutes with a positive scale when thresholds and biases scale with it, so
        latents come out in raw units and the decoder keeps unit-norm rows. `target_scale` is for
        transcoders, whose output was normalised apart; an SAE accepts only its input's scale there.
        """
        if not (math.isfinite(scale) and scale > 0):
            raise SaeError(f"input scale must be a positive finite number, got {scale!r}")
        if target_scale is not None and target_scale != scale:
            raise SaeError(
                f"this {self.architecture!r} SAE reconstructs its own input, so its output scale is its input scale "
                f"({scale!r}), not {target_scale!r}: pass target_scale=None"
            )
        self.b_enc.div_(scale)
        self.b_dec.div_(scale)
        for name in self.scale_with_input:
            getattr(self, name).div_(scale)

    scale_with_input: ClassVar[tuple[str, ...]] = ()
    """Extra parameters/buffers (thresholds) that are in input units and divide by the scale on fold."""

    # -- save / load ------------------------------------------------------------------------------

    saelens_architecture: ClassVar[str | None] = "standard"
    """The SAELens 6 class this SAE loads as there (`sae_lens.SAE.load_from_disk`), or None when SAELens has
    no equivalent (its folder then names an architecture SAELens refuses)."""

    def saelens_cfg(self) -> dict[str, Any]:
        """cfg.json: SAELens 6's fields for `saelens_architecture` (`saelens_fields` adds the class's own),
        its metadata, and saekit's full config under "saekit" (SAELens keeps only its own fields)."""
        from ..hookpoints import to_transformerlens_hook

        return {
            "architecture": self.saelens_architecture or f"saekit_{self.architecture}",
            "d_in": self.d_in,
            "d_sae": self.n_latents,
            "dtype": self.cfg.dtype,
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "none",
            **self.saelens_fields(),
            "metadata": {
                "sae_lens_version": disk.SAELENS_VERSION,
                "sae_lens_training_version": None,
                "model_name": self.cfg.model_name,
                "hook_name": to_transformerlens_hook(self.cfg.hookpoint),
                "saekit_hookpoint": self.cfg.hookpoint,
                "prepend_bos": True,
            },
            "saekit": self.cfg.to_dict(),
        }

    def saelens_fields(self) -> dict[str, Any]:
        """The config fields SAELens's class for this architecture adds to the common ones (TopK: k)."""
        return {}

    saekit_state: ClassVar[tuple[str, ...]] = ()
    """State-dict entries that only saekit uses (training state such as a controller's coefficient): kept out
    of the SAELens weights file (they go to saekit_state.safetensors) and optional when reading other formats."""

    saekit_state_defaults: ClassVar[dict[str, float]] = {}
    """Scalar `saekit_state` entries added after the first release, with the value `load` gives them when a
    folder written before they existed lacks them."""

    def saelens_tensors(self) -> dict[str, Tensor]:
        """Exactly the tensors SAELens's class holds, in its names and layout (`W_enc` [D, F])."""
        sd = {k: v.detach() for k, v in self.state_dict().items() if k not in self.saekit_state}
        sd["W_enc"] = self.W_enc.detach().t()  # [D, F] on disk, as SAELens stores it
        return sd

    def from_saelens_tensors(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        """The inverse of `saelens_tensors`: SAELens's names and layout -> this module's state dict."""
        sd = dict(t)
        sd["W_enc"] = sd["W_enc"].t().contiguous()
        return sd

    def state_dict_from_legacy(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        """Tensors of saekit's older `sae.safetensors` (the state dict with `W_enc` stored [D, F])."""
        sd = dict(t)
        if "W_enc" in sd:
            sd["W_enc"] = sd["W_enc"].t().contiguous()
        if "b_gate" in sd:  # gated SAEs stored SAELens's name for the gate bias
            sd["b_enc"] = sd.pop("b_gate")
        return sd

    def save(self, path: str | Path) -> Path:
        """Write the folder `path` in SAELens 6's layout (cfg.json + sae_weights.safetensors; see saes/disk.py)."""
        return disk.save(self, path)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> "Sae":
        """Load a folder written by `save` (or saekit's older layout); nothing is unpickled."""
        cfg, stored, legacy, state = disk.read(path, device=device)
        sae = Sae(cfg, device="meta", seed=None)
        sd = sae.state_dict_from_legacy(stored) if legacy else sae.from_saelens_tensors(stored)
        sd.update(state)
        for k, v in sae.saekit_state_defaults.items():
            sd.setdefault(k, torch.tensor(v, device=device))
        disk.check_state(path, sae.state_dict(), sd)
        sae.load_state_dict(sd, assign=True)
        return sae

    # -- helpers ----------------------------------------------------------------------------------

    def _flatten(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if not isinstance(x, Tensor):
            raise SaeError(f"an SAE takes a torch.Tensor of activations [..., {self.d_in}], got {type(x).__name__}")
        if x.dim() == 0:
            raise SaeError(f"an SAE takes activations [..., {self.d_in}], got a 0-d tensor: pass vectors of width {self.d_in}")
        if not x.is_floating_point():
            raise SaeError(f"an SAE takes floating-point activations, got dtype {x.dtype}: convert with x.float()")
        if x.shape[-1] != self.d_in:
            raise SaeError(
                f"activations have width {x.shape[-1]} but this SAE reads width {self.d_in} "
                f"(hook point {self.cfg.hookpoint!r}): pass activations from the hook point it was trained on."
            )
        lead = tuple(x.shape[:-1])
        return x.reshape(-1, self.d_in).to(device=self.device, dtype=self.W_enc.dtype), lead

    def extra_repr(self) -> str:
        c = self.cfg
        return f"architecture={self.architecture!r}, d_in={c.d_in}, n_latents={c.n_latents}, k={c.k}, hookpoint={c.hookpoint!r}"
