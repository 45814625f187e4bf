"""`load_model`: a model name, a folder or an already-built transformers model -> a saekit `Model`,
local or remote (NDIF: a weightless copy here, every trace on the server)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError
from .default_model import DEFAULT_MODEL, ensure_default_model
from .model import Model
from .remote import check_remote


def load_model(
    name_or_path_or_module: str | os.PathLike | nn.Module = DEFAULT_MODEL,
    *,
    remote: bool | str = False,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    tokenizer: Any = None,
) -> Model:
    """Load a causal LM for saekit.

    - `"gemma-3-270m"` (the default): the built-in offline Gemma 3 270M.
    - a Hugging Face repo id (`"google/gemma-3-270m"`) or a local folder: loaded with transformers.
    - an already-built `transformers` model (pass `tokenizer=` unless it can be found from its config).

    `remote=True` builds a weightless model and runs every trace on NDIF (key from `NDIF_API_KEY` or
    `nnsight login`); a URL string runs on that server instead; `"local"` runs nnsight's in-process
    simulation of a remote run (serialise, deserialise with local modules hidden, execute here).
    Every saekit function then works unchanged. A missing key or an unreachable server raises here.
    """
    import transformers

    if isinstance(name_or_path_or_module, nn.Module):
        from nnsight import TransformersModel

        if remote:
            raise ModelLoadError("remote runs need a repo id or folder, not a built model: load_model('org/name', remote=True)")
        hf = name_or_path_or_module
        if tokenizer is None:
            src = getattr(hf.config, "_name_or_path", "") or getattr(hf, "name_or_path", "")
            if not src:
                raise ModelLoadError(
                    f"{type(hf).__name__} was built without a tokenizer source: pass tokenizer=... to load_model."
                )
            tokenizer = transformers.AutoTokenizer.from_pretrained(src)
        name = getattr(hf.config, "_name_or_path", "") or type(hf).__name__
        hf.eval()
        return Model(TransformersModel(hf, tokenizer=tokenizer), name=name, remote=False)

    if not isinstance(name_or_path_or_module, (str, os.PathLike)):
        raise ModelLoadError(
            f"load_model takes a model name, a folder or a transformers model, got {type(name_or_path_or_module).__name__}"
        )
    name = str(name_or_path_or_module)
    if remote:
        if name == DEFAULT_MODEL:
            raise ModelLoadError(
                f"{DEFAULT_MODEL!r} is saekit's offline copy; for NDIF pass the hub id the server hosts, e.g. 'google/gemma-3-270m'."
            )
        check_remote(remote)
        return Model(weightless(name, tokenizer, dtype), name=name, remote=remote)
    from nnsight import TransformersModel

    path = ensure_default_model() if name == DEFAULT_MODEL else name
    if not Path(path).exists() and "/" not in name:
        raise ModelLoadError(
            f"unknown model {name!r}: pass {DEFAULT_MODEL!r} (built in, offline), a local folder, "
            f"or a Hugging Face repo id such as 'google/gemma-3-270m'."
        )
    try:
        tok = tokenizer or transformers.AutoTokenizer.from_pretrained(str(path))
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except OSError as e:
        raise ModelLoadError(
            f"could not load {name!r}: {e}. Offline, use {DEFAULT_MODEL!r} or a local folder; "
            f"online, check the repo id."
        ) from e
    if device is not None:
        hf.to(device)
    hf.eval()
    return Model(TransformersModel(hf, tokenizer=tok), name=DEFAULT_MODEL if name == DEFAULT_MODEL else name)


def weightless(name: str, tokenizer: Any, dtype: torch.dtype) -> Any:
    """nnsight's meta-device model for a repo id or folder: the architecture without weights."""
    from nnsight import TransformersModel

    import transformers

    try:
        # passed in: nnsight's meta pipeline does not find the tokenizer of a text-generation task itself
        tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(name)
        nn_model = TransformersModel(name, task="text-generation", tokenizer=tokenizer, dtype=dtype)
    except OSError as e:
        raise ModelLoadError(f"could not read the config of {name!r}: {e}. Check the repo id (and the network).") from e
    if Path(name).is_dir():
        # a folder has no Hub identity to canonicalise: name the model by its path in the request key
        from nnsight.modeling import huggingface

        getattr(huggingface, "_ID_CACHE", {}).setdefault(name, name)
    return nn_model
