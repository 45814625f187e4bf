"""Several runs of one batch, the clean model and edited copies, in one local forward without logits.

What evaluation needs from the language model is, for the clean run and each edited run, the next-token
NLL and the KL from the clean distribution, and the clean activations at a few hook points. The
readable way (`Model.capture` + `Model.compare` + `Model.token_nll`) runs four forwards per batch, two of
them through the blocks before the edited hook point again, and keeps [B, T, V] logits per run. Here
the R runs are stacked along the batch ([R * B, T]) and run once by the transformers model with plain
torch hooks:

- the blocks whose output precedes every edit (`shared`) compute the clean rows only: a pre-hook hands
  them the first B rows of their tensor arguments and a hook tiles their output back to R * B rows;
- reads store the clean rows at their sites; each site's plan ops edit their run's rows (the ops of
  `in_trace.apply_op`, so edits behave as in a trace);
- a pre-hook on the output embedding keeps its input (the final hidden states) and stops the forward,
  and `head_scores` scores them in vocabulary chunks.

Local only (the hooks run in this process); `Model.score_runs` is the entry point.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelInputError
from .head_scores import CHUNK_BYTES, head_scores
from .in_trace import apply_op


class _Stop(Exception):
    """Raised by the output-embedding pre-hook: the logits are not computed by the model."""


def scored_runs(
    hf: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    *,
    plans: list[list],
    shared: list[str],
    reads: list[tuple[str, str, str]],
    keep: Tensor,
    softcap: float | None,
    kl: bool = True,
    score_clean: bool = True,
    targets: Tensor | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, Any]:
    """The clean run and one run per plan of `input_ids` [B, T] in one forward.

    `plans`: one plan per edited run, [((module_path, io), [op, ...]), ...] (see `in_trace.apply_plan`);
    `shared`: module paths of the blocks computed once (their output precedes every site of every plan);
    `reads`: (name, module_path, io) sites read from the clean run; `keep` [B, T]: where spec ops act.
    Returns {'acts': {name: [B, T, D]}, 'nll': [R, B, T-1], 'kl': [R, B, T-1] (KL(clean || run r),
    with `kl`)}, run 0 the clean run, float64 scores. `score_clean=False` (only without `kl`) skips the clean
    run's head: its NLL row is NaN (the clean rows still run, as the edited runs' shared blocks need them).
    `targets` [B, T-1, K] (only without `kl`): K next tokens to score at each position instead of the input's own;
    'nll' is then [R, B, T-1, K].
    """
    if kl and (not score_clean or targets is not None):
        raise ModelInputError("scored_runs: the KL is the clean run's against each run's on the input's own next tokens, "
                         "so kl=True needs score_clean=True and targets=None")
    B, T = input_ids.shape
    R = 1 + len(plans)
    ids = input_ids.repeat(R, 1)
    mask = None if attention_mask is None else attention_mask.repeat(R, 1)
    acts: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    run_reads: list[dict] = [{} for _ in range(R)]
    by_site: dict[tuple[str, str], list[tuple[int, list]]] = {}
    for r, plan in enumerate(plans, start=1):
        for site, ops in plan:
            by_site.setdefault(site, []).append((r, ops))
    handles = []
    try:
        for path in shared:
            module = hf.get_submodule(path)
            handles.append(module.register_forward_pre_hook(_first_rows(B, R), with_kwargs=True))
            handles.append(module.register_forward_hook(_tiled(B, R)))
        for name, path, io in reads:
            handles.append(_hook(hf.get_submodule(path), io, _reader(acts, name, B)))
        for (path, io), per_run in by_site.items():
            handles.append(_hook(hf.get_submodule(path), io, _editor(per_run, B, keep, run_reads)))
        handles.append(hf.get_output_embeddings().register_forward_pre_hook(_stopper(head), with_kwargs=True))
        kwargs = {} if mask is None else {"attention_mask": mask}
        try:
            hf(input_ids=ids, use_cache=False, **kwargs)
        except _Stop:
            pass
    finally:
        for h in handles:
            h.remove()
    if "hidden" not in head:
        raise ModelInputError(
            "the model's output embedding never ran, so its runs cannot be scored: evaluate needs a causal LM whose "
            "get_output_embeddings() is applied to the final hidden state (pass reference=True for other models)"
        )
    first = 0 if score_clean else 1  # runs whose head is applied: from `first` on
    h_RBTD = head["hidden"].reshape(R, B, T, -1)[first:]
    lm_head = hf.get_output_embeddings()
    scores = head_scores(
        h_RBTD[:, :, :-1].reshape(R - first, B * (T - 1), -1),
        lm_head.weight,
        getattr(lm_head, "bias", None),
        input_ids[:, 1:].reshape(-1) if targets is None else targets.to(input_ids.device).reshape(B * (T - 1), -1),
        softcap=softcap,
        kl=kl,
        chunk_bytes=chunk_bytes,
    )
    nll_RBT = scores["nll"].view(R - first, B, T - 1, *(() if targets is None else (-1,)))  # [R, B, T-1(, K)]
    if first:
        nll_RBT = torch.cat([torch.full_like(nll_RBT[:1], float("nan")), nll_RBT])
    out: dict[str, Any] = {"acts": acts, "nll": nll_RBT}
    if kl:
        out["kl"] = scores["kl"].view(R, B, T - 1)
    return out


def _hook(module: nn.Module, io: str, fn):
    """Register `fn(value) -> value or None` on `module`'s output (io 'output') or first input."""
    if io == "output":

        def out_hook(mod, args, output):
            first = output[0] if isinstance(output, tuple) else output
            new = fn(first)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return module.register_forward_hook(out_hook)

    def in_hook(mod, args, kwargs):
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        key = next(iter(kwargs))  # hidden_states passed by keyword
        new = fn(kwargs[key])
        return None if new is None else (args, {**kwargs, key: new})

    return module.register_forward_pre_hook(in_hook, with_kwargs=True)


