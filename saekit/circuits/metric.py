"""Metrics on logits for circuit attribution: each maps logits [B, T, V] to one number per prompt [B].

    logit_diff(model, good, bad)   logit(good) - logit(bad) at the last position (or `pos`)
    target_logprob(model, target)  log p(target) at the last position (or `pos`)

`good`, `bad` and `target` are one token (a string that tokenizes to one token, or an id) for all prompts,
or a list with one per prompt.

Each metric these helpers make also carries a plain description (`metric.plain`), which is what travels when
the model is remote: the server computes the metric from it (`saekit.lm.grad_trace.metric_of`). Any other
callable works with local models only (`plain_metric` says so before any work).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..errors import CircuitError

Metric = Callable[[Tensor], Tensor]
"""logits [B, T, V] -> [B]: one scalar per prompt, differentiable."""


def token_id(model: Any, token: int | str) -> int:
    """The id of one token given as an id or as text that is exactly one token (e.g. ' are')."""
    if isinstance(token, int) and not isinstance(token, bool):
        if not 0 <= token < model.vocab_size:
            raise CircuitError(f"token id {token} is outside the vocabulary 0..{model.vocab_size - 1}")
        return token
    if not isinstance(token, str) or not token:
        raise CircuitError(f"a metric token must be an id or a non-empty string, got {token!r}")
    ids = model.tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise CircuitError(
            f"{token!r} is {len(ids)} tokens ({ids}); a metric compares single tokens: pass one token "
            "(mind the leading space, e.g. ' are') or its id"
        )
    return int(ids[0])


def _ids(model: Any, tokens: Any) -> Tensor:
    if isinstance(tokens, (list, tuple)):
        return torch.tensor([token_id(model, t) for t in tokens], dtype=torch.long)
    return torch.tensor([token_id(model, tokens)], dtype=torch.long)


def _at(logits_BTV: Tensor, ids: Tensor, pos: int) -> Tensor:
    B = logits_BTV.shape[0]
    if ids.numel() not in (1, B):
        raise CircuitError(f"the metric has {ids.numel()} tokens but the batch has {B} prompts: pass one token or one per prompt")
    idx_B1 = ids.to(logits_BTV.device).expand(B)[:, None]
    return logits_BTV[:, pos].gather(-1, idx_B1).squeeze(-1)


def logit_diff(model: Any, good: int | str | Sequence[Any], bad: int | str | Sequence[Any], pos: int = -1) -> Metric:
    """Metric logit(good) - logit(bad) at position `pos` (default: the last), per prompt."""
    good_ids, bad_ids = _ids(model, good), _ids(model, bad)

    def metric(logits_BTV: Tensor) -> Tensor:
        logits_BTV = logits_BTV.float()
        return _at(logits_BTV, good_ids, pos) - _at(logits_BTV, bad_ids, pos)

    metric.__name__ = "logit_diff"
    metric.plain = {"kind": "logit_diff", "good": good_ids, "bad": bad_ids, "pos": pos}
    return metric


def target_logprob(model: Any, target: int | str | Sequence[Any], pos: int = -1) -> Metric:
    """Metric log p(target) at position `pos` (default: the last), per prompt."""
    ids = _ids(model, target)

    def metric(logits_BTV: Tensor) -> Tensor:
        return _at(torch.log_softmax(logits_BTV.float(), dim=-1), ids, pos)

    metric.__name__ = "target_logprob"
    metric.plain = {"kind": "target_logprob", "target": ids, "pos": pos}
    return metric


def plain_metric(metric: Any, n_prompts: int) -> dict:
    """The plain description of a metric made by `logit_diff` or `target_logprob`, checked against the
    number of prompts: what a remote model's server evaluates. Any other callable raises a CircuitError
    naming the fix (a remote run cannot call a function of this process)."""
    if not callable(metric):
        raise CircuitError(f"metric must be a callable logits [B, T, V] -> [B], got {type(metric).__name__}")
    plain = getattr(metric, "plain", None)
    if not isinstance(plain, dict):
        name = getattr(metric, "__name__", type(metric).__name__)
        raise CircuitError(
            f"the metric {name!r} is a function of this process, and a remote model computes the metric on the "
            "server, where only plain data travels: use saekit.circuits.logit_diff(model, good, bad) or "
            "target_logprob(model, target) (one token or one per prompt, any position), or load the model "
            "locally (saekit.load_model(name)) to attribute with any callable"
        )
    for key in ("good", "bad", "target"):
        if key in plain and plain[key].numel() not in (1, n_prompts):
            raise CircuitError(
                f"the metric has {plain[key].numel()} tokens but the batch has {n_prompts} prompts: pass one token or one per prompt"
            )
    return plain


def checked_values(m_B: Tensor) -> Tensor:
    """A metric's values on the clean prompts, checked finite (a CircuitError otherwise)."""
    if not torch.isfinite(m_B).all():
        raise CircuitError("the metric returned NaN or inf on the clean prompts; check its tokens and positions")
    return m_B


def checked_metric(metric: Any, logits_BTV: Tensor) -> Tensor:
    """Call `metric` and check it returns one finite number per prompt [B]; a CircuitError otherwise."""
    if not callable(metric):
        raise CircuitError(f"metric must be a callable logits [B, T, V] -> [B], got {type(metric).__name__}")
    out = metric(logits_BTV)
    B = logits_BTV.shape[0]
    if not isinstance(out, Tensor) or out.shape != (B,):
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise CircuitError(
            f"the metric must return one scalar per prompt, a tensor of shape ({B},), got {got}: reduce over "
            "positions and vocabulary inside the metric (see saekit.circuits.logit_diff)"
        )
    if not torch.isfinite(out).all():
        raise CircuitError("the metric returned NaN or inf on the clean prompts; check its tokens and positions")
    return out
