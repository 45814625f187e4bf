"""The plain torch that circuit attribution runs inside a trace (on NDIF when the model is remote): SAEs and
transcoders spliced as feature and error nodes, node values replaced or ablated, the metric, and gradients.

Like `in_trace.py`, everything here travels by value with each request (`remote.register_saekit`): plain
torch only, nothing from saekit but `in_trace.py` and each other, plain data in (tensors, dicts, lists, ints,
floats, strings). The gradients are taken with `torch.autograd.grad` in the trace body, after the forward
has reached what they need: several backwards over one retained graph (edges) are as plain as one.

A site of a run is (module_path, io, spec), in execution order; the spec's 'op':

    'read'     keep the activation under spec['key'] (a transcoder's input, for a later site's 'source')
    'nodes'    x -> decode(f') + err, f = encode(src), f' a copy of f, err = x - decode(f): the value is
               unchanged while f' [B, T, F] and err [B, T, D] are graph nodes (`saekit.circuits.splice`)
    'replace'  x -> decode(f) + err with given values 'f', 'err'; with 'alphas' [S] the run is S copies of
               the batch (the caller repeats the prompts) and copy k takes f + alpha_k (f_patch - f) (and
               so for err): integrated gradients' points in one forward
    'ablate'   features where 'keep_TF' is False and the error where 'keep_err_T' is False set to their
               means 'f_mean_TF', 'err_mean_TD' (position 0 left alone)

Every splice spec holds the SAE as plain tensors: 'enc' (`Sae.plain_encoder`), 'W_dec' [F, D], 'b_dec' [D],
'name' (its hook point) and, for a transcoder, 'source' (the key its input was read under).

On a server whose model parameters are frozen (NDIF freezes them), activations carry no graph of their own:
node tensors that do not require grad are made leaves that do, so gradients reach them all the same.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .in_trace import encode_latents, envoy_at, saved, write_site


def dense_latents(enc: dict, x_ND: Tensor) -> Tensor:
    """Dense latents [N, F] of the encoder description `enc` (a TopK code scattered into zeros)."""
    lat = encode_latents(enc, x_ND)
    if "vals" in lat:
        F = enc["W_enc"].shape[0]
        return lat["vals"].new_zeros(x_ND.shape[0], F).scatter(-1, lat["idx"], lat["vals"])
    return lat["dense"]


def decode(spec: dict, f_BTF: Tensor) -> Tensor:
    """decode(f) = f @ W_dec + b_dec, [B, T, F] -> [B, T, D] (a skip transcoder's skip term is in err)."""
    B, T, F = f_BTF.shape
    W_dec = spec["W_dec"].to(f_BTF.device)
    return (f_BTF.reshape(-1, F) @ W_dec + spec["b_dec"].to(f_BTF.device)).reshape(B, T, W_dec.shape[1])


def encode(spec: dict, src_BTD: Tensor) -> Tensor:
    """f = encode(src) [B, T, F] in the decoder's dtype."""
    B, T, D = src_BTD.shape
    dt = spec["W_dec"].dtype
    f = dense_latents(spec["enc"], src_BTD.to(dt).reshape(B * T, D))
    return f.reshape(B, T, -1).to(dt)


def as_leaf(t: Tensor) -> Tensor:
    """`t` itself when it is in a graph; otherwise a fresh leaf that requires grad."""
    return t if t.requires_grad else t.detach().clone().requires_grad_(True)


def splice(spec: dict, x_BTD: Tensor, src_BTD: Tensor, nodes: dict) -> Tensor:
    """One site's splice op (see the module docstring); 'nodes' and 'replace' put their node tensors in
    nodes[name] = (f, err). Returns the activation that replaces x."""
    op = spec["op"]
    x = x_BTD.to(spec["W_dec"].dtype)
    if op == "nodes":
        f = encode(spec, src_BTD)
        f_node = as_leaf(f.clone())
        err = as_leaf(x - decode(spec, f))
        nodes[spec["name"]] = (f_node, err)
        new = decode(spec, f_node) + err
    elif op == "replace":
        f, err = spec["f"].to(x.device), spec["err"].to(x.device)
        if "alphas" in spec:
            f_p, e_p = spec["f_patch"].to(x.device), spec["err_patch"].to(x.device)
            f = torch.cat([f + a * (f_p - f) for a in spec["alphas"]])
            err = torch.cat([err + a * (e_p - err) for a in spec["alphas"]])
        if spec.get("grad"):
            f, err = f.detach().clone().requires_grad_(True), err.detach().clone().requires_grad_(True)
            nodes[spec["name"]] = (f, err)
        new = decode(spec, f) + err
    elif op == "ablate":
        f = encode(spec, src_BTD)
        err = x - decode(spec, f)
        T = x.shape[1]
        keep = spec["keep_TF"][:T].to(x.device).clone()
        keep_err = spec["keep_err_T"][:T].to(x.device).clone()
        keep[0], keep_err[0] = True, True
        f2 = torch.where(keep, f, spec["f_mean_TF"][:T].to(x.device, x.dtype))
        err2 = torch.where(keep_err[:, None], err, spec["err_mean_TD"][:T].to(x.device, x.dtype))
        new = decode(spec, f2) + err2
    else:
        raise ValueError(f"unknown splice op {op!r}")
    return new.to(x_BTD.dtype)


def apply_splices(root: Any, sites: list) -> dict:
    """Run each (module_path, io, spec) site in execution order; {name: (f, err)} of the node sites."""
    nodes: dict = {}
    reads: dict = {}
    for path, io, spec in sites:
        env = envoy_at(root, path)
        value = env.input if io == "input" else env.output
        first = value[0] if isinstance(value, tuple) else value
        if spec["op"] == "read":
            reads[spec["key"]] = first
            continue
        src = reads[spec["source"]] if "source" in spec else first
        write_site(env, io, value, splice(spec, first, src, nodes))
    return nodes


def metric_of(spec: dict, logits_BTV: Tensor) -> Tensor:
    """The metric [B] a plain description names (`saekit.circuits.metric`): {'kind': 'logit_diff', 'good',
    'bad' (ids [1] or [B0]), 'pos'} or {'kind': 'target_logprob', 'target', 'pos'}. Ids given per prompt
    repeat over a batch of several copies of the prompts."""
    logits = logits_BTV.float()
    B = logits.shape[0]

    def at(values_BTV: Tensor, ids: Tensor) -> Tensor:
        ids = ids.to(values_BTV.device)
        ids = ids.expand(B) if ids.numel() == 1 else ids.repeat(B // ids.numel())
        return values_BTV[:, spec["pos"]].gather(-1, ids[:, None]).squeeze(-1)

    if spec["kind"] == "logit_diff":
        return at(logits, spec["good"]) - at(logits, spec["bad"])
    if spec["kind"] == "target_logprob":
        return at(torch.log_softmax(logits, dim=-1), spec["target"])
    raise ValueError(f"unknown metric kind {spec['kind']!r}")


def node_grads(nodes: dict, m: Tensor, steps: int) -> dict:
    """{'grad_f.<name>', 'grad_err.<name>'} of m.sum() for every node tensor; a run of `steps` copies of the
    batch gives the mean over the copies (integrated gradients), summed in copy order."""
    names = list(nodes)
    flat = [t for n in names for t in nodes[n]]
    g = torch.autograd.grad(m.sum(), flat, allow_unused=True)
    out = {}
    for i, n in enumerate(names):
        for j, kind in enumerate(("grad_f", "grad_err")):
            t, gi = flat[2 * i + j], g[2 * i + j]
            gi = torch.zeros_like(t) if gi is None else gi
            if steps > 1:
                B = gi.shape[0] // steps
                acc = torch.zeros_like(gi[:B])
                for k in range(steps):
                    acc += gi[k * B:(k + 1) * B] / steps
                gi = acc
            out[f"{kind}.{n}"] = gi.detach().cpu()
    return out


def edge_weights(nodes: dict, spec: dict) -> Tensor:
    """[N, U]: weight(u -> d) = grad_u (g_d . d) . (u_p - u_c) for the downstream nodes d and upstream
    nodes u the spec lists (by 'down_pos', 'down_idx', 'up_pos', 'up_idx'; position -1: summed over
    positions, index -1: the error node), from batched backwards of 'chunk' downstream nodes each (as
    `saekit.circuits.attribute.edge_weights` does locally). 'g_f', 'g_e': the node method's gradients at
    the downstream hook point; 'du_f', 'du_e': the upstream nodes' patch - clean."""
    up_f, up_e = nodes[spec["up"]]
    d_f, d_e = nodes[spec["down"]]
    dev = d_f.device
    g_f, g_e = spec["g_f"].to(dev, d_f.dtype), spec["g_e"].to(dev, d_e.dtype)
    du_f, du_e = spec["du_f"].to(dev, up_f.dtype), spec["du_e"].to(dev, up_e.dtype)
    down_pos, down_idx = spec["down_pos"].tolist(), spec["down_idx"].tolist()
    up_pos, up_idx = spec["up_pos"].to(dev), spec["up_idx"].to(dev)
    B = g_f.shape[0]
    F_up = du_f.shape[-1]
    cols = torch.where(up_idx < 0, torch.full_like(up_idx, F_up), up_idx)
    rows = []
    n = spec["chunk"]
    for start in range(0, len(down_idx), n):
        part = range(start, min(start + n, len(down_idx)))
        go_f = g_f.new_zeros((len(part), *g_f.shape))
        go_e = g_e.new_zeros((len(part), *g_e.shape))
        for j, k in enumerate(part):
            pos = slice(None) if down_pos[k] < 0 else down_pos[k]
            if down_idx[k] < 0:
                go_e[j, :, pos] = g_e[:, pos] / B
            else:
                go_f[j, :, pos, down_idx[k]] = g_f[:, pos, down_idx[k]] / B
        gf, ge = torch.autograd.grad(
            [d_f, d_e], [up_f, up_e], grad_outputs=[go_f, go_e], retain_graph=True, allow_unused=True,
            is_grads_batched=True,
        )
        gf = du_f.new_zeros((len(part), *du_f.shape)) if gf is None else gf
        ge = du_e.new_zeros((len(part), *du_e.shape)) if ge is None else ge
        w_NTF = (gf * du_f).sum(1)
        w_NT = (ge * du_e).sum((1, -1))
        w_NTF1 = torch.cat([w_NTF, w_NT[..., None]], dim=-1)
        if int(up_pos[0]) < 0:
            rows.append(w_NTF1.sum(1)[:, cols])
        else:
            rows.append(w_NTF1[:, up_pos, cols])
    return torch.cat(rows).detach().cpu()


def grad_pass(root: Any, sites: list, want: dict) -> dict:
    """One traced run: the splices of `sites`, then what `want` asks for, saved to come back:
    'values' (the 'nodes' sites' f and err as 'f.<name>', 'err.<name>'), 'metric' (a description:
    the metric [B] as 'metric'), 'grad' (gradients of the summed metric at every node, see `node_grads`;
    'steps': copies of the batch to average over), 'edges' (a spec for `edge_weights`: 'edges' [N, U])."""
    if (want.get("grad") or want.get("edges") is not None) and (torch.is_inference_mode_enabled() or not torch.is_grad_enabled()):
        raise RuntimeError(
            "this server runs traces without autograd (inference mode or no_grad), so the gradients circuit "
            "attribution needs cannot be taken inside the trace: attribute with a local model"
        )
    nodes = apply_splices(root, sites)
    out = {}
    if want.get("values"):
        for name, (f, err) in nodes.items():
            out[f"f.{name}"] = f.detach().cpu()
            out[f"err.{name}"] = err.detach().cpu()
    if want.get("edges") is not None:
        out["edges"] = edge_weights(nodes, want["edges"])
    if want.get("metric") is not None:
        m = metric_of(want["metric"], root.output.logits)
        out["metric"] = m.detach().cpu()
        if want.get("grad"):
            out.update(node_grads(nodes, m, int(want.get("steps") or 1)))
    return saved(out)
