"""Testing a circuit by ablation: faithfulness and completeness curves, and SHIFT-style feature edits.

    m(C)          the metric with every node outside C mean-ablated (features and error nodes, at every
                  SAE hook point, every position after the separator); the mean is per position over the
                  clean prompts and their counterfactuals (so the empty circuit keeps the template but not
                  what tells clean from counterfactual); downstream SAEs re-encode the edited activations
    faithfulness  (m(C) - m(empty)) / (m(model) - m(empty)): 1 for the full circuit, 0 for the empty one
    completeness  the faithfulness of the complement (model minus C): near 0 when C holds all that matters

`ablate` removes chosen features (zero or mean, every position) and reports the metric's change: the
SHIFT-style use of a circuit on new prompts (Marks et al. 2024).

A remote model (NDIF, or remote='local') runs the same ablations inside traces (`traced.py`): all of a
curve's runs in one request; its metric must be `logit_diff` or `target_logprob`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import CircuitError
from .circuit import Circuit
from .inputs import checked_prompts, checked_saes
from . import traced
from .metric import checked_metric, checked_values, plain_metric
from .splice import ablate_edit, hook_edits
from .attribute import node_values


@dataclass
class FaithfulnessCurve:
    """Faithfulness and completeness of a circuit pruned at each node threshold."""

    thresholds: list[float]
    """Node thresholds, ascending."""
    n_nodes: list[int]
    """Nodes in the circuit at each threshold."""
    faithfulness: list[float]
    """(m(C) - m(empty)) / (m(model) - m(empty)) at each threshold."""
    completeness: list[float]
    """The faithfulness of the complement at each threshold."""
    m_model: float
    """The metric of the full model (mean over prompts)."""
    m_empty: float
    """The metric with every node ablated."""

    def plot(self, ax: Any = None):
        """Faithfulness and completeness against the number of nodes (matplotlib); returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(self.n_nodes, self.faithfulness, "o-", label="faithfulness (circuit kept)")
        ax.plot(self.n_nodes, self.completeness, "s--", label="completeness (circuit removed)")
        ax.set_xscale("symlog")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_xlabel("nodes in the circuit")
        ax.set_ylabel("fraction of the metric recovered")
        ax.legend(fontsize=8)
        return ax


