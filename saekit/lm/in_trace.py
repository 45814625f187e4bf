"""The code that runs inside a trace: on this machine, or on NDIF when the model is remote.

NDIF does not have saekit installed, so these functions travel by value with each request
(`remote.register_saekit`): they use plain torch only, call nothing from saekit but each other, and read
only the plain data they are given (tensors, dicts, tuples, ints). Edits arrive as a plan (see `apply_plan`)
whose ops are plain-data specs or callables; an SAE's encoder arrives as the plain-tensor description its
class makes (`Sae.plain_encoder`), evaluated by `encode_latents`, the one implementation of every
architecture's encoder inside a trace.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

PER_LATENT = ("W_enc", "b_enc", "threshold", "mag_scale", "b_mag")
"""Entries of an encoder description that hold one row or value per latent (a scalar threshold is shared)."""


def saved(x: Any) -> Any:
    """`x`, marked to come back from the trace (nnsight's save)."""
    import nnsight

    return nnsight.save(x)


def envoy_at(root: Any, path: str) -> Any:
    """The nnsight envoy of the submodule at a dotted module path ('model.layers.3.mlp')."""
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def read_sites(root: Any, sites: list) -> dict:
    """The activation at each (name, module_path, io) site, in the given (execution) order."""
    out = {}
    for name, path, io in sites:
        env = envoy_at(root, path)
        value = env.input if io == "input" else env.output
        if isinstance(value, tuple):
            value = value[0]
        out[name] = value
    return out


def apply_plan(root: Any, plan: list, keep: Tensor, step: int) -> None:
    """Apply each site's ops in execution order; `plan` is [((module_path, io), [op, ...]), ...].

    An op is a callable [B, T, D] -> [B, T, D], or a spec: {'op': 'add', 'vector' [D]}, an SAE edit
    (`sae_edit`), or {'op': 'read', 'key'}: keep the activation under `key` for a later site's SAE edit
    whose 'source' names it (a transcoder reads mlp_in and writes mlp_out). Specs act where `keep` [B, T]
    is True on the prompt pass (step 0), everywhere after.
    """
    reads: dict = {}
    for (path, io), ops in plan:
        env = envoy_at(root, path)
        value = env.input if io == "input" else env.output
        first = value[0] if isinstance(value, tuple) else value
        for op in ops:
            if isinstance(op, dict) and op["op"] == "read":
                reads[op["key"]] = first
                continue
            first = apply_op(op, first, keep, step, reads)
        write_site(env, io, value, first)


def write_site(env: Any, io: str, value: Any, new: Tensor) -> None:
    """Put `new` where the site's activation came from: the module's first input, or its output (the first
    element when the output is a tuple, `value` being what was read there)."""
    if io == "input":
        env.input = new
    elif isinstance(value, tuple):
        env.output = (new, *value[1:])
    else:
        env.output = new


def apply_op(op: Any, x_BTD: Tensor, keep: Tensor, step: int, reads: dict | None = None) -> Tensor:
    """One op of a plan on the activation x [B, T, D] (see `apply_plan`; `reads` holds the activations
    kept by earlier 'read' ops)."""
    if callable(op):
        return op(x_BTD)
    x = x_BTD.float()
    if op["op"] == "add":
        new = x + op["vector"].to(x.device, x.dtype)
    elif op["op"] == "sae":
        source = (reads or {}).get(op["source"]) if "source" in op else None
        if "source" in op and source is None:
            raise ValueError(f"the SAE edit reads {op['source']!r}, which no earlier site of the plan kept")
        new = sae_edit(op, x, None if source is None else source.float())
    else:
        raise ValueError(f"unknown edit op {op['op']!r}")
    if step == 0 and keep is not None and keep.shape == x.shape[:2]:
        new = torch.where(keep.to(x.device)[..., None], new, x)
    return new.to(x_BTD.dtype)


def encode_latents(enc: dict, x_ND: Tensor, rows: Tensor | None = None) -> dict:
    """Encode `x` [N, D] with an SAE's encoder described in plain tensors (`Sae.plain_encoder`).

    The description: 'W_enc' [F, D], 'b_enc' [F], 'x_offset' [D] (subtracted from x first: b_dec for
    SAEs, zeros for transcoders), and a 'rule' with its extras. pre = (x - x_offset) @ W_enc^T + b_enc;

        'topk'       ReLU of the k largest pre-activations per row ('k')
        'relu'       ReLU(pre)
        'threshold'  pre * (pre > threshold), one 'threshold' per latent [F] or one for all (JumpReLU,
                     BatchTopK at inference)
        'relative_threshold'  pre * (pre > threshold * ||x - x_offset||), one 'threshold' for all (BatchTopK
                     with `SaeConfig.relative_selection`)
        'gated'      1[pre > 0] * ReLU(proj * mag_scale + b_mag), proj = (x - x_offset) @ W_enc^T
                     ('mag_scale', 'b_mag' [F]: the magnitude path of a Gated SAE)

    Returns {'vals', 'idx'} ([N, k]) for 'topk', else {'dense'} ([N, F], or [N, S] when the description
    holds only the latents `rows`, see `encoder_rows`), and with `rows` also 'a_S' [N, S]: the
    activations of the latents `rows`.
    """
    dev = x_ND.device
    x_in = x_ND - enc["x_offset"].to(dev)
    W_enc, b_enc = enc["W_enc"].to(dev), enc["b_enc"].to(dev)
    rule = enc["rule"]
    if rule == "gated":
        proj = x_in @ W_enc.t()
        acts = (proj + b_enc > 0) * (proj * enc["mag_scale"].to(dev) + enc["b_mag"].to(dev)).relu()
    else:
        pre = torch.addmm(b_enc, x_in, W_enc.t())
        if rule == "topk":
            vals, idx = pre.topk(enc["k"], dim=-1, sorted=False)
            vals = vals.relu()
            out = {"vals": vals, "idx": idx}
            if rows is not None:
                out["a_S"] = ((idx[:, :, None] == rows.to(dev)) * vals[:, :, None]).sum(1)
            return out
        if rule == "relu":
            acts = pre.relu()
        elif rule == "threshold":
            acts = pre * (pre > enc["threshold"].to(dev))
        elif rule == "relative_threshold":
            acts = pre * (pre > enc["threshold"].to(dev) * x_in.norm(dim=-1, keepdim=True))
        else:
            raise ValueError(f"unknown encoder rule {rule!r}")
    out = {"dense": acts}
    if rows is not None:
        out["a_S"] = acts if enc.get("rows_only") else acts[:, rows.to(dev)]
    return out


def encoder_rows(enc: dict, rows: Tensor) -> dict:
    """The description restricted to the latents `rows` (so that only their rows travel to NDIF), where
    each latent's activation depends on its own row alone; a TopK description is returned whole."""
    if enc["rule"] == "topk":
        return enc
    out = dict(enc, rows_only=True)
    for name in PER_LATENT:
        if name in enc and enc[name].numel() > 1:
            out[name] = enc[name][rows].clone()
    return out


def sae_edit(op: dict, x_BTD: Tensor, source_BTD: Tensor | None = None) -> Tensor:
    """x' = base + (target - a_S) @ W_dec[S], base = x (error term kept) or x_hat (reconstruction only).

    `op`: {'op': 'sae', 'enc' (an encoder description), 'error_term', 'rows' (the edited latents S, or
    None), 'target' [S], 'dec_rows' [S, D], optionally 'active_only' [S] bool (edit those latents only
    where they fire), and without the error term 'W_dec' [F, D], 'b_dec' [D] (and 'W_skip' [D, D_in] for a
    skip transcoder)}. A transcoder's edit encodes `source` (its input hook point, kept by a 'read' op)
    and edits x, the hook point it predicts; an SAE encodes x itself.
    """
    B, T, D = x_BTD.shape
    x_ND = x_BTD.reshape(B * T, D)
    src_ND = x_ND if source_BTD is None else source_BTD.reshape(B * T, source_BTD.shape[-1])
    rows = op["rows"]
    lat = encode_latents(op["enc"], src_ND, rows)
    dev = x_ND.device
    if op["error_term"]:
        base = x_ND
    else:
        W_dec = op["W_dec"].to(dev)
        if "vals" in lat:
            x_hat = torch.nn.functional.embedding_bag(lat["idx"], W_dec, per_sample_weights=lat["vals"], mode="sum")
        else:
            x_hat = lat["dense"] @ W_dec
        base = x_hat + op["b_dec"].to(dev)
        if "W_skip" in op:
            base = base + src_ND @ op["W_skip"].to(dev).t()
    if rows is not None:
        delta_NS = op["target"].to(dev) - lat["a_S"]
        if "active_only" in op:  # Clamp(where='active'): leave a feature alone where it does not fire
            delta_NS = torch.where(op["active_only"].to(dev) & (lat["a_S"] <= 0), torch.zeros_like(delta_NS), delta_NS)
        base = base + delta_NS @ op["dec_rows"].to(dev)
    return base.reshape(B, T, D)


def nll_of(logits_BTV: Tensor, input_ids: Tensor, return_logprobs: bool) -> dict:
    """{'nll' [B, T-1]} of each next token (and 'logp' [B, T, V]), saved to come back."""
    import nnsight

    logp = torch.log_softmax(logits_BTV.float(), dim=-1)
    nll = -logp[:, :-1].gather(-1, input_ids[:, 1:, None].to(logp.device)).squeeze(-1)
    out = {"nll": nll.cpu()}
    if return_logprobs:
        out["logp"] = logp.cpu()
    return nnsight.save(out)


def compare_logits(clean_BTV: Tensor, edited_BTV: Tensor, input_ids: Tensor, token_ids: Tensor | None, top: int) -> dict:
    """Small summaries of the clean vs edited next-token distributions (what gets downloaded)."""
    import nnsight

    lc = torch.log_softmax(clean_BTV.float(), dim=-1)
    le = torch.log_softmax(edited_BTV.float(), dim=-1)
    tgt = input_ids[:, 1:, None].to(lc.device)
    out = {
        "nll_clean": (-lc[:, :-1].gather(-1, tgt).squeeze(-1)).cpu(),
        "nll_edited": (-le[:, :-1].gather(-1, tgt).squeeze(-1)).cpu(),
    }
    if token_ids is not None:
        t = token_ids.to(lc.device)
        out["logp_clean"] = lc[:, :, t].cpu()
        out["logp_edited"] = le[:, :, t].cpu()
    if top > 0:
        dp = le.exp() - lc.exp()
        for name, largest in (("up", True), ("down", False)):
            _, ids = dp.topk(top, dim=-1, largest=largest)
            out[f"{name}_ids"] = ids.cpu()
            out[f"{name}_logp_clean"] = lc.gather(-1, ids).cpu()
            out[f"{name}_logp_edited"] = le.gather(-1, ids).cpu()
    return nnsight.save(out)
