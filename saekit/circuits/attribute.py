"""`attribute`: node and edge attributions over SAE features and error nodes (Marks et al. 2024).

For a metric m (one number per prompt) and each node a (a feature or a hook point's error node, at a
position) with clean value a_c and patched value a_p (from a counterfactual prompt, zero, or the mean):

    attribution patching ('atp')   score(a) = grad_a m |clean . (a_p - a_c)          one forward + backward
    integrated gradients ('ig')    score(a) = mean_k grad_a m |a_k . (a_p - a_c)     per hook point, `steps`
                                   with every node of that hook point at a_k = a_c + (k + 1/2)/steps (a_p - a_c)

IG's scores of one hook point sum to m(that hook point patched) - m(clean) up to the Riemann error
(completeness). Scores are means over prompts; the error node's score sums over the model width.

Edges between consecutive hook points U -> D, only for nodes above `node_threshold` (never a dense
[F, F] matrix): for each kept downstream node d, one backward of s_d = g_d . d (g_d: the node method's
gradient of m at d) to the upstream nodes gives weight(u -> d) = grad_u s_d . (u_p - u_c). Summed over d,
these give u's attribution patching score when all of U's effect passes through D (D a residual hook
point; not for a transcoder's mlp_out.L, which the residual stream goes around).

`saes` may mix residual SAEs (keyed by the hook point they reconstruct) and transcoders (keyed by the
hook point they predict, mlp_out.L; their features are encoded from mlp_in.L): see `splice.py`.

A local model runs the forwards here (`Model.grad_logits`, torch hooks) and differentiates them here; a
remote one (NDIF, or remote='local') runs each step inside traces on the server (`traced.py`), with the
same results to float rounding.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import CircuitError
from .circuit import ERROR, Circuit, Edge, Node
from .inputs import checked_prompts, checked_saes
from . import traced
from .metric import checked_metric, plain_metric
from .splice import hook_edits, nodes_edit, replace_edit

BASELINES = ("counterfactual", "zero", "mean")
METHODS = ("ig", "atp")


def attribute(
    model: Any,
    saes: Any,
    prompts: Any,
    metric: Any,
    *,
    counterfactuals: Sequence[str] | None = None,
    baseline: str | None = None,
    method: str = "ig",
    steps: int = 10,
    sum_positions: bool = False,
    node_threshold: float = 0.1,
    edge_threshold: float = 0.01,
    edges: bool = True,
    edge_batch: int | None = None,
    progress: bool = True,
) -> Circuit:
    """Attribute `metric` to every SAE feature and error node of `saes` ({hookpoint: SAE}, execution order;
    transcoders keyed by the hook point they predict, e.g. {'resid_post.2': sae, 'mlp_out.3': transcoder}).

    `prompts`: texts, or (clean, counterfactual) pairs (or `counterfactuals=`), all of one token length.
    `baseline`: 'counterfactual' (default when counterfactuals are given), 'zero' or 'mean' (the mean over
    the prompts' positions). `method`: 'ig' (integrated gradients, `steps` points) or 'atp'.
    `sum_positions`: one node per feature instead of one per (position, feature). Edges (`edges=True`)
    between nodes with |score| >= `node_threshold`; the returned circuit keeps edges with |weight| >=
    `edge_threshold`. `edge_batch`: downstream nodes per batched backward when computing edges (default:
    as many as fit in 256 MB; 1: one backward per node).

    A remote model (NDIF, or remote='local') computes everything inside traces on the server, a handful of
    requests (see `saekit.circuits.traced`); its metric must be `logit_diff` or `target_logprob` (their
    plain description travels; any other callable raises a CircuitError before any work).
    """
    if method not in METHODS:
        raise CircuitError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise CircuitError(f"steps must be a positive int, got {steps!r}")
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not (isinstance(v, (int, float)) and v >= 0):
            raise CircuitError(f"{name} must be a number >= 0, got {v!r}")
    if edge_batch is not None and not (isinstance(edge_batch, int) and not isinstance(edge_batch, bool) and edge_batch >= 1):
        raise CircuitError(f"edge_batch must be a positive int (downstream nodes per backward) or None, got {edge_batch!r}")
    work = checked_saes(model, saes)
    p = checked_prompts(model, prompts, counterfactuals)
    remote = bool(getattr(model, "remote", False))
    if remote:
        plain_metric(metric, p.clean.shape[0])  # a callable that cannot travel fails here, before any work
    if baseline is None:
        baseline = "counterfactual" if p.patch is not None else "zero"
    if baseline not in BASELINES:
        raise CircuitError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if baseline == "counterfactual" and p.patch is None:
        raise CircuitError("baseline='counterfactual' needs counterfactual prompts: pass (clean, counterfactual) pairs")
    if baseline != "counterfactual" and p.patch is not None:
        raise CircuitError(f"baseline={baseline!r} ablates nodes, so counterfactual prompts would be unused: drop them or use baseline='counterfactual'")

    clean, patch = node_values(model, work, p.clean), None
    if baseline == "counterfactual":
        patch = node_values(model, work, p.patch)
    else:
        patch = baseline_values(clean, baseline)
    if remote:
        m_clean, m_patch = traced.clean_and_patched(model, work, p.clean, metric, patch)
    else:
        m_clean = checked_metric(metric, model.grad_logits(p.clean, {}, grad=False))
        m_patch = metric(model.grad_logits(p.clean, hook_edits(work, {h: replace_edit(work[h], *patch[h]) for h in work}), grad=False))

    if method == "atp":
        grads = atp_grads(model, work, p.clean, metric)
    else:
        grads = ig_grads(model, work, p.clean, metric, clean, patch, steps, progress)
    scores = {h: node_scores(grads[h], clean[h], patch[h], sum_positions) for h in work}
    circuit = Circuit(
        hookpoints=list(work), scores=scores, tokens=p.tokens, method=method, baseline=baseline,
        metric_clean=float(m_clean.mean()), metric_patch=float(m_patch.mean()),
        node_threshold=float(node_threshold), edge_threshold=float(edge_threshold),
        edge_node_threshold=float(node_threshold),
    )
    kept = circuit.nodes()
    if not kept:
        top = max(float(s.abs().max()) for s in scores.values())
        warnings.warn(
            f"no node has |score| >= {node_threshold:g} (the largest is {top:.3g}): the circuit is empty and no "
            "edges were computed; lower node_threshold", stacklevel=2,
        )
        return circuit
    if edges and len(work) > 1:
        circuit.edges = edge_weights(model, work, p.clean, clean, patch, grads, kept, sum_positions, progress, edge_batch)
    return circuit


def node_values(model: Any, work: dict, ids: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """{hookpoint: (f [B, T, F], err [B, T, D])} of a forward on `ids` (no gradients)."""
    if getattr(model, "remote", False):
        return traced.node_values(model, work, ids)
    stores = {h: {} for h in work}
    model.grad_logits(ids, hook_edits(work, {h: nodes_edit(work[h], stores[h]) for h in work}), grad=False)
    return {h: (s["f"].detach(), s["err"].detach()) for h, s in stores.items()}


def baseline_values(clean: dict, baseline: str) -> dict[str, tuple[Tensor, Tensor]]:
    """Zero or mean (over prompts and positions after the separator) node values; position 0 stays clean."""
    out = {}
    for h, (f, err) in clean.items():
        if baseline == "zero":
            f_p, e_p = torch.zeros_like(f), torch.zeros_like(err)
        else:
            f_p = f[:, 1:].mean((0, 1)).expand_as(f).clone()
            e_p = err[:, 1:].mean((0, 1)).expand_as(err).clone()
        f_p[:, 0], e_p[:, 0] = f[:, 0], err[:, 0]
        out[h] = (f_p, e_p)
    return out


def atp_grads(model: Any, work: dict, ids: Tensor, metric: Any) -> dict[str, tuple[Tensor, Tensor]]:
    """{hookpoint: (grad_f [B, T, F], grad_err [B, T, D])} of the metric summed over prompts, clean run."""
    if getattr(model, "remote", False):
        return traced.atp_grads(model, work, ids, metric)
    stores = {h: {} for h in work}
    logits = model.grad_logits(ids, hook_edits(work, {h: nodes_edit(work[h], stores[h]) for h in work}))
    m = metric(logits).sum()
    flat = [t for h in work for t in (stores[h]["f"], stores[h]["err"])]
    g = torch.autograd.grad(m, flat, allow_unused=True)
    g = [torch.zeros_like(t) if gi is None else gi for t, gi in zip(flat, g)]
    return {h: (g[2 * i], g[2 * i + 1]) for i, h in enumerate(work)}


def ig_grads(model: Any, work: dict, ids: Tensor, metric: Any, clean: dict, patch: dict, steps: int, progress: bool) -> dict:
    """{hookpoint: (mean grad_f, mean grad_err)} over `steps` midpoints between clean and patched values,
    one hook point at a time (the others run unchanged)."""
    if getattr(model, "remote", False):
        return traced.ig_grads(model, work, ids, metric, clean, patch, steps)
    out = {}
    bar = tqdm(total=len(work) * steps, desc="integrated gradients", disable=not progress, leave=False)
    for h, sae in work.items():
        (f_c, e_c), (f_p, e_p) = clean[h], patch[h]
        g_f, g_e = torch.zeros_like(f_c), torch.zeros_like(e_c)
        for k in range(steps):
            a = (k + 0.5) / steps
            f = (f_c + a * (f_p - f_c)).requires_grad_(True)
            e = (e_c + a * (e_p - e_c)).requires_grad_(True)
            m = metric(model.grad_logits(ids, hook_edits(work, {h: replace_edit(sae, f, e)}))).sum()
            gf, ge = torch.autograd.grad(m, [f, e])
            g_f += gf / steps
            g_e += ge / steps
            bar.update(1)
        out[h] = (g_f, g_e)
    bar.close()
    return out


def node_scores(grads: tuple[Tensor, Tensor], clean: tuple[Tensor, Tensor], patch: tuple[Tensor, Tensor], sum_positions: bool) -> Tensor:
    """[T, F + 1] (or [F + 1]) mean-over-prompts scores grad . (patch - clean); last column the error node."""
    (g_f, g_e), (f_c, e_c), (f_p, e_p) = grads, clean, patch
    s_f_BTF = g_f * (f_p - f_c)
    s_e_BT = (g_e * (e_p - e_c)).sum(-1)
    s_BTF1 = torch.cat([s_f_BTF, s_e_BT[..., None]], dim=-1)
    s = s_BTF1.mean(0)
    return (s.sum(0) if sum_positions else s).detach().cpu()


EDGE_BYTES = 256 * 2**20
"""Memory for one chunk of batched edge backwards (grad outputs and upstream gradients, float32)."""


def edge_chunk(B: int, T: int, f_down: int, f_up: int, D: int, edge_batch: int | None) -> int:
    """Downstream nodes per batched backward: `edge_batch`, or as many as fit in EDGE_BYTES."""
    if edge_batch is not None:
        return edge_batch
    per_node = 4 * B * T * (f_down + f_up + 2 * D)  # one [B, T, F + D] grad output and one upstream gradient
    return max(1, min(256, EDGE_BYTES // per_node))


def edge_weights(
    model: Any, work: dict, ids: Tensor, clean: dict, patch: dict, grads: dict, kept: list, sum_positions: bool,
    progress: bool, edge_batch: int | None = None,
) -> list[Edge]:
    """Edges u -> d between kept nodes of consecutive hook points. The backwards of s_d = g_d . d for a
    chunk of downstream nodes run as one batched backward (`is_grads_batched`, their grad outputs stacked
    [N, B, T, F]); `edge_batch=1` is one backward per downstream node. Never a dense [F, F] matrix."""
    by_hp: dict[str, list[Node]] = {}
    for n, _ in kept:
        by_hp.setdefault(n.hookpoint, []).append(n)
    hps = list(work)
    pairs = [(u, d) for u, d in zip(hps, hps[1:]) if by_hp.get(u) and by_hp.get(d)]
    B = ids.shape[0]
    if getattr(model, "remote", False):
        _, T, D = clean[hps[0]][1].shape
        chunks = {(u, d): edge_chunk(B, T, clean[d][0].shape[-1], clean[u][0].shape[-1], D, edge_batch) for u, d in pairs}
        return traced.edge_weights(model, work, ids, clean, patch, grads, pairs, by_hp, chunks)
    out: list[Edge] = []
    bar = tqdm(total=sum(len(by_hp[d]) for _, d in pairs), desc="edges", disable=not progress, leave=False)
    for u, d in pairs:
        su, sd = {}, {}
        model.grad_logits(ids, hook_edits(work, {u: nodes_edit(work[u], su), d: nodes_edit(work[d], sd)}))
        du_f = patch[u][0] - clean[u][0]
        du_e = patch[u][1] - clean[u][1]
        g_f, g_e = grads[d]
        ups, downs = by_hp[u], by_hp[d]
        _, T, F_d = sd["f"].shape
        n = edge_chunk(B, T, F_d, su["f"].shape[-1], su["err"].shape[-1], edge_batch)
        for start in range(0, len(downs), n):
            part = downs[start:start + n]
            go_f, go_e = seeds(part, g_f, g_e, B)
            gf, ge = torch.autograd.grad(
                [sd["f"], sd["err"]], [su["f"], su["err"]], grad_outputs=[go_f, go_e], retain_graph=True,
                allow_unused=True, is_grads_batched=True,
            )
            gf = torch.zeros((len(part), *du_f.shape), dtype=du_f.dtype, device=du_f.device) if gf is None else gf
            ge = torch.zeros((len(part), *du_e.shape), dtype=du_e.dtype, device=du_e.device) if ge is None else ge
            w_NTF = (gf * du_f).sum(1)  # [N, B, T, F] -> [N, T, F], summed over prompts
            w_NT = (ge * du_e).sum((1, -1))  # [N, B, T, D] -> [N, T]
            w_NU = pick_nodes(w_NTF, w_NT, ups).tolist()
            for j, dn in enumerate(part):
                out += [Edge(un, dn, w) for un, w in zip(ups, w_NU[j])]
            bar.update(len(part))
        del su, sd
    bar.close()
    return out


def seeds(part: list[Node], g_f: Tensor, g_e: Tensor, B: int) -> tuple[Tensor, Tensor]:
    """Grad outputs ([N, B, T, F], [N, B, T, D]) of s_n = g . value(n) / B for each downstream node n of `part`."""
    go_f = g_f.new_zeros((len(part), *g_f.shape))
    go_e = g_e.new_zeros((len(part), *g_e.shape))
    for j, n in enumerate(part):
        pos = slice(None) if n.position is None else n.position
        if n.index == ERROR:
            go_e[j, :, pos] = g_e[:, pos] / B
        else:
            go_f[j, :, pos, n.index] = g_f[:, pos, n.index] / B
    return go_f, go_e


def pick_nodes(w_NTF: Tensor, w_NT: Tensor, nodes: list[Node]) -> Tensor:
    """[N, U]: the weights of the upstream `nodes` (summed over positions when positions are summed)."""
    F = w_NTF.shape[-1]
    w_NTF1 = torch.cat([w_NTF, w_NT[..., None]], dim=-1)  # [N, T, F + 1], the error node last
    cols = torch.tensor([F if n.index == ERROR else n.index for n in nodes], device=w_NTF.device)
    if nodes[0].position is None:
        return w_NTF1.sum(1)[:, cols].cpu()
    pos = torch.tensor([n.position for n in nodes], device=w_NTF.device)
    return w_NTF1[:, pos, cols].cpu()