def ablated_metric(model: Any, work: dict, ids: Tensor, metric: Any, keep: Mapping[str, Tensor], means: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
    """The metric [B] with nodes outside `keep` ({hookpoint: bool [T, F + 1]}) set to `means`."""
    edits = {}
    for h, sae in work.items():
        k = keep[h]
        edits[h] = ablate_edit(sae, k[:, :-1], k[:, -1], *means[h])
    with torch.no_grad():
        return metric(model.grad_logits(ids, hook_edits(work, edits), grad=False)).float().cpu()


def mean_values(values: list[dict], how: str) -> dict[str, tuple[Tensor, Tensor]]:
    """{hookpoint: (f [T, F], err [T, D])}: per-position means over every prompt of `values` (node values of
    the clean prompts and, when given, their counterfactuals), or zeros."""
    if how not in ("mean", "zero"):
        raise CircuitError(f"ablation must be 'mean' or 'zero', got {how!r}")
    out = {}
    for h in values[0]:
        f_BTF = torch.cat([v[h][0] for v in values])
        err_BTD = torch.cat([v[h][1] for v in values])
        if how == "zero":
            out[h] = (torch.zeros_like(f_BTF[0]), torch.zeros_like(err_BTD[0]))
        else:
            out[h] = (f_BTF.mean(0), err_BTD.mean(0))
    return out


def _full_masks(circuit_masks: dict[str, Tensor], T: int) -> dict[str, Tensor]:
    return {h: (m[None].expand(T, -1) if m.dim() == 1 else m) for h, m in circuit_masks.items()}


def faithfulness(
    model: Any,
    saes: Any,
    prompts: Any,
    metric: Any,
    circuit: Circuit,
    thresholds: Sequence[float] | None = None,
    *,
    ablation: str = "mean",
    signed: bool = False,
    progress: bool = True,
) -> FaithfulnessCurve:
    """Faithfulness and completeness of `circuit` pruned at each of `thresholds` (default: 13 thresholds
    spread over its scores), on the clean side of `prompts` (texts, or (clean, counterfactual) pairs whose
    both sides make the per-position means). `ablation`: 'mean' or 'zero'. `signed`: circuits of only the
    nodes that carry the behaviour (see `Circuit.masks`); by default |score| >= threshold as in Marks et
    al., which also keeps nodes that work against it, so faithfulness can drop as such nodes join."""
    work = checked_saes(model, saes)
    if list(work) != circuit.hookpoints:
        raise CircuitError(f"the SAEs' hook points {list(work)} differ from the circuit's {circuit.hookpoints}")
    p = checked_prompts(model, prompts)
    T = p.clean.shape[1]
    if not circuit.summed and next(iter(circuit.scores.values())).shape[0] != T:
        raise CircuitError(f"the circuit has per-position nodes for {next(iter(circuit.scores.values())).shape[0]} tokens but these prompts have {T}: use prompts of the same template")
    if thresholds is None:
        top = max(float(s.abs().max()) for s in circuit.scores.values())
        thresholds = [0.0] + [top * 10 ** (-x) for x in torch.linspace(3, 0, 11).tolist()] + [top * 1.01]
    thresholds = sorted(float(t) for t in thresholds)
    if getattr(model, "remote", False):
        plain_metric(metric, p.clean.shape[0])  # before any work
    clean = node_values(model, work, p.clean)
    values = [clean] if p.patch is None else [clean, node_values(model, work, p.patch)]
    means = mean_values(values, ablation)
    none = {h: torch.zeros(T, s.shape[-1], dtype=torch.bool) for h, s in circuit.scores.items()}
    if getattr(model, "remote", False):
        return _remote_curve(model, work, p.clean, metric, circuit, thresholds, signed, T, none, means)
    m_model = checked_metric(metric, model.grad_logits(p.clean, {}, grad=False)).mean().item()
    m_empty = ablated_metric(model, work, p.clean, metric, none, means).mean().item()
    if abs(m_model - m_empty) < 1e-6:
        raise CircuitError("the metric is the same with every node ablated as on the model: faithfulness is undefined; choose another metric or ablation")
    faith, compl, n_nodes = [], [], []
    for t in tqdm(thresholds, desc="faithfulness", disable=not progress, leave=False):
        masks = circuit.masks(t, signed)
        keep = _full_masks(masks, T)
        n_nodes.append(int(sum(int(m.sum()) for m in masks.values())))
        m_c = ablated_metric(model, work, p.clean, metric, keep, means).mean().item()
        m_rest = ablated_metric(model, work, p.clean, metric, {h: ~k for h, k in keep.items()}, means).mean().item()
        faith.append((m_c - m_empty) / (m_model - m_empty))
        compl.append((m_rest - m_empty) / (m_model - m_empty))
    return FaithfulnessCurve(thresholds, n_nodes, faith, compl, m_model, m_empty)


def _remote_curve(
    model: Any, work: dict, ids: Tensor, metric: Any, circuit: Circuit, thresholds: list[float], signed: bool, T: int,
    none: dict, means: dict,
) -> FaithfulnessCurve:
    """`faithfulness`'s curve on a remote model: the model's metric and every ablated run in one request."""
    keeps, n_nodes = [none], []
    for t in thresholds:
        masks = circuit.masks(t, signed)
        keep = _full_masks(masks, T)
        n_nodes.append(int(sum(int(m.sum()) for m in masks.values())))
        keeps += [keep, {h: ~k for h, k in keep.items()}]
    m_model_B, *ms = traced.metrics(model, ids, metric, [{}] + [traced.ablation_splices(work, k, means) for k in keeps])
    m_model = checked_values(m_model_B).mean().item()
    m_empty = ms[0].mean().item()
    if abs(m_model - m_empty) < 1e-6:
        raise CircuitError("the metric is the same with every node ablated as on the model: faithfulness is undefined; choose another metric or ablation")
    faith = [(m.mean().item() - m_empty) / (m_model - m_empty) for m in ms[1::2]]
    compl = [(m.mean().item() - m_empty) / (m_model - m_empty) for m in ms[2::2]]
    return FaithfulnessCurve(thresholds, n_nodes, faith, compl, m_model, m_empty)


@dataclass
class AblationResult:
    """The metric per prompt before and after ablating features."""

    metric_clean: Tensor
    """[B] on the unedited model."""
    metric_ablated: Tensor
    """[B] with the features ablated (error terms kept)."""

    @property
    def change(self) -> float:
        """Mean metric change (ablated - clean)."""
        return float((self.metric_ablated - self.metric_clean).mean())

    @property
    def flipped(self) -> float:
        """Fraction of prompts whose metric changed sign."""
        return float(((self.metric_clean > 0) != (self.metric_ablated > 0)).float().mean())


def ablate(
    model: Any,
    saes: Any,
    prompts: Any,
    metric: Any,
    features: Mapping[str, Sequence[int]],
    *,
    how: str = "zero",
) -> AblationResult:
    """Ablate `features` ({hookpoint: [feature, ...]}) at every position of `prompts` (texts of one token
    length) and report the metric before and after. `how`: 'zero' or 'mean' (per position over these prompts)."""
    work = checked_saes(model, saes)
    p = checked_prompts(model, prompts)
    if getattr(model, "remote", False):
        plain_metric(metric, p.clean.shape[0])  # before any work
    unknown = [h for h in features if h not in work]
    if unknown:
        raise CircuitError(f"features name hook points without an SAE: {unknown}; SAEs are at {list(work)}")
    T = p.clean.shape[1]
    means = mean_values([node_values(model, work, p.clean)], how)
    keep = {}
    for h, sae in work.items():
        k = torch.ones(T, sae.n_latents + 1, dtype=torch.bool)
        idx = list(features.get(h, []))
        if any(not (0 <= int(i) < sae.n_latents) for i in idx):
            raise CircuitError(f"feature indices at {h!r} must lie in 0..{sae.n_latents - 1}, got {idx}")
        k[:, idx] = False
        keep[h] = k
    if getattr(model, "remote", False):
        m_clean, m_ablated = traced.metrics(model, p.clean, metric, [{}, traced.ablation_splices(work, keep, means)])
        return AblationResult(checked_values(m_clean).cpu(), m_ablated.cpu())
    m_clean = checked_metric(metric, model.grad_logits(p.clean, {}, grad=False)).float().cpu()
    return AblationResult(m_clean, ablated_metric(model, work, p.clean, metric, keep, means))
