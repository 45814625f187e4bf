"""Special positions: the token that starts every context, and which positions carry real text.

One rule for every consumer (harvest, statistics, evaluation, search, edits): a context starts with the
tokenizer's BOS token, or its EOS token where there is no BOS (Qwen-style tokenizers); that separator and
padding are left out of activations and edits, wherever they stand. Plain torch, no model imports.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import CorpusError


def separator_id(tokenizer: Any) -> int:
    """The id that starts a context: BOS, else EOS; `tokenizer` may be a saekit `Model`."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    sep = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if sep is None:
        raise CorpusError(
            "the tokenizer has neither a BOS nor an EOS token to start contexts with: set tokenizer.bos_token "
            "(or eos_token) before loading the model"
        )
    return int(sep)


def keep_mask(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    separator_id: int | None,
    drop_separator: bool = True,
    drop_pad: bool = True,
) -> Tensor:
    """Bool [B, T]: positions that carry text (by default: not the context separator, not padding)."""
    keep = torch.ones_like(input_ids, dtype=torch.bool)
    if drop_pad and attention_mask is not None:
        keep &= attention_mask.bool()
    if drop_separator and separator_id is not None:
        keep &= input_ids != separator_id
    return keep
