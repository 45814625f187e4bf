"""The one activation stream: token contexts -> the model's activations at hook points, batch by batch,
the context separator and padding left out (the one keep rule, `saekit.tokens.keep_mask`).

Every consumer reads activations through it: `harvest` (into an `ActivationCache`), `feature_stats`,
`evaluate` and the feature search. Each `ActivationBatch` holds the kept rows [n, D] of every hook point
in (context, position) order, with the batch's token ids and attention mask [B, T], its keep mask, and
each context's index, so a consumer can ask for the rows' token ids, context indices and positions, put
rows back on the [B, T] grid, or run the model again on the same batch (evaluate's losses).

`stream_activations` runs the model through the door's public API (`Model.capture`: one forward per
batch that stops after the deepest hook point, locally or on NDIF); `cached_activations` replays a
harvest's rows as the same batches, without a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch import Tensor

from .data import TokenContexts
from .errors import CacheError, ConfigError
from .tokens import keep_mask

if TYPE_CHECKING:
    from .lm import Model
    from .store import ActivationCache


@dataclass
class ActivationBatch:
    """One batch of the stream: kept rows per hook point, and where each row stands in its context."""

    acts: dict[str, Tensor]
    """{hook point: [n, D]}: the activations at kept positions, in (context, position) order."""
    input_ids: Tensor
    """[B, T] token ids of the batch's contexts (-1 where a replayed harvest kept no token)."""
    attention_mask: Tensor
    """[B, T] 1 for real tokens (the separator included), 0 for padding."""
    keep: Tensor
    """[B, T] bool: the positions the rows come from."""
    context: Tensor
    """[B] index of each context in the stream's source."""

    @property
    def n_tokens(self) -> int:
        """Kept rows in this batch (n)."""
        return int(self.keep.sum())

    @property
    def end(self) -> int:
        """Index after the batch's last context: where a resumed stream starts (`start=`)."""
        return int(self.context[-1]) + 1

    @property
    def token_ids(self) -> Tensor:
        """[n] token id of each row."""
        return self.input_ids[self.keep]

    @property
    def context_index(self) -> Tensor:
        """[n] context index of each row."""
        return self.context[:, None].expand_as(self.keep)[self.keep]

    @property
    def position(self) -> Tensor:
        """[n] position of each row in its context."""
        return torch.arange(self.keep.shape[1]).expand_as(self.keep)[self.keep]

    def grid(self, rows_nX: Tensor) -> Tensor:
        """Rows [n, X] (activations, or anything computed from them) put back on the grid [B, T, X],
        zeros at the positions left out."""
        B, T = self.keep.shape
        out_BTX = rows_nX.new_zeros(B, T, *rows_nX.shape[1:])
        out_BTX[self.keep.to(rows_nX.device)] = rows_nX
        return out_BTX


def stream_activations(
    model: Model,
    contexts: TokenContexts | tuple[Tensor, Tensor],
    hookpoints: Sequence[str],
    *,
    batch_size: int,
    start: int = 0,
    drop_separator: bool = True,
    drop_pad: bool = True,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device | None = "cpu",
) -> Iterator[ActivationBatch]:
    """Activations at `hookpoints` of `contexts` (TokenContexts, or [N, T] input ids and attention mask),
    `batch_size` contexts per forward, from context `start` on.

    Rows go to `device` as `dtype` (None leaves either as the model returned it). Unknown hook points
    raise before any forward runs.
    """
    hookpoints = list(hookpoints)
    for h in hookpoints:
        model.resolve(h)
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    input_ids, attention_mask = contexts[0], contexts[1]
    sep = model.separator_id if drop_separator else None
    keep_NT = keep_mask(input_ids, attention_mask, sep, drop_separator, drop_pad)
    for s in range(start, input_ids.shape[0], batch_size):
        ids_BT = input_ids[s : s + batch_size]
        mask_BT = attention_mask[s : s + batch_size]
        keep_BT = keep_NT[s : s + batch_size]
        captured = model.capture(ids_BT.to(model.device), hookpoints, attention_mask=mask_BT.to(model.device))
        acts = {}
        for h in hookpoints:
            a_BTD = captured[h]
            acts[h] = a_BTD[keep_BT.to(a_BTD.device)].to(device=device, dtype=dtype)  # [n, D]
        yield ActivationBatch(acts, ids_BT, mask_BT, keep_BT, torch.arange(s, s + len(ids_BT)))


def cached_activations(cache: ActivationCache, hookpoints: Sequence[str], *, batch_size: int) -> Iterator[ActivationBatch]:
    """A harvest's rows replayed as the stream's batches of `batch_size` contexts (no model runs).

    Only kept tokens were harvested: `input_ids` is -1 and `attention_mask` 0 elsewhere.
    """
    T = int(cache.info.get("context_len") or 0)
    if not T:
        raise CacheError("this activation cache does not record context_len; harvest it again with saekit.harvest")
    hookpoints = list(hookpoints)
    acts_all = {h: cache.load(h) for h in hookpoints}
    tok = cache.load("token_ids").long()
    cidx = cache.load("context_index").long()
    pos = cache.load("position").long()
    uniq = torch.unique(cidx)
    for s in range(0, len(uniq), batch_size):
        chunk = uniq[s : s + batch_size]
        rows = ((cidx >= chunk[0]) & (cidx <= chunk[-1])).nonzero().squeeze(-1)
        b = torch.searchsorted(chunk, cidx[rows])
        rows = rows[torch.argsort(b * T + pos[rows])]  # (context, position) order, as the grid reads it
        b, p = torch.searchsorted(chunk, cidx[rows]), pos[rows]
        ids = torch.full((len(chunk), T), -1, dtype=torch.long)
        keep = torch.zeros(len(chunk), T, dtype=torch.bool)
        ids[b, p] = tok[rows]
        keep[b, p] = True
        yield ActivationBatch({h: a[rows] for h, a in acts_all.items()}, ids, keep.long(), keep, chunk)


__all__ = ["ActivationBatch", "cached_activations", "stream_activations"]
