"""Dataclass configs. Every field has a docstring; `__post_init__` validates and never rewrites.

The docstrings are read by `field_docs`, which is how the command line's `--help` says what these say.
"""

from __future__ import annotations

import math

import ast
import functools
import inspect
import json
import textwrap
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any
from .errors import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _is_int(value: Any) -> bool:
    """A true integer: `bool` is an `int` subclass in Python, but `d_in=True` is a mistake, not 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def _known_kwargs(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class SaeConfig:
    """What an SAE is: its shape, its architecture and where it reads from."""

    d_in: int
    """Width of the activations the SAE reads (d_model for residual-stream hook points)."""

    n_latents: int = 4096
    """Number of dictionary features (latents), often written F or d_sae."""

    k: int = 32
    """Active latents per token for TopK-style architectures (ignored by others)."""

    architecture: str = "topk"
    """Which SAE family member: 'topk', 'batchtopk', 'matryoshka', 'relu', 'jumprelu', 'gated',
    'transcoder' or 'skip_transcoder' (the names `Sae.registry` holds)."""

    hookpoint: str | None = None
    """Stable hook-point name the SAE was trained on, e.g. 'resid_post.6'."""

    model_name: str | None = None
    """Model the activations came from, e.g. 'gemma-3-270m'."""

    dtype: str = "float32"
    """Storage dtype of the parameters: 'float32' or 'bfloat16'."""

    auxk_alpha: float = 1 / 32
    """Weight of the AuxK loss that revives dead latents (Gao et al. 2024); TopK-style architectures."""

    k_aux: int | None = None
    """Dead latents used by AuxK per token; None means d_in // 2 (Gao et al. 2024)."""

    l1_coefficient: float | None = None
    """'relu' and 'gated': weight of the L1 sparsity penalty relative to the squared error; None takes the
    architecture's default (5.0 for 'relu', Anthropic's April 2024 update; with `target_l0` it is the controller's
    starting value, and 1.0 started worse on Gemma: BENCHMARKS.md; 'gated' documents its own)."""

    sparsity_warmup: float = 0.05
    """Fraction of training over which the sparsity coefficient (L1 or L0) rises linearly from 0 to its value."""

    resample_every: int = 0
    """'relu': resample dead latents every this many steps (Anthropic 2023's resampling); 0 turns it off."""

    target_l0: float | None = None
    """The mean number of active latents per token the trained SAE should have, for every architecture.
    TopK-style ones ('topk', 'batchtopk', 'matryoshka', transcoders) take k = round(target_l0) (it wins
    over k); 'relu' and 'gated' steer their L1 coefficient toward it during training
    (`saekit.saes.sparsity`), so the coefficient becomes a starting value; 'jumprelu' steers its L0
    coefficient the same way. None keeps k or the fixed coefficient."""

    l0_coefficient: float = 0.01
    """'jumprelu': weight lambda of the L0 penalty lambda * L0 (FVU per active latent, Gemma Scope's
    one-sided penalty); with target_l0 set, the controller's starting value."""

    bandwidth: float = 0.001
    """'jumprelu': width of the rectangle kernel of the threshold's straight-through gradient, in normalised
    input units (Gemma Scope used 0.001)."""

    pre_act_coefficient: float | None = None
    """Weight of the pre-activation loss of Anthropic's January 2025 update (`saes/pre_act.py`): the mean over
    tokens and latents of relu(threshold - pre-activation), in units of d_in times the batch's per-coordinate standard
    deviation, so a value means the same at every width and whatever the data's spread. Every latent below the
    threshold gets a small gradient toward it, so latents do not stay dead. The threshold is JumpReLU's per-latent
    one, TopK's k-th largest pre-activation of each token, BatchTopK's batch threshold (the smallest activation the
    batch kept), and 0 for Gated's gate and ReLU/L1's pre-activation. None takes the architecture's default (its
    module says what was measured): 0.75 for 'topk', 3.0 for 'batchtopk' (TopK's 0.75 during the absolute ranking's
    TopK warm-up; 1.0 with `relative_selection`), 6.0 for
    'gated' after its TopK warm-up (3.0 with `topk_warmup=0`), 3.0 for 'matryoshka' (TopK's 0.75 in the
    warm-up, as BatchTopK; 0.75 with `relative_selection`),
    2.0 for 'jumprelu' (after its TopK warm-up, which left 10-20% of its latents dead without it; 0 gives Gemma Scope's
    recipe), 4.0 for 'relu' (without it 9-39% of its latents died on Gemma; 0 gives the April update's recipe). 0 turns it off (the
    papers' recipes have no such loss). The defaults were tuned at 4096 latents and L0 16 on Gemma 3 270M; the pull
    grows as k falls (a latent's reconstruction gradient scales with k / n_latents, this loss's with 1 / n_latents), so
    for 'topk', 'batchtopk', 'matryoshka', 'jumprelu' and 'relu' the default is scaled by min(1, L0 / 16)
    (`pre_act.at_sparsity`); a value given here is used as given. Transcoders have no such loss and refuse a positive value."""

    threshold_beta: float = 0.99
    """'batchtopk' and 'matryoshka': decay of the moving average that estimates the inference threshold
    from the smallest activation BatchTopK keeps in each training batch."""

    relative_selection: bool = False
    """'batchtopk' and 'matryoshka': rank pre-activations by pre / ||x - b_dec|| (relative to each token's centred
    norm) instead of by pre. Training keeps the k * B largest such ratios of the batch; inference keeps
    pre > threshold * ||x - b_dec||. Off: the paper's absolute selection, which gives the batch's high-norm tokens
    most of the latents (the paper's own runs normalised every token to unit norm first, which has the same
    effect as this option). On Gemma 3 270M (4096 latents, L0 16, 1M tokens) it matched TopK's held-out FVU
    (0.067 against 0.068; the absolute rule: 0.093) and tripled recovery on the synthetic dictionary
    (`saes/batchtopk.py` and BENCHMARKS.md have the measurements). SAELens has no such encoder, so SAELens
    refuses these folders (saekit reads them); off by default for that reason."""

    topk_warmup: float | None = None
    """'batchtopk', 'matryoshka', 'jumprelu', 'gated' and 'relu': the fraction of training that keeps the k largest
    pre-activations of each token (TopK's code; k = round(target_l0) when that is set) before the architecture's own
    sparsity takes over. None takes the architecture's default: 0.9 for 'batchtopk' and 'matryoshka' (0.5 with
    `relative_selection`), 0.9 for 'jumprelu' and 'gated', and for 'relu' one planned from the run's steps by the
    Trainer, leaving the ReLU code at least 100 steps (max(0, 1 - 100 / steps), at most 0.9; none outside a Trainer:
    `ReluSae.budget_topk_warmup`, since one fixed fraction failed at short budgets); 0 is the papers' recipes (their own code from the first step). BatchTopK's inference
    threshold is estimated from its batch phase and calibrated on the final weights as before; JumpReLU's thresholds
    and Gated's gate biases (ReLU/L1's b_enc) start from the last TopK batch's threshold (`saes/jumprelu.py`,
    `saes/gated.py`, `saes/relu.py`; ReLU/L1 holds its decoder rows at unit norm during the phase). On the
    synthetic dictionary (d 32, 512 features, 1024 latents, L0 4, 1M samples) the warm-up took recovery of the true
    features at cosine > 0.9 from 11% to 96% (BatchTopK; 60% at 0.5 with BatchTopK's coefficient in the warm-up),
    41% to 93% (relative BatchTopK), 5.5% to 70% (Matryoshka), 19.5% to 95.7% (JumpReLU)
    47% to 91% (Gated) and 37% to 91% (ReLU/L1), where TopK recovers 96%; on Gemma 3 270M at L0 16 it took BatchTopK's held-out FVU from
    0.093 to 0.075 (BENCHMARKS.md). Architectures without the phase ('topk', 'transcoder') refuse a positive
    value."""

    selection_dtype: str = "auto"
    """'topk', 'batchtopk' and 'matryoshka', while training: the dtype of the dense product that *chooses* the kept
    latents, 'float32' or 'bfloat16' (the kept values, the loss, the gradients and the weights stay in `dtype`;
    inference always selects in full precision). 'auto': bfloat16 on CPUs that multiply it in hardware (Intel AMX, where
    the product is 4x faster, or AVX512_BF16, 2x; `saekit.gemm.bf16_matrix_units`), float32 elsewhere (CUDA uses
    autocast). Held-out FVU
    and dead latents with each are in BENCHMARKS.md ("TopK training step")."""

    matryoshka_prefixes: tuple[int, ...] | None = None
    """'matryoshka': increasing dictionary sizes, each a prefix of the latents that must reconstruct on its own,
    e.g. (128, 512, 2048); the full dictionary (n_latents) is always the last level (required)."""

    matryoshka_inner_weight: float | None = None
    """'matryoshka': the weight of each inner prefix's reconstruction loss relative to the full dictionary's (Chanin
    et al. 2025's "balance" Matryoshka SAEs; 1.0 is Bussmann et al.'s equal weights). Lower weights let the outer
    latents pull the inner ones toward single features (less hedging), at the cost of inner prefixes that
    reconstruct less on their own; 0 leaves plain BatchTopK. None takes the architecture's default, 1.0
    (`MatryoshkaSae.default_inner_weight`). Measured: 0.2 recovered 92% of the synthetic dictionary where 1.0
    recovered 70%, and on Gemma 3 270M matched BatchTopK's FVU, but with more first-letter absorption (full rate
    0.047 against 0.027; BatchTopK 0.051): `saes/matryoshka.py` and BENCHMARKS.md."""

    target_hookpoint: str | None = None
    """'transcoder' and 'skip_transcoder': the hook point they predict, e.g. 'mlp_out.6' while `hookpoint`
    is 'mlp_in.6' (required for them); None for SAEs, which reconstruct their own input."""

    def __post_init__(self) -> None:
        _check(self.auxk_alpha >= 0, f"SaeConfig.auxk_alpha must be >= 0, got {self.auxk_alpha!r}.")
        _check(self.k_aux is None or self.k_aux > 0, f"SaeConfig.k_aux must be positive or None, got {self.k_aux!r}.")
        _check(_is_int(self.d_in) and self.d_in > 0, f"SaeConfig.d_in must be a positive int, got {self.d_in!r}.")
        _check(
            _is_int(self.n_latents) and self.n_latents > 0,
            f"SaeConfig.n_latents must be a positive int, got {self.n_latents!r}.",
        )
        _check(
            self.target_l0 is None or (isinstance(self.target_l0, (int, float)) and not isinstance(self.target_l0, bool)
                                       and math.isfinite(self.target_l0) and self.target_l0 > 0),
            f"SaeConfig.target_l0 must be a positive number or None, got {self.target_l0!r}.",
        )
        if self.target_l0 is not None and ARCHITECTURE_FIELDS.get(self.architecture, ArchitectureFields()).sparsity_from_k:
            self.k = max(1, round(self.target_l0))
        _check(_is_int(self.k) and self.k > 0, f"SaeConfig.k must be a positive int, got {self.k!r}.")
        _check(
            self.k <= self.n_latents,
            f"SaeConfig.k={self.k} is larger than n_latents={self.n_latents}: "
            f"choose k <= n_latents (k is the number of active latents per token).",
        )
        _check(self.dtype in ("float32", "bfloat16"), f"SaeConfig.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}.")
        self._check_architecture_fields()

    def _check_architecture_fields(self) -> None:
        arch = self.architecture
        rules = ARCHITECTURE_FIELDS.get(arch, ArchitectureFields())
        for name, example in rules.required.items():
            _check(
                getattr(self, name) is not None,
                f"SaeConfig(architecture={arch!r}) needs {name}: set e.g. {name}={example}.",
            )
        _check(
            self.l1_coefficient is None or self.l1_coefficient >= 0,
            f"SaeConfig.l1_coefficient must be >= 0 or None, got {self.l1_coefficient!r}.",
        )
        _check(
            0.0 <= self.sparsity_warmup <= 1.0,
            f"SaeConfig.sparsity_warmup is a fraction of training: choose it in [0, 1], got {self.sparsity_warmup!r}.",
        )
        _check(
            _is_int(self.resample_every) and self.resample_every >= 0,
            f"SaeConfig.resample_every must be an int >= 0 (0 turns resampling off), got {self.resample_every!r}.",
        )
        _check(
            self.target_l0 is None or 0 < self.target_l0 < self.n_latents,
            f"SaeConfig.target_l0={self.target_l0!r} must lie in (0, n_latents={self.n_latents}): "
            f"choose the mean number of active latents per token, e.g. target_l0=32.",
        )
        _check(self.l0_coefficient > 0, f"SaeConfig.l0_coefficient must be positive, got {self.l0_coefficient!r}.")
        c = self.pre_act_coefficient
        _check(
            c is None or (isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c >= 0),
            f"SaeConfig.pre_act_coefficient must be a finite number >= 0 (0 turns it off) or None (the "
            f"architecture's default), got {c!r}.",
        )
        _check(
            c is None or c == 0 or rules.pre_act_default is not None or arch not in ARCHITECTURE_FIELDS,
            f"SaeConfig.pre_act_coefficient={c!r}, but architecture={arch!r} has no pre-activation loss (it is for "
            f"the SAE architectures, not transcoders): drop pre_act_coefficient or leave it at 0.",
        )
        _check(self.bandwidth > 0, f"SaeConfig.bandwidth must be positive (Gemma Scope: 0.001), got {self.bandwidth!r}.")
        _check(
            0.0 <= self.threshold_beta < 1.0,
            f"SaeConfig.threshold_beta is a moving-average decay: choose it in [0, 1), got {self.threshold_beta!r}.",
        )
        _check(
            not self.relative_selection or self.architecture in ("batchtopk", "matryoshka"),
            f"SaeConfig.relative_selection is BatchTopK's selection rule ('batchtopk', 'matryoshka'); the "
            f"{self.architecture!r} architecture has none: leave it False.",
        )
        w = self.topk_warmup
        _check(
            w is None or (isinstance(w, (int, float)) and not isinstance(w, bool) and 0.0 <= w < 1.0),
            f"SaeConfig.topk_warmup is a fraction of training: choose it in [0, 1) (0: the architecture's own code from "
            f"the first step) or None (the architecture's default), got {w!r}.",
        )
        _check(
            w is None or w == 0 or rules.topk_warmup_default is not None or arch not in ARCHITECTURE_FIELDS,
            f"SaeConfig.topk_warmup={w!r}, but architecture={arch!r} has no TopK warm-up (it is for "
            f"{', '.join(repr(a) for a, r in ARCHITECTURE_FIELDS.items() if r.topk_warmup_default is not None)}): "
            f"drop topk_warmup or leave it at 0.",
        )
        _check(
            self.selection_dtype in ("auto", "float32", "bfloat16"),
            f"SaeConfig.selection_dtype must be 'auto', 'float32' or 'bfloat16', got {self.selection_dtype!r}.",
        )
        _check(
            self.selection_dtype != "bfloat16" or self.architecture in ("topk", "batchtopk", "matryoshka"),
            f"SaeConfig.selection_dtype='bfloat16' is the precision of a top-k selection ('topk', 'batchtopk', "
            f"'matryoshka'); the {self.architecture!r} architecture has none: leave it 'auto'.",
        )
        iw = self.matryoshka_inner_weight
        _check(
            iw is None or (isinstance(iw, (int, float)) and not isinstance(iw, bool) and math.isfinite(iw) and iw >= 0),
            f"SaeConfig.matryoshka_inner_weight must be a finite number >= 0 (1: the paper's equal weights, 0: plain "
            f"BatchTopK) or None (the default), got {iw!r}.",
        )
        _check(
            iw is None or arch == "matryoshka",
            f"SaeConfig.matryoshka_inner_weight={iw!r} weighs a Matryoshka SAE's nested losses, but "
            f"architecture={arch!r} has none: drop matryoshka_inner_weight.",
        )
        p = self.matryoshka_prefixes
        if p is not None:
            _check(
                isinstance(p, (tuple, list)) and len(p) > 0 and all(_is_int(m) and m > 0 for m in p),
                f"SaeConfig.matryoshka_prefixes must be a tuple of positive ints, got {p!r}: e.g. (128, 512, {self.n_latents}).",
            )
            _check(
                all(a < b for a, b in zip(p, p[1:])),
                f"SaeConfig.matryoshka_prefixes={tuple(p)} must be strictly increasing (each prefix contains the "
                f"previous one): sort them and drop repeats, e.g. {tuple(sorted(set(p)))}.",
            )
            _check(
                p[-1] <= self.n_latents,
                f"SaeConfig.matryoshka_prefixes={tuple(p)} exceeds n_latents={self.n_latents}: every prefix is a number "
                f"of latents, so keep them <= n_latents (or raise n_latents to {p[-1]}).",
            )
        _check(
            rules.predicts_target or self.target_hookpoint is None,
            f"SaeConfig.target_hookpoint={self.target_hookpoint!r} is for transcoders, but architecture={arch!r} "
            f"reconstructs its input: drop target_hookpoint or use architecture='transcoder'.",
        )

    @property
    def matryoshka_levels(self) -> tuple[int, ...]:
        """The nested dictionary sizes: `matryoshka_prefixes` ending with n_latents."""
        p = tuple(self.matryoshka_prefixes or ())
        return p if p and p[-1] == self.n_latents else (*p, self.n_latents)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SaeConfig":
        kw = _known_kwargs(cls, data)
        if kw.get("matryoshka_prefixes") is not None:
            kw["matryoshka_prefixes"] = tuple(kw["matryoshka_prefixes"])  # JSON stores tuples as lists
        return cls(**kw)


