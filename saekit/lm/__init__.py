"""The door to the language model: the only package that imports nnsight. Everything outside it sees
plain tensors and a `Model`.

    default_model.py  the built-in Gemma 3 270M: its GGUF package converted once into saekit's cache
    remote.py         NDIF plumbing: API key, host, fail-fast checks, the remote backend, its errors
    load.py           load_model: a name, a folder or a built transformers model -> Model
    model.py          Model: hook points, capture, runs with edits (plans asked of the edits), generate
    in_trace.py       the plain-torch code that runs inside a trace (shipped by value to NDIF), including
                      `encode_latents`, which evaluates every SAE architecture's plain-tensor encoder
    grad_trace.py     the plain torch circuit attribution runs inside a trace: SAEs spliced as nodes, the
                      metric, gradients and edge weights (`Model.spliced_runs`; remote attribution)
    grad_run.py       local forwards with autograd and torch-hook edits (`Model.grad_logits`)
"""

from __future__ import annotations

from .default_model import DEFAULT_MODEL, cache_dir, default_model_dir, ensure_default_model
from .in_trace import encode_latents
from .load import load_model
from .model import Edit, EditsLike, Model
from .remote import ndif_api_key, ndif_host

__all__ = [
    "DEFAULT_MODEL",
    "Edit",
    "EditsLike",
    "Model",
    "cache_dir",
    "default_model_dir",
    "encode_latents",
    "ensure_default_model",
    "load_model",
    "ndif_api_key",
    "ndif_host",
]
