"""Exercise: the attribution-patching estimate (saekit/circuits/attribute.py, `method='atp'`).

    attribution_patching(metric, f_clean_TF, f_patch_TF) -> scores_TF
        score[t, f] = d metric / d f[t, f] at f_clean, times (f_patch[t, f] - f_clean[t, f])

the first-order (linear) estimate of how much the metric changes when node (t, f) alone is patched from
its clean to its counterfactual value: one backward pass for every node at once, where activation patching
runs one forward per node. The reference is saekit's `circuits.attribute.node_scores`, the function that
turns gradients and node values into the circuit's scores.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..circuits.attribute import node_scores
from .checking import Mistake, as_tensor, call, check_finite, check_shape, check_unchanged, compare, generator, passed, protect, randn

T, F = 4, 6


def toy_metric(seed: int):
    """A smooth, non-linear metric of node values [T, F] -> 0-d tensor (so the gradient depends on where it is taken)."""
    gen = generator(seed)
    w_F, u_T = randn(F, gen=gen), randn(T, gen=gen)

    def metric(f_TF: Tensor) -> Tensor:
        return (torch.tanh(f_TF @ w_F) * u_T).sum() + 0.1 * f_TF.sum().pow(2)

    return metric


def reference_scores(metric, f_clean_TF: Tensor, f_patch_TF: Tensor) -> Tensor:
    """saekit's node scores (no error node here) from the gradient at the clean values."""
    f = f_clean_TF.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(metric(f), f)
    zeros = torch.zeros(1, T, 1)
    return node_scores((g[None], zeros), (f_clean_TF[None], zeros), (f_patch_TF[None], zeros), False)[:, :F]


def exact_effects(metric, f_clean_TF: Tensor, f_patch_TF: Tensor) -> Tensor:
    """Activation patching, node by node: metric(clean with node (t, f) patched) - metric(clean) [T, F]."""
    out = torch.zeros(T, F)
    with torch.no_grad():
        m0 = metric(f_clean_TF)
        for t in range(T):
            for j in range(F):
                f = f_clean_TF.clone()
                f[t, j] = f_patch_TF[t, j]
                out[t, j] = metric(f) - m0
    return out


CASES = [100, 101]


def _grad_at(metric, f: Tensor) -> Tensor:
    f = f.clone().requires_grad_(True)
    return torch.autograd.grad(metric(f), f)[0]


def _hint(err: BaseException) -> str | None:
    if "does not require grad" in str(err):
        return "f_clean_TF does not require grad: differentiate with respect to a copy that does (clone it, then requires_grad_())"
    return None


def check_attribution_patching(attribution_patching) -> None:
    """Check `attribution_patching(metric, f_clean_TF, f_patch_TF) -> scores_TF`."""
    __tracebackhide__ = True
    name = "attribution_patching"
    for seed in CASES:
        gen = generator(seed)
        metric = toy_metric(seed)
        clean = torch.relu(randn(T, F, gen=gen, offset=0.3))
        patch = torch.relu(randn(T, F, gen=gen, offset=0.3))
        mine = {"f_clean_TF": clean.clone(), "f_patch_TF": patch.clone()}
        before = protect(mine)
        got = as_tensor(call(attribution_patching, name, [metric, mine["f_clean_TF"], mine["f_patch_TF"]], _hint), name)
        check_unchanged(mine, before, name)
        check_shape(got, (T, F), name, "[T, F] (one score per node)", {(): "that is one number: return one score per node, [T, F]"})
        check_finite(got, name)
        want = reference_scores(metric, clean, patch)
        g_clean, g_patch = _grad_at(metric, clean), _grad_at(metric, patch)
        mistakes = [
            Mistake(g_clean, "that is the gradient alone; multiply it by how much each node changes, f_patch - f_clean"),
            Mistake(g_clean * (clean - patch), "the sign is flipped: the change is f_patch - f_clean (patched minus clean)"),
            Mistake(g_patch * (patch - clean), "the gradient is taken at the patched values; attribution patching takes it at the clean ones"),
            Mistake(patch - clean, "that is the change of each node alone; weight it by the metric's gradient at the clean values"),
            Mistake(exact_effects(metric, clean, patch), "these are the exact effects of patching one node at a time (activation patching, one forward per node); the exercise is the gradient estimate, one backward for all nodes"),
        ]
        compare(got.detach(), want, name, mistakes=mistakes)
    passed(name, len(CASES), "shape, values, inputs left unchanged")


__all__ = ["check_attribution_patching", "toy_metric", "reference_scores", "exact_effects", "CASES"]
