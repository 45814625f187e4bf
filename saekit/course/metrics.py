"""Exercises: the reconstruction and downstream metrics (saekit/metrics.py is the reference).

    fvu(x_ND, x_hat_ND)                           sum ||x - x_hat||^2 / sum ||x - mean_n(x)||^2   (0-d tensor)
    next_token_loss(logits_BTV, ids_BT)           mean cross-entropy of predicting ids[:, t+1] from logits[:, t]
    ce_loss_recovered(ce_clean, ce_spliced, ce_zero)   (ce_zero - ce_spliced) / (ce_zero - ce_clean)
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .. import metrics as lib
from .checking import (
    Mistake,
    as_tensor,
    call,
    check_finite,
    check_gradients,
    check_shape,
    check_unchanged,
    compare,
    generator,
    passed,
    protect,
    randn,
)

N, D = 12, 5
"""Tokens and width of the FVU checks."""


def _fvu_cases() -> list[tuple[Tensor, Tensor]]:
    gen = generator(60)
    out = []
    for offset in (4.0, 0.0):  # a common offset, as in Gemma's residual stream, separates the centred from the raw variance
        x = randn(N, D, gen=gen, offset=offset)
        x = x + randn(1, D, gen=gen, scale=2.0)  # per-dimension offsets too
        x_hat = x + randn(N, D, gen=gen, scale=0.4)
        out.append((x, x_hat))
    return out


def check_fvu(fvu) -> None:
    """Check `fvu(x_ND, x_hat_ND) -> 0-d tensor`, the fraction of variance unexplained (`saekit.metrics.fvu`)."""
    __tracebackhide__ = True
    name = "fvu"
    cases = _fvu_cases()
    for i, (x, x_hat) in enumerate(cases):
        mine = {"x_ND": x.clone(), "x_hat_ND": x_hat.clone().requires_grad_(True)}
        before = protect(mine)
        got = as_tensor(call(fvu, name, [mine["x_ND"], mine["x_hat_ND"]]), name)
        check_unchanged(mine, before, name)
        check_shape(got, (), name, "a 0-d tensor (one number for the batch)", {(N,): "that is one number per token: FVU sums over every token and dimension before dividing"})
        check_finite(got, name)
        ref = x_hat.clone().requires_grad_(True)
        want = lib.fvu(x, ref)
        err = (x - x_hat).pow(2)
        mistakes = [
            Mistake(err.sum() / x.pow(2).sum(), "the denominator is sum ||x||^2; the variance is about the mean activation: subtract x.mean(0) first"),
            Mistake(err.sum() / (x - x.mean(-1, keepdim=True)).pow(2).sum(), "you subtract each token's own mean (over dim -1); subtract the mean over tokens (dim 0), a [D] vector"),
            Mistake(1 - lib.fvu(x, x_hat), "that is the explained variance, 1 - FVU; FVU is the unexplained fraction"),
            Mistake((err.sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean(), "you average per-token ratios; FVU divides the total squared error by the total variance"),
            Mistake((err.sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean(), "you average per-dimension ratios; FVU divides the total squared error by the total variance"),
            Mistake(err.mean(), "that is the mean squared error; FVU divides the squared error by the variance of x"),
            Mistake(err.sum() / x.var(0).sum(), "the denominator is the per-dimension variance summed (x.var(0).sum()), a mean over tokens; the numerator is a sum over tokens: use the sum of squared deviations"),
            Mistake(err.sum() / (x.var(0).sum() * N), "the denominator uses the unbiased variance (it divides by N - 1); FVU's is the plain sum of squared deviations from the mean"),
            Mistake((x - x_hat).norm() / (x - x.mean(0)).norm(), "that is a ratio of norms; FVU is a ratio of squared norms"),
        ]
        compare(got, want.detach(), name, mistakes=mistakes)
        check_gradients(got, want, name, {"x_hat_ND": mine["x_hat_ND"]}, {"x_hat_ND": ref}, gen=generator(61 + i))
    passed(name, len(cases))


def reference_next_token_loss(logits_BTV: Tensor, ids_BT: Tensor) -> Tensor:
    """The mean next-token cross-entropy: position t's logits predict token t + 1."""
    V = logits_BTV.shape[-1]
    return Fn.cross_entropy(logits_BTV[:, :-1].reshape(-1, V), ids_BT[:, 1:].reshape(-1))


