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
from .metric import checked_metric
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
    progress: bool = True,
) -> Circuit:
    """Attribute `metric` to every SAE feature and error node of `saes` ({hookpoint: SAE}, execution order;
    transcoders keyed by the hook point they predict, e.g. {'resid_post.2': sae, 'mlp_out.3': transcoder}).

    `prompts`: texts, or (clean, counterfactual) pairs (or `counterfactuals=`), all of one token length.
    `baseline`: 'counterfactual' (default when counterfactuals are given), 'zero' or 'mean' (the mean over
    the prompts' positions). `method`: 'ig' (integrated gradients, `steps` points) or 'atp'.
    `sum_positions`: one node per feature instead of one per (position, feature). Edges (`edges=True`)
    between nodes with |score| >= `node_threshold`; the returned circuit keeps edges with |weight| >=
    `edge_threshold`. Local models only (see `Model.grad_logits`).
    """
    if method not in METHODS:
        raise CircuitError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise CircuitError(f"steps must be a positive int, got {steps!r}")
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not (isinstance(v, (int, float)) and v >= 0):
            raise CircuitError(f"{name} must be a number >= 0, got {v!r}")
    if getattr(model, "remote", False):
        model.grad_logits(torch.zeros(1, 1, dtype=torch.long), {})  # raises the documented RemoteError
    work = checked_saes(model, saes)
    p = checked_prompts(model, prompts, counterfactuals)
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
        circuit.edges = edge_weights(model, work, p.clean, clean, patch, grads, kept, sum_positions, progress)
    return circuit


def node_values(model: Any, work: dict, ids: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """{hookpoint: (f [B, T, F], err [B, T, D])} of a forward on `ids` (no gradients)."""
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


def edge_weights(
    model: Any, work: dict, ids: Tensor, clean: dict, patch: dict, grads: dict, kept: list, sum_positions: bool, progress: bool
) -> list[Edge]:
    """Edges u -> d between kept nodes of consecutive hook points (one backward per kept downstream node)."""
    by_hp: dict[str, list[Node]] = {}
    for n, _ in kept:
        by_hp.setdefault(n.hookpoint, []).append(n)
    hps = list(work)
    pairs = [(u, d) for u, d in zip(hps, hps[1:]) if by_hp.get(u) and by_hp.get(d)]
    B = ids.shape[0]
    out: list[Edge] = []
    bar = tqdm(total=sum(len(by_hp[d]) for _, d in pairs), desc="edges", disable=not progress, leave=False)
    for u, d in pairs:
        su, sd = {}, {}
        model.grad_logits(ids, hook_edits(work, {u: nodes_edit(work[u], su), d: nodes_edit(work[d], sd)}))
        du_f = patch[u][0] - clean[u][0]
        du_e = patch[u][1] - clean[u][1]
        g_f, g_e = grads[d]
        for dn in by_hp[d]:
            s = node_value(sd, g_f, g_e, dn) / B
            gf, ge = torch.autograd.grad(s, [su["f"], su["err"]], retain_graph=True, allow_unused=True)
            gf = torch.zeros_like(du_f) if gf is None else gf
            ge = torch.zeros_like(du_e) if ge is None else ge
            w_BTF = gf * du_f
            w_BT = (ge * du_e).sum(-1)
            for un in by_hp[u]:
                w = node_pick(w_BTF, w_BT, un)
                out.append(Edge(un, dn, w))
            bar.update(1)
        del su, sd
    bar.close()
    return out


def node_value(store: dict, g_f: Tensor, g_e: Tensor, n: Node) -> Tensor:
    """g . value of node `n` (summed over prompts, and positions when n.position is None)."""
    pos = slice(None) if n.position is None else n.position
    if n.index == ERROR:
        return (g_e[:, pos] * store["err"][:, pos]).sum()
    return (g_f[:, pos, n.index] * store["f"][:, pos, n.index]).sum()


def node_pick(w_BTF: Tensor, w_BT: Tensor, n: Node) -> float:
    pos = slice(None) if n.position is None else n.position
    if n.index == ERROR:
        return float(w_BT[:, pos].sum())
    return float(w_BTF[:, pos, n.index].sum())
