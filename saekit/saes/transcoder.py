"""Transcoders (Dunefsky, Chlenski & Nanda 2024) and skip transcoders (Paulo, Shabalin & Belrose 2025).

A transcoder reads the MLP's input (`mlp_in.L`) and predicts the MLP's output (`mlp_out.L`) through a
sparse bottleneck, so its latents replace the MLP in a circuit; a skip transcoder adds a linear skip
term that carries the MLP's linear part and leaves the latents to the rest:

    latents_BF = TopK(W_enc x + b_enc)               (no b_dec subtraction: b_dec is the *output* bias)
    y_hat_BD = latents_BF @ W_dec + b_dec [+ x @ W_skip^T]

Recipe (sparsify's, with the TopK recipe of `topk.py`): k largest pre-activations, unit-norm decoder
rows with the parallel gradient removed, AuxK on the prediction error, loss = FVU(y, y_hat) + AuxK;
W_skip starts at zero; `b_dec` starts at the geometric median of the targets and `b_enc` at
-W_enc @ median(x), so pre-activations start centred. Input and target are normalised apart (each to
E||.||^2 = d_in); folding rescales W_enc, b_enc, b_dec (and W_skip) so the saved transcoder maps raw
mlp_in to raw mlp_out with latents in output units.

`SaeConfig.hookpoint` is the input hook point and `target_hookpoint` the predicted one; the trainer
reads both from one activation cache, aligned row by row. `decode(latents)` is the sparse part only;
`reconstruct(x)` (an alias: `predict`) adds the skip term. `transcoder_hookpoints(model, layer)`
checks that a model has a separable MLP input and output before anything is harvested.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..config import ConfigError, SaeConfig
from ..errors import SaeError
from ..gemm import linear
from ..metrics import fvu, total_variance as total_variance_of
from .base import SaeOutput, geometric_median
from .kernels import sparse_decode, topk_encode
from .topk import TopKSae, sparse_fired_l0

if TYPE_CHECKING:
    from ..lm import Model


def transcoder_hookpoints(model: Model, layer: int) -> tuple[str, str]:
    """('mlp_in.L', 'mlp_out.L') for `model`, or a ConfigError when its MLP input/output are not separable."""
    from ..hookpoints import HookPointError

    names = (f"mlp_in.{layer}", f"mlp_out.{layer}")
    try:
        hp_in, hp_out = (model.resolve(n) for n in names)
    except HookPointError as e:
        raise ConfigError(
            f"transcoders read mlp_in.{layer} and predict mlp_out.{layer}, but this model does not expose them ({e}); "
            f"train an SAE on a residual hook point instead (architecture='topk', hookpoint='resid_post.{layer}')."
        ) from None
    mlp = _submodule(model, hp_in.module_path)
    if mlp is not None and not any(p.ndim >= 2 for p in mlp.parameters()):
        raise ConfigError(
            f"{getattr(model, 'name', 'this model')}: the module feeding mlp_out.{layer} ({hp_in.module_path!r}) holds no "
            f"weight matrix, so its MLP input and output are not separable here and a transcoder has nothing to "
            f"replace; train an SAE on 'resid_post.{layer}' or 'mlp_out.{layer}' instead."
        )
    if hp_in.module_path == hp_out.module_path and hp_in.io == hp_out.io:
        raise ConfigError(
            f"mlp_in.{layer} and mlp_out.{layer} are the same tensor in this model: a transcoder needs an MLP "
            f"between them; train an SAE on 'mlp_out.{layer}' instead."
        )
    return names


def _submodule(model: Model, path: str):
    hf = getattr(model, "hf_model", None)
    if hf is None:
        return None
    try:
        return hf.get_submodule(path)
    except AttributeError:
        return None


class Transcoder(TopKSae, architecture="transcoder"):
    """TopK transcoder: reads the MLP's input (`cfg.hookpoint`) and predicts its output (`cfg.target_hookpoint`)."""

    required_fields = {"target_hookpoint": "'mlp_out.6' with hookpoint='mlp_in.6'"}
    predicts_target = True
    saelens_architecture = None
    """SAELens's transcoders are ReLU/JumpReLU ones: a TopK transcoder's folder must not load as one."""
    default_pre_act_coefficient = None
    """No pre-activation loss (its forward does not add TopK's): SaeConfig refuses a positive coefficient."""
    encoder_init_scale = 1.0
    """W_enc starts at W_dec^T (TopK's 0.3 was measured on SAEs, not on transcoders, whose encoder reads another site)."""
    default_max_grad_norm = None
    """No clip by default: TopK's was measured on SAEs, not on transcoders."""

    def saelens_fields(self) -> dict:
        return {"apply_b_dec_to_input": False, "d_out": self.d_in, "k": int(self.cfg.k)}

    def skip(self, x_BD: Tensor) -> Tensor | float:
        return 0.0

    def encode_raw(self, x_BD: Tensor) -> tuple[Tensor, Tensor]:
        return topk_encode(x_BD, self.W_enc, self.b_enc, self.cfg.k)

    def plain_encoder(self) -> dict:
        return self._plain("topk", x_offset=torch.zeros_like(self.b_dec), k=int(self.cfg.k))  # no b_dec on the input

    def reconstruct(self, x: Tensor) -> Tensor:
        """The predicted target [..., D] (MLP output) for inputs x [..., D] (MLP input)."""
        x_BD, lead = self._flatten(x)
        acts, idx = self.encode_raw(x_BD)
        y_hat_BD = self.decode_raw(acts, idx) + self.skip(x_BD)
        return y_hat_BD.reshape(*lead, self.d_in).to(x.dtype)

    predict = reconstruct

    def forward(
        self, x_BD: Tensor, dead_mask: Tensor | None = None, progress: float = 1.0, target_BD: Tensor | None = None
    ) -> SaeOutput:
        if target_BD is None:
            raise SaeError(
                f"a {self.architecture} predicts {self.cfg.target_hookpoint!r} from {self.cfg.hookpoint!r}: "
                f"call it with target_BD= (the trainer does this when the cache holds both hook points)"
            )
        x_BD = x_BD.to(self.W_enc.dtype)
        y_BD = target_BD.to(self.W_enc.dtype)
        acts_BK, idx_BK = topk_encode(x_BD, self.W_enc, self.b_enc, self.cfg.k)
        y_hat_BD = sparse_decode(acts_BK, idx_BK, self.W_dec) + self.b_dec + self.skip(x_BD)
        total_variance = total_variance_of(y_BD)
        fvu_ = fvu(y_BD, y_hat_BD, total_variance)
        aux = y_BD.new_zeros(())
        if dead_mask is not None and self.cfg.auxk_alpha > 0:  # zero when none is dead
            aux = self.auxk_loss(x_BD, (y_BD - y_hat_BD).detach(), dead_mask, total_variance)
        return SaeOutput(y_hat_BD, acts_BK, idx_BK, fvu_, aux, fvu_ + aux, *sparse_fired_l0(acts_BK, idx_BK, self.n_latents))

    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor, target_ND: Tensor | None = None) -> None:
        if target_ND is None:
            raise SaeError("a transcoder initialises from (input, target) samples: pass target_ND")
        x_med_D = geometric_median(x_ND.to(self.device)).to(self.W_enc.dtype)
        self.b_dec.copy_(geometric_median(target_ND.to(self.device)).to(self.b_dec.dtype))
        self.b_enc.copy_(-(self.W_enc @ x_med_D))

    @torch.no_grad()
    def fold_input_scale_(self, scale: float, target_scale: float | None = None) -> None:
        """Trained on (x * scale, y * target_scale): rewrite to map raw x to raw y (latents in y's units)."""
        ts = scale if target_scale is None else target_scale
        for s in (scale, ts):
            if not (math.isfinite(s) and s > 0):
                raise SaeError(f"scales must be positive finite numbers, got {scale!r}, {target_scale!r}")
        self.W_enc.mul_(scale / ts)
        self.b_enc.div_(ts)
        self.b_dec.div_(ts)
        if hasattr(self, "W_skip"):
            self.W_skip.mul_(scale / ts)


class SkipTranscoder(Transcoder, architecture="skip_transcoder"):
    """Transcoder with a linear skip term (x @ W_skip^T) beside the sparse latents (Paulo, Shabalin & Belrose 2025)."""

    def __init__(self, cfg: SaeConfig, *, device=None, seed: int | None = 0) -> None:
        super().__init__(cfg, device=device, seed=seed)
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_in, device=device, dtype=self.W_enc.dtype))
        """[D_out, D_in]: y_hat += x @ W_skip^T (SAELens's and sparsify's orientation)."""

    def skip(self, x_BD: Tensor) -> Tensor:
        return linear(x_BD, self.W_skip)


__all__ = ["Transcoder", "SkipTranscoder", "transcoder_hookpoints"]
