"""SAEs spliced into a forward as nodes: x -> decode(f) + err at a hook point, with f and err as graph nodes.

At each hook point the activation x [B, T, D] becomes decode(f) + err with f = encode(x) (the feature
nodes) and err = x - decode(f) (the error node), so the output equals x and the model is unchanged; what
changes is that every feature and the error are tensors one can differentiate with respect to, patch or
ablate (Marks et al. 2024, "Sparse Feature Circuits"). The gradient with respect to f flows only through
decode (f is cloned before decoding), while the upstream gradient through x keeps the model's own
(identity) Jacobian: the error term absorbs the encoder's part.

A transcoder (Dunefsky et al. 2024) replaces an MLP instead: at its target hook point (`mlp_out.L`) the
MLP output y becomes decode(f) + err with f = encode(x_in) read at its input hook point (`mlp_in.L`) and
err = y - decode(f) (a skip transcoder's linear skip term is part of err). The gradient with respect to
x_in through the transcoder cancels the same way, so the model keeps its own Jacobian.

For a remote model the same splices travel as plain data (`plain_splice`: the SAE as plain tensors and
the op, run by `saekit.lm.grad_trace` inside the trace); the callables below are the local path.

Every edit here is a callable (x [B, T, D], src [B, T, D]) -> [B, T, D], src being what the SAE encodes
(x itself for a residual SAE, the input hook point's activation for a transcoder); `hook_edits` turns them
into `Model.grad_logits` edits. Position 0 (the separator) is never edited.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor


def float_copy(sae: Any, device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
    """A copy of `sae` on `device` in `dtype` (float32, or float64 for a float64 model) with frozen
    parameters (the caller's SAE is left as it is)."""
    import copy

    work = copy.deepcopy(sae).to(device=device, dtype=dtype)
    for p in work.parameters():
        p.requires_grad_(False)
    return work


NodeEdit = Callable[[Tensor, Tensor], Tensor]
"""(x_BTD, src_BTD) -> the activation that replaces x_BTD."""


def is_transcoder(sae: Any) -> bool:
    """True for an SAE that reads one hook point and predicts another (`Transcoder`, `SkipTranscoder`)."""
    return bool(getattr(sae, "predicts_target", False))


def hook_edits(work: dict, edits: dict[str, NodeEdit]) -> dict[str, Callable[[Tensor], Tensor]]:
    """{hookpoint: NodeEdit} -> {hookpoint: edit} for `Model.grad_logits`: a transcoder's edit (at its target
    hook point) gets the activation of its input hook point, read there by an identity edit; a residual
    SAE's gets src = x."""
    out: dict[str, Callable[[Tensor], Tensor]] = {}
    for h, fn in edits.items():
        sae = work[h]
        if is_transcoder(sae):
            box: dict = {}
            out[sae.cfg.hookpoint] = reader(box)
            out[h] = lambda y, fn=fn, box=box: fn(y, box["x"])
        else:
            out[h] = lambda x, fn=fn: fn(x, x)
    return out


def reader(box: dict) -> Callable[[Tensor], Tensor]:
    """An identity edit that keeps the activation in box['x'] (a transcoder's input)."""

    def edit(x_BTD: Tensor) -> Tensor:
        box["x"] = x_BTD
        return x_BTD

    return edit


def nodes_edit(sae: Any, store: dict, delta_f: Tensor | None = None) -> NodeEdit:
    """Splice `sae` as nodes; `store` receives 'f' [B, T, F] and 'err' [B, T, D] (graph nodes).
    `delta_f` [B, T, F], if given, is added to the features (finite-difference checks)."""

    def edit(x_BTD: Tensor, src_BTD: Tensor) -> Tensor:
        x = x_BTD.to(sae.W_dec.dtype)
        f = sae.encode(src_BTD.to(sae.W_dec.dtype))
        f_node = f.clone()
        if delta_f is not None:
            f_node = f_node + delta_f
        err = x - sae.decode(f)
        store["f"], store["err"] = f_node, err
        return (sae.decode(f_node) + err).to(x_BTD.dtype)

    return edit


def replace_edit(sae: Any, f_BTF: Tensor, err_BTD: Tensor) -> NodeEdit:
    """Replace the activation by decode(f) + err with given node values (patching, integrated gradients)."""

    def edit(x_BTD: Tensor, src_BTD: Tensor) -> Tensor:
        return (sae.decode(f_BTF) + err_BTD).to(x_BTD.dtype)

    return edit


def ablate_edit(
    sae: Any, keep_TF: Tensor, keep_err_T: Tensor, f_mean_TF: Tensor, err_mean_TD: Tensor
) -> NodeEdit:
    """Features where `keep_TF` [T, F] is False and the error where `keep_err_T` [T] is False are set to
    their per-position means (`f_mean_TF`, `err_mean_TD`; zeros for zero-ablation); position 0 is left alone."""

    def edit(x_BTD: Tensor, src_BTD: Tensor) -> Tensor:
        x = x_BTD.to(sae.W_dec.dtype)
        f = sae.encode(src_BTD.to(sae.W_dec.dtype))
        err = x - sae.decode(f)
        T = x.shape[1]
        keep = keep_TF[:T].to(x.device).clone()
        keep_err = keep_err_T[:T].to(x.device).clone()
        keep[0], keep_err[0] = True, True
        f2 = torch.where(keep, f, f_mean_TF[:T].to(x.device, x.dtype))
        err2 = torch.where(keep_err[:, None], err, err_mean_TD[:T].to(x.device, x.dtype))
        return (sae.decode(f2) + err2).to(x_BTD.dtype)

    return edit


def plain_splice(sae: Any, op: str, **values: Any) -> dict:
    """The splice of `sae` as plain data for a traced (remote) run: {'op' ('nodes', 'replace', 'ablate', see
    `saekit.lm.grad_trace`), 'enc' (its plain encoder), 'W_dec', 'b_dec', 'source' (a transcoder's input
    hook point), and the op's tensors `values`}, in the decoder's dtype on the CPU."""
    from ..errors import CircuitError

    try:
        enc = sae.plain_encoder()
    except (AttributeError, NotImplementedError):
        raise CircuitError(
            f"the {getattr(sae, 'architecture', '?')!r} SAE has no plain-tensor encoder, so it cannot be spliced "
            "into a remote model's traces: attribute with a local model"
        ) from None
    dtype = sae.W_dec.dtype
    plain = lambda t: t.detach().to("cpu", dtype) if isinstance(t, Tensor) and t.is_floating_point() else t  # noqa: E731
    spec = {
        "op": op,
        "enc": {k: plain(v) for k, v in enc.items()},
        "W_dec": plain(sae.W_dec),
        "b_dec": plain(sae.b_dec),
        **{k: plain(v) if isinstance(v, Tensor) and v.is_floating_point() else v for k, v in values.items()},
    }
    if is_transcoder(sae):
        spec["source"] = sae.cfg.hookpoint
    return spec