def _reader(acts: dict, name: str, B: int):
    def read(value: Tensor):
        acts[name] = value[:B].detach().clone()

    return read


def _editor(per_run: list[tuple[int, list]], B: int, keep: Tensor, run_reads: list[dict]):
    """Apply each run's ops at one site to that run's rows (in_trace.apply_plan's loop, per run)."""

    def edit(value: Tensor) -> Tensor:
        parts = list(value.split(B))
        for r, ops in per_run:
            part = parts[r]
            for op in ops:
                if isinstance(op, dict) and op["op"] == "read":
                    run_reads[r][op["key"]] = part
                    continue
                part = apply_op(op, part, keep, 0, run_reads[r])
            parts[r] = part
        return torch.cat(parts)

    return edit


def _first_rows(B: int, R: int):
    """Pre-hook of a shared block: every batch-major tensor argument cut to the clean run's B rows."""

    def cut(x: Any) -> Any:
        if isinstance(x, Tensor) and x.dim() >= 2 and x.shape[0] == R * B:
            return x[:B]
        if isinstance(x, tuple):
            return tuple(cut(v) for v in x)
        return x

    def hook(module, args, kwargs):
        return tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}

    return hook


def _tiled(B: int, R: int):
    """Hook of a shared block: its B-row outputs repeated for the R runs."""

    def tile(x: Any) -> Any:
        if isinstance(x, Tensor) and x.dim() >= 2 and x.shape[0] == B:
            return x.repeat(R, *([1] * (x.dim() - 1)))
        if isinstance(x, tuple):
            return tuple(tile(v) for v in x)
        return x

    def hook(module, args, output):
        return tile(output)

    return hook


def _stopper(head: dict):
    def hook(module, args, kwargs):
        head["hidden"] = args[0] if args else next(iter(kwargs.values()))
        raise _Stop

    return hook


__all__ = ["scored_runs"]