@dataclass(frozen=True)
class ArchitectureFields:
    """What `SaeConfig` checks for one architecture; each SAE class declares its own (`saekit.saes`)."""

    required: dict[str, str] = field(default_factory=dict)
    """Fields without a safe default, each with an example value for the error message: {name: example}."""

    predicts_target: bool = False
    """Reads `hookpoint` and predicts `target_hookpoint` (transcoders); others must leave target_hookpoint None."""

    sparsity_from_k: bool = False
    """Keeps k latents per token by construction (TopK-style): `target_l0` sets k."""

    pre_act_default: float | None = None
    """The `pre_act_coefficient` that None stands for; None: the architecture has no pre-activation loss."""

    topk_warmup_default: float | None = None
    """The `topk_warmup` that None stands for; None: the architecture has no TopK warm-up."""


ARCHITECTURE_FIELDS: dict[str, ArchitectureFields] = {}
"""{architecture name: its ArchitectureFields}, filled by `saekit.saes.Sae` as each SAE class is defined
(from the class's `required_fields` and `predicts_target`), so that adding an architecture touches only
its own file. An architecture that is not registered gets no architecture-specific checks here."""


@dataclass
class TrainConfig:
    """How to train: optimiser, schedule, budget, auxiliary loss, checkpoints."""

    tokens: int = 300_000
    """Training budget in tokens (activation vectors); steps = ceil(tokens / batch_size)."""

    batch_size: int = 4096
    """Activation vectors per optimiser step."""

    lr: float | None = None
    """Adam learning rate; None picks 2e-3 / sqrt(n_latents / 4096): Gao et al.'s 1/sqrt(F) scaling, with
    a base tuned here for budgets of 1e5-1e7 tokens (BENCHMARKS.md has the sweep)."""

    warmup_steps: int = 5
    """Linear learning-rate warmup from 0, in steps."""

    decay_start: float = 0.8
    """Fraction of training after which the learning rate decays linearly to zero."""

    dead_tokens: int | None = None
    """A latent silent for this many training tokens counts as dead for AuxK; None: min(10M, tokens // 6)."""

    sync_every: int | None = None
    """Steps between the training step's reads of device state back to the host: the set of dead latents AuxK trains
    is refreshed then, and batches that arrive already on the device are checked for NaN/inf then. None: every step
    on the CPU, where a read costs nothing, and on a GPU, where each read stalls the queue of kernels, every 32 steps
    or every dead_tokens / batch_size steps if that is sooner. Between reads a latent that dies waits to join AuxK's
    set and one that fires again stays in it."""

    seed: int = 0
    """Seed for initialisation and data order."""

    normalize: bool = True
    """Scale activations to mean squared norm d_in while training; the scale is folded into the saved weights."""

    checkpoint_every: int = 0
    """Save a resumable checkpoint every N steps (0: only at the end)."""

    log_every: int = 10
    """Record training metrics every N steps."""

    device: str | None = None
    """'cpu', 'cuda', 'cuda:1'...; None picks CUDA when present (under torchrun: cuda:LOCAL_RANK), else the CPU."""

    max_grad_norm: float | None = None
    """Clip each SAE's gradient before Adam's step to this global norm, measured as Anthropic's April update and
    dictionary_learning measure it: the gradient of the per-token squared error summed over dimensions, on the inputs
    as trained (scaled to E||x||^2 = d_in unless normalize=False). 1.0 is their clip. saekit's objective is that error divided by the batch's
    variance per token, so the trainer clips its own gradient at max_grad_norm x batch rows / the batch's total
    variance (`train.grad_clip`). None: the architecture's default (`Sae.default_max_grad_norm`); 0: no clipping."""

    histogram_bins: int = 40
    """Bins of the log10 latent-density histogram recorded in the training history every log_every steps."""

    def __post_init__(self) -> None:
        _check(_is_int(self.tokens) and self.tokens > 0, f"TrainConfig.tokens must be a positive int, got {self.tokens!r}.")
        _check(
            _is_int(self.batch_size) and self.batch_size > 0,
            f"TrainConfig.batch_size must be a positive int, got {self.batch_size!r}.",
        )
        _check(
            self.tokens >= self.batch_size,
            f"TrainConfig.tokens={self.tokens} is smaller than one batch (batch_size={self.batch_size}): "
            f"raise tokens or lower batch_size.",
        )
        _check(self.lr is None or self.lr > 0, f"TrainConfig.lr must be positive or None, got {self.lr!r}.")
        _check(self.warmup_steps >= 0, f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps!r}.")
        _check(0.0 <= self.decay_start <= 1.0, f"TrainConfig.decay_start must be in [0, 1], got {self.decay_start!r}.")
        _check(self.dead_tokens is None or self.dead_tokens > 0, f"TrainConfig.dead_tokens must be positive, got {self.dead_tokens!r}.")
        _check(
            self.sync_every is None or (_is_int(self.sync_every) and self.sync_every > 0),
            f"TrainConfig.sync_every must be a positive int or None (every step on the CPU, 32 on a GPU), got {self.sync_every!r}.",
        )
        _check(self.checkpoint_every >= 0, f"TrainConfig.checkpoint_every must be >= 0, got {self.checkpoint_every!r}.")
        _check(self.log_every > 0, f"TrainConfig.log_every must be positive, got {self.log_every!r}.")
        _check(
            self.max_grad_norm is None or (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0),
            f"TrainConfig.max_grad_norm must be a finite number >= 0 (0: no clipping) or None (the architecture's "
            f"default), got {self.max_grad_norm!r}.",
        )
        _check(self.histogram_bins > 0, f"TrainConfig.histogram_bins must be positive, got {self.histogram_bins!r}.")

    @property
    def steps(self) -> int:
        return -(-self.tokens // self.batch_size)

    def lr_for(self, n_latents: int) -> float:
        return self.lr if self.lr is not None else 2e-3 / (n_latents / 4096) ** 0.5

    def sync_every_on(self, device: Any) -> int:
        """`sync_every` resolved for a torch device (or its type name)."""
        if self.sync_every is not None:
            return self.sync_every
        if getattr(device, "type", device) == "cpu":
            return 1
        return max(1, min(32, self.dead_after // self.batch_size))  # no longer than it takes a latent to die

    @property
    def dead_after(self) -> int:
        """Tokens of silence after which a latent counts as dead."""
        return self.dead_tokens if self.dead_tokens is not None else max(self.batch_size, min(10_000_000, self.tokens // 6))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HarvestConfig:
    """How to turn text into activations."""

    hookpoints: tuple[str, ...] = ("resid_post.6",)
    """Stable hook-point names to capture in one forward pass, e.g. ('resid_post.6', 'mlp_out.6')."""

    context_len: int = 128
    """Tokens per context (BOS first)."""

    batch_size: int = 16
    """Contexts per forward pass."""

    drop_bos: bool = True
    """Leave BOS positions out of the harvested activations (they are huge outliers)."""

    drop_pad: bool = True
    """Leave padding positions out of the harvested activations."""

    dtype: str = "float32"
    """Storage dtype of the activations: 'float32' or 'bfloat16'."""

    def __post_init__(self) -> None:
        _check(len(self.hookpoints) > 0, "HarvestConfig.hookpoints is empty: name at least one, e.g. ('resid_post.6',).")
        _check(self.context_len >= 2, f"HarvestConfig.context_len must be >= 2, got {self.context_len!r}.")
        _check(self.batch_size > 0, f"HarvestConfig.batch_size must be positive, got {self.batch_size!r}.")
        _check(self.dtype in ("float32", "bfloat16"), f"HarvestConfig.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}.")


@dataclass
class SweepConfig:
    """A grid of SAEs to train from one harvest (`saekit.sweep`): widths x sparsities, read at several token budgets."""

    widths: tuple[int, ...] = (256, 512, 1024)
    """Dictionary sizes (n_latents) of the grid."""

    ks: tuple[int, ...] = (16,)
    """Active latents per token of the grid: k for TopK-style architectures, target_l0 for the others."""

    tokens: tuple[int, ...] = (40_960, 81_920, 163_840)
    """Token budgets at which every run is evaluated. One run per (width, k) trains to the largest; the smaller
    budgets are its checkpoints along the way (same data order, learning rate not yet decayed there)."""

    eval_tokens: int = 8192
    """Held-out activation rows on which FVU, L0 and the dead fraction are measured."""

    per_pass: int = 0
    """SAEs trained together in one pass over the data (0: the whole grid at once)."""

    ce_tokens: int = 0
    """Held-out tokens for CE-loss recovered at the largest budget (needs the model; 0 skips it: it costs one
    forward pass of the model per SAE)."""

    def __post_init__(self) -> None:
        for name in ("widths", "ks", "tokens"):
            v = getattr(self, name)
            _check(
                isinstance(v, (tuple, list)) and len(v) > 0 and all(_is_int(x) and x > 0 for x in v),
                f"SweepConfig.{name} must be a non-empty tuple of positive ints, got {v!r}.",
            )
            _check(len(set(v)) == len(v), f"SweepConfig.{name}={tuple(v)} repeats a value: list each once.")
        _check(
            max(self.ks) < min(self.widths),
            f"SweepConfig.ks={tuple(self.ks)} must all be smaller than the narrowest width {min(self.widths)}: "
            f"drop the large k values or the small widths.",
        )
        _check(_is_int(self.eval_tokens) and self.eval_tokens > 0, f"SweepConfig.eval_tokens must be a positive int, got {self.eval_tokens!r}.")
        _check(_is_int(self.per_pass) and self.per_pass >= 0, f"SweepConfig.per_pass must be an int >= 0, got {self.per_pass!r}.")
        _check(_is_int(self.ce_tokens) and self.ce_tokens >= 0, f"SweepConfig.ce_tokens must be an int >= 0, got {self.ce_tokens!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
EVALS = ("autointerp", "sparse_probing", "absorption")
"""The evaluations `saekit.evals.run` and `saekit eval --evals` know."""


@dataclass
class EvalsConfig:
    """Which evaluations beyond reconstruction to run, and their sizes (saekit.evals)."""

    evals: tuple[str, ...] = ()
    """Evaluations to run, comma- or space-separated: autointerp, sparse_probing, absorption. None: only the
    reconstruction metrics."""

    n_features: int = 50
    """Autointerp: features explained and scored, chosen at random among the live, not dense ones."""

    explainer: str = "baseline"
    """Autointerp explainer and scorer: 'baseline' (offline: top tokens and bigrams) or 'openai' (an
    OpenAI-compatible endpoint: --llm-model, --base-url, key from SAEKIT_LLM_API_KEY or OPENAI_API_KEY)."""

    llm_model: str | None = None
    """The served model's name when --explainer openai."""

    base_url: str | None = None
    """The endpoint, e.g. http://localhost:8000/v1 (or SAEKIT_LLM_BASE_URL) when --explainer openai."""

    n_per_class: int = 60
    """Sparse probing: texts per class of each built-in task."""

    n_words: int = 3000
    """Absorption: single-token vocabulary words probed."""

    stats: str | None = None
    """Folder of the SAE's FeatureStats for autointerp (default: the shipped ones for a pretrained SAE)."""

    def __post_init__(self) -> None:
        names = tuple(n for part in self.evals for n in str(part).replace(",", " ").split())
        bad = [n for n in names if n not in EVALS]
        _check(not bad, f"EvalsConfig.evals: unknown evaluation(s) {bad}; choose from {', '.join(EVALS)}.")
        self.evals = names
        _check(self.n_features >= 1, f"EvalsConfig.n_features must be >= 1, got {self.n_features!r}.")
        _check(self.n_per_class >= 4, f"EvalsConfig.n_per_class must be >= 4, got {self.n_per_class!r}.")
        _check(self.n_words >= 100, f"EvalsConfig.n_words must be >= 100, got {self.n_words!r}.")
        _check(self.explainer in ("baseline", "openai"),
               f"EvalsConfig.explainer must be 'baseline' or 'openai', got {self.explainer!r}.")
        _check(self.explainer != "openai" or bool(self.llm_model),
               "EvalsConfig.explainer is 'openai' but no llm_model: pass --llm-model NAME.")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, whitespace collapsed: {field name: text}.

    Read from the class source with `ast` (a string literal right after the field's annotated
    assignment), including the fields of dataclass bases. Fields without one are left out; so is
    everything when the source is not available.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass) or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def dump_json(obj: Any, path: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


__all__ = ["ConfigError", "SaeConfig", "TrainConfig", "HarvestConfig", "SweepConfig", "EvalsConfig", "dump_json", "field_docs"]
