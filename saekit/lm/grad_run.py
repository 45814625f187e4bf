"""Local forwards with autograd on and edits applied by plain torch hooks: what attribution needs.

nnsight's traces run saekit's other passes (inference mode, shippable to NDIF). Attribution patching,
integrated gradients and edge attributions need a graph that keeps every SAE node of several hook points
connected and is differentiated many times (`torch.autograd.grad` with `retain_graph`), so this module runs
the transformers model directly with forward hooks at the hook points' modules. Local only: a remote
model's attribution runs inside traces instead (`grad_trace.py`, `Model.spliced_runs`).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping

import torch
from torch import Tensor, nn


def hooked_logits(
    hf: nn.Module,
    sites: list[tuple[str, str, Callable[[Tensor], Tensor]]],
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Logits [B, T, V] of `hf` on `input_ids` with each (module_path, io, edit) applied in place of that
    module's output (io 'output') or first input (io 'input'). Autograd follows the caller's grad mode."""
    handles = []
    try:
        for path, io, fn in sites:
            module = hf.get_submodule(path)
            if io == "output":
                handles.append(module.register_forward_hook(_output_hook(fn)))
            else:
                handles.append(module.register_forward_pre_hook(_input_hook(fn), with_kwargs=True))
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        return hf(input_ids=input_ids, **kwargs).logits
    finally:
        for h in handles:
            h.remove()


def _output_hook(fn: Callable[[Tensor], Tensor]):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return hook


def _input_hook(fn: Callable[[Tensor], Tensor]):
    def hook(module, args, kwargs):
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        key = next(iter(kwargs))  # hidden_states passed by keyword
        return args, {**kwargs, key: fn(kwargs[key])}

    return hook


@contextlib.contextmanager
def grad_mode(enabled: bool):
    """Autograd on (for attribution) or off, whatever the caller's mode (notebooks may sit in no_grad)."""
    with torch.inference_mode(False), torch.set_grad_enabled(enabled):
        yield


def sorted_sites(model, edits: Mapping[str, Callable[[Tensor], Tensor]]) -> list[tuple[str, str, Callable]]:
    """{hookpoint: edit} -> [(module_path, io, edit)] in execution order (unknown names raise HookPointError)."""
    hps = sorted(((model.resolve(h), fn) for h, fn in edits.items()), key=lambda p: p[0].order)
    return [(hp.module_path, hp.io, fn) for hp, fn in hps]