def check_next_token_loss(next_token_loss) -> None:
    """Check `next_token_loss(logits_BTV, ids_BT) -> 0-d tensor`: the mean CE of each next token."""
    __tracebackhide__ = True
    name = "next_token_loss"
    gen = generator(70)
    Bn, T, V = 3, 6, 11
    cases = [(randn(Bn, T, V, gen=gen, scale=2.0), torch.randint(0, V, (Bn, T), generator=gen)) for _ in range(2)]
    for i, (logits, ids) in enumerate(cases):
        mine = {"logits_BTV": logits.clone().requires_grad_(True), "ids_BT": ids.clone()}
        before = protect(mine)
        got = as_tensor(call(next_token_loss, name, [mine["logits_BTV"], mine["ids_BT"]]), name)
        check_unchanged(mine, before, name)
        check_shape(got, (), name, "a 0-d tensor (the mean over predictions)", {(Bn, T - 1): "that is one loss per prediction: return their mean", (Bn, T): "that is one loss per position; position t predicts token t + 1 (T - 1 predictions per row), and return their mean"})
        check_finite(got, name)
        ref = logits.clone().requires_grad_(True)
        want = reference_next_token_loss(ref, ids)
        ce = lambda lg, tg: Fn.cross_entropy(lg.reshape(-1, V), tg.reshape(-1))  # noqa: E731
        p = logits.softmax(-1)
        mistakes = [
            Mistake(ce(logits, ids), "position t's logits are scored against token t itself; they predict the next token, t + 1 (drop the last position's logits and the first token)"),
            Mistake(ce(logits[:, 1:], ids[:, :-1]), "the shift goes the wrong way: logits at position t predict token t + 1, so drop the *last* logits and the *first* token"),
            Mistake(-p[:, :-1].gather(-1, ids[:, 1:, None]).mean(), "you average minus the probability; the loss is minus the log-probability (log_softmax)"),
            Mistake(Fn.nll_loss(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1)), "the logits are used as log-probabilities; normalise them first with log_softmax over the vocabulary (dim -1)"),
            Mistake(-logits.log_softmax(1)[:, :-1].gather(-1, ids[:, 1:, None]).mean(), "log_softmax runs over the positions (dim 1); it normalises over the vocabulary (dim -1)"),
            Mistake(Fn.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="sum"), "that is the sum over predictions; return the mean"),
        ]
        compare(got, want.detach(), name, mistakes=mistakes)
        check_gradients(got, want, name, {"logits_BTV": mine["logits_BTV"]}, {"logits_BTV": ref}, gen=generator(71 + i))
    passed(name, len(cases))


CE_CASES = [(2.10, 2.45, 7.30), (3.05, 3.90, 5.20), (1.80, 6.00, 5.00), (2.50, 2.50, 9.00)]
"""(ce_clean, ce_spliced, ce_zero) triples: a good SAE, a middling one, one worse than zero-ablation, a perfect one."""


def check_ce_loss_recovered(ce_loss_recovered) -> None:
    """Check `ce_loss_recovered(ce_clean, ce_spliced, ce_zero) -> float` (`saekit.metrics.ce_loss_recovered`)."""
    __tracebackhide__ = True
    name = "ce_loss_recovered"
    for c, s, z in CE_CASES:
        got = as_tensor(call(ce_loss_recovered, name, [c, s, z]), name, allow_number=True)
        check_shape(got, (), name, "one number")
        check_finite(got, name)
        want = lib.ce_loss_recovered(c, s, z)
        mistakes = [
            Mistake((s - c) / (z - c), "that is 1 minus the score: it is 0 for a perfect SAE. The score is how much of the loss gap between zero-ablation and the clean model the SAE closes"),
            Mistake((z - s) / (s - c) if s != c else float("inf"), "the denominator is the gap between the spliced and the clean loss; it should be the gap between zero-ablation and the clean model"),
            Mistake((z - s) / z, "the denominator is the zero-ablation loss itself; it should be the gap between zero-ablation and the clean model"),
            Mistake(c / s, "a ratio of losses is not the score; compare gaps to the zero-ablation loss"),
            Mistake(max(0.0, min(1.0, want)) if not 0.0 <= want <= 1.0 else float("nan"), "the score is clipped to [0, 1]; leave it unclipped, so an SAE worse than zero-ablation shows a negative score"),
        ]
        compare(got, torch.tensor(want), name, mistakes=mistakes, what=f"({c}, {s}, {z})")
    passed(name, len(CE_CASES), "values")


__all__ = ["check_fvu", "check_next_token_loss", "check_ce_loss_recovered", "reference_next_token_loss", "CE_CASES"]
