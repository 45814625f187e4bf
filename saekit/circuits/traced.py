"""Circuit work on a remote model: the same node values, metrics, gradients and edges as the local path
(`attribute.py`, `faithfulness.py`), computed inside traces on the server and returned as plain tensors.

A local model runs plain torch hooks (`Model.grad_logits`) and differentiates here; a remote one cannot
send its graph back, so each step becomes runs of `Model.spliced_runs` (one nnsight session, one request
each): the SAEs travel as plain tensors (`splice.plain_splice`), the metric as its plain description
(`metric.plain_metric`: `logit_diff` and `target_logprob` only), and the server returns node values,
metric values, gradients at every node, and edge weights.

Requests per `attribute` call: node values (1, 2 with counterfactuals), the clean and patched metric (1),
gradients (1: attribution patching is one run; integrated gradients one run per hook point, its `steps`
points as `steps` copies of the prompts, all in that request), edges (1: one run per pair of consecutive
hook points). `faithfulness`: node values (1 or 2), then the model's metric and every ablated run (1).
`ablate`: node values (1), then the clean and the ablated metric (1).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .circuit import ERROR, Edge, Node
from .metric import checked_values, plain_metric
from .splice import plain_splice


def node_values(model: Any, work: dict, ids: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """{hookpoint: (f [B, T, F], err [B, T, D])} of a forward on `ids`, every SAE spliced as nodes."""
    run = {"splices": {h: plain_splice(sae, "nodes") for h, sae in work.items()}, "values": True}
    r = model.spliced_runs(ids, [run])[0]
    return {h: (r[f"f.{h}"], r[f"err.{h}"]) for h in work}


def metrics(model: Any, ids: Tensor, metric: Any, splice_sets: list[dict]) -> list[Tensor]:
    """The metric [B] of one run per {hookpoint: plain splice} of `splice_sets` ({} runs the model as it is),
    in one request."""
    desc = plain_metric(metric, ids.shape[0])
    runs = [{"splices": s, "metric": desc} for s in splice_sets]
    return [r["metric"].float() for r in model.spliced_runs(ids, runs)]


def clean_and_patched(model: Any, work: dict, ids: Tensor, metric: Any, patch: dict) -> tuple[Tensor, Tensor]:
    """The metric [B] on the clean prompts and with every hook point's nodes set to `patch`, in one request."""
    replaced = {h: plain_splice(sae, "replace", f=patch[h][0], err=patch[h][1]) for h, sae in work.items()}
    m_clean, m_patch = metrics(model, ids, metric, [{}, replaced])
    return checked_values(m_clean), m_patch


def atp_grads(model: Any, work: dict, ids: Tensor, metric: Any) -> dict[str, tuple[Tensor, Tensor]]:
    """{hookpoint: (grad_f, grad_err)} of the metric summed over prompts, clean run (one request)."""
    run = {
        "splices": {h: plain_splice(sae, "nodes") for h, sae in work.items()},
        "metric": plain_metric(metric, ids.shape[0]),
        "grad": True,
    }
    r = model.spliced_runs(ids, [run])[0]
    return {h: (r[f"grad_f.{h}"], r[f"grad_err.{h}"]) for h in work}


def ig_grads(model: Any, work: dict, ids: Tensor, metric: Any, clean: dict, patch: dict, steps: int) -> dict:
    """{hookpoint: (mean grad_f, mean grad_err)} over the `steps` midpoints, one run per hook point (the
    points as copies of the prompts), all in one request."""
    desc = plain_metric(metric, ids.shape[0])
    alphas = [(k + 0.5) / steps for k in range(steps)]
    runs = []
    for h, sae in work.items():
        (f_c, e_c), (f_p, e_p) = clean[h], patch[h]
        s = plain_splice(sae, "replace", f=f_c, err=e_c, f_patch=f_p, err_patch=e_p, alphas=alphas, grad=True)
        runs.append({"splices": {h: s}, "metric": desc, "grad": True, "steps": steps})
    results = model.spliced_runs(ids, runs)
    return {h: (r[f"grad_f.{h}"], r[f"grad_err.{h}"]) for h, r in zip(work, results)}


def edge_weights(
    model: Any, work: dict, ids: Tensor, clean: dict, patch: dict, grads: dict, pairs: list, by_hp: dict, chunks: dict,
) -> list[Edge]:
    """Edges u -> d for each (u, d) of `pairs` between the kept nodes `by_hp` ({hookpoint: [Node]}), one
    run per pair (u and d spliced as nodes, `chunks[(u, d)]` downstream nodes per batched backward on the
    server), all in one request; in the local path's order."""
    runs = []
    for u, d in pairs:
        ups, downs = by_hp[u], by_hp[d]
        spec = {
            "up": u, "down": d, "g_f": grads[d][0], "g_e": grads[d][1],
            "du_f": patch[u][0] - clean[u][0], "du_e": patch[u][1] - clean[u][1],
            "down_pos": _positions(downs), "down_idx": _indices(downs),
            "up_pos": _positions(ups), "up_idx": _indices(ups), "chunk": chunks[(u, d)],
        }
        runs.append({"splices": {u: plain_splice(work[u], "nodes"), d: plain_splice(work[d], "nodes")}, "edges": spec})
    out: list[Edge] = []
    for (u, d), r in zip(pairs, model.spliced_runs(ids, runs) if runs else []):
        w_DU = r["edges"].tolist()
        for j, dn in enumerate(by_hp[d]):
            out += [Edge(un, dn, w) for un, w in zip(by_hp[u], w_DU[j])]
    return out


def ablation_splices(work: dict, keep: Mapping[str, Tensor], means: Mapping[str, tuple[Tensor, Tensor]]) -> dict:
    """{hookpoint: plain splice} setting the nodes outside `keep` ({hookpoint: bool [T, F + 1]}) to `means`
    (`splice.ablate_edit`'s plain twin); run them with `metrics`."""
    return {
        h: plain_splice(sae, "ablate", keep_TF=keep[h][:, :-1].cpu(), keep_err_T=keep[h][:, -1].cpu(),
                        f_mean_TF=means[h][0], err_mean_TD=means[h][1])
        for h, sae in work.items()
    }


def _positions(nodes: list[Node]) -> Tensor:
    return torch.tensor([-1 if n.position is None else n.position for n in nodes], dtype=torch.long)


def _indices(nodes: list[Node]) -> Tensor:
    return torch.tensor([ERROR if n.index == ERROR else n.index for n in nodes], dtype=torch.long)
