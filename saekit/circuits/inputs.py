"""Checked inputs of circuit work: SAEs by hook point in execution order, prompts of one token length.

Every check runs before any long work and raises a CircuitError naming the fix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..errors import CircuitError, HookPointError
from .splice import float_copy, is_transcoder


@dataclass
class Prompts:
    """Token ids of the clean prompts and, for patching, their counterfactuals (both [B, T])."""

    clean: Tensor
    """Clean prompts [B, T] (separator first)."""
    patch: Tensor | None
    """Counterfactual prompts [B, T], or None (zero/mean baselines)."""
    tokens: list[str]
    """The first clean prompt's tokens (labels)."""


def checked_saes(model: Any, saes: Any) -> dict[str, Any]:
    """{hookpoint: float32 frozen copy of the SAE} in execution order; errors for unknown, out-of-order
    or unsupported entries. Residual SAEs are keyed by the hook point they encode and reconstruct,
    transcoders by the one they predict (mlp_out.L; they read mlp_in.L)."""
    if not isinstance(saes, Mapping) or not saes:
        raise CircuitError("saes must be a non-empty dict {hookpoint: SAE}, e.g. {'resid_post.2': sae2, 'resid_post.6': sae6}")
    orders = []
    for h, sae in saes.items():
        try:
            hp = model.resolve(h)
        except HookPointError as e:
            raise CircuitError(f"SAE hook point {h!r} is not in this model: {e}") from None
        if not hasattr(sae, "encode") or not hasattr(sae, "decode") or not hasattr(sae, "cfg"):
            raise CircuitError(f"the value at {h!r} is not a saekit SAE (got {type(sae).__name__}); load one with saekit.load_pretrained")
        if sae.d_in != model.d_model:
            raise CircuitError(f"the SAE at {h!r} reads width {sae.d_in} but the model's width is {model.d_model}: it belongs to another model")
        if is_transcoder(sae):
            check_transcoder(model, h, sae, hp.order)
        else:
            trained_at = getattr(sae.cfg, "hookpoint", None)
            if trained_at and trained_at != h:
                warnings.warn(f"the SAE given for {h!r} was trained at {trained_at!r}", stacklevel=3)
        orders.append((hp.order, h))
    names = [h for _, h in orders]
    in_order = [h for _, h in sorted(orders)]
    if names != in_order:
        raise CircuitError(f"SAE hook points must be in execution order: got {names}, pass them as {in_order}")
    if len(set(o for o, _ in orders)) != len(orders):
        raise CircuitError(f"two SAEs name the same hook point: {names}")
    reads = [(h, sae.cfg.hookpoint) for h, sae in saes.items() if is_transcoder(sae)]
    for h, src in reads:
        if src in saes or [s for _, s in reads].count(src) > 1:
            raise CircuitError(
                f"the transcoder at {h!r} reads {src!r}, where another SAE or transcoder also sits: a hook point "
                "carries one splice; drop one of them"
            )
    dtype = torch.float64 if next(model.hf_model.parameters()).dtype == torch.float64 else torch.float32
    return {h: float_copy(sae, model.device, dtype) for h, sae in saes.items()}


def check_transcoder(model: Any, h: str, sae: Any, order: Any) -> None:
    """A transcoder is keyed by the hook point it predicts (mlp_out.L) and reads one that runs before it."""
    src, target = sae.cfg.hookpoint, getattr(sae.cfg, "target_hookpoint", None)
    if h == src and target:
        raise CircuitError(
            f"the transcoder given at {h!r} reads {src!r} and predicts {target!r}: its nodes replace what it "
            f"predicts, so key it by {target!r}"
        )
    if target and target != h:
        raise CircuitError(f"the transcoder given at {h!r} was trained to predict {target!r}: key it by {target!r} (it reads {src!r})")
    try:
        src_order = model.resolve(src).order
    except HookPointError as e:
        raise CircuitError(f"the transcoder at {h!r} reads {src!r}, which is not in this model: {e}") from None
    if not src_order < order:
        raise CircuitError(f"the transcoder at {h!r} reads {src!r}, which does not run before {h!r}: it cannot predict it")


def checked_prompts(model: Any, prompts: Any, counterfactuals: Sequence[str] | None = None) -> Prompts:
    """Prompts (texts, or (clean, counterfactual) pairs) -> token ids of one length; a CircuitError when
    lengths differ, saying how to align them."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise CircuitError("prompts must be a non-empty list of texts or of (clean, counterfactual) pairs")
    if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in prompts):
        if counterfactuals is not None:
            raise CircuitError("pass counterfactuals either as pairs in prompts or as counterfactuals=, not both")
        clean_texts, cf_texts = [p[0] for p in prompts], [p[1] for p in prompts]
    elif all(isinstance(p, str) for p in prompts):
        clean_texts = list(prompts)
        cf_texts = None if counterfactuals is None else list(counterfactuals)
        if cf_texts is not None and len(cf_texts) != len(clean_texts):
            raise CircuitError(f"{len(clean_texts)} prompts but {len(cf_texts)} counterfactuals: pass one per prompt")
    else:
        raise CircuitError("prompts must all be texts or all (clean, counterfactual) pairs")
    clean = [model.encode_prompt(t)[0] for t in clean_texts]
    lengths = {len(c) for c in clean}
    patch = None
    if cf_texts is not None:
        patch = [model.encode_prompt(t)[0] for t in cf_texts]
        for t, c, p, pt in zip(clean_texts, clean, patch, cf_texts):
            if len(c) != len(p):
                raise CircuitError(
                    f"the prompt {t!r} has {len(c)} tokens but its counterfactual {pt!r} has {len(p)}: nodes are "
                    "compared position by position, so each pair must tokenize to the same length; choose words "
                    "of one token each (e.g. ' key'/' keys'), or pad the shorter text with a neutral word"
                )
    if len(lengths) != 1:
        raise CircuitError(
            f"the prompts tokenize to different lengths {sorted(lengths)}: attribution batches the prompts and "
            "compares positions, so use prompts of one template (same token length), or attribute each length separately"
        )
    tokens = [model.tokenizer.decode([i]) for i in clean[0].tolist()]
    return Prompts(torch.stack(clean), None if patch is None else torch.stack(patch), tokens)
