"""What the evaluations read from the model: hook-point activations and SAE latents of short texts or
token windows, pooled per text or kept per position (plain tensors; the model is run through `stream`)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import EvalError
from ..lm import Model
from ..stream import stream_activations


def hookpoint_of(sae) -> str:
    hp = sae.cfg.hookpoint
    if hp is None:
        raise EvalError("the SAE has no cfg.hookpoint: set sae.cfg.hookpoint to the hook point it was trained on")
    return hp


def id_batch(model: Model, rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Input ids and attention mask [N, T]: the separator, then each row's ids, padded on the right."""
    T = max(len(r) for r in rows) + 1
    ids = torch.full((len(rows), T), model.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r) + 1] = torch.tensor([model.separator_id, *r], dtype=torch.long)
        mask[i, : len(r) + 1] = 1
    return ids, mask


@torch.no_grad()
def pooled(model: Model, sae, texts: Sequence[str], *, max_tokens: int = 64, batch_size: int = 16,
           last: bool = False) -> tuple[Tensor, Tensor]:
    """(activations [N, D], latents [N, F]) per text: the mean over its tokens (or its last token with
    `last`), separator and padding left out."""
    hp = hookpoint_of(sae)
    rows = [model.tokenizer(t, add_special_tokens=False)["input_ids"][: max_tokens - 1] for t in texts]
    if any(len(r) == 0 for r in rows):
        raise EvalError("a text has no tokens: drop empty texts")
    ids, mask = id_batch(model, rows)
    acts, lats = [], []
    for batch in stream_activations(model, (ids, mask), [hp], batch_size=batch_size):
        x_nD = batch.acts[hp]
        z_nF = sae.encode(x_nD.to(sae.device)).float().cpu()
        counts = batch.keep.sum(1).tolist()
        for x, z in zip(x_nD.split(counts), z_nF.split(counts)):
            acts.append(x[-1] if last else x.mean(0))
            lats.append(z[-1] if last else z.mean(0))
    return torch.stack(acts), torch.stack(lats)


@torch.no_grad()
def window_latents(model: Model, sae, rows: Sequence[Sequence[int]], features: Sequence[int], *,
                   batch_size: int = 32) -> list[Tensor]:
    """The `features`' latents [len(row), len(features)] on each token-id row (read after the separator)."""
    hp = hookpoint_of(sae)
    ids, mask = id_batch(model, rows)
    idx = torch.as_tensor(list(features), dtype=torch.long)
    out = []
    for batch in stream_activations(model, (ids, mask), [hp], batch_size=batch_size):
        z_nF = sae.encode(batch.acts[hp].to(sae.device)).float().cpu()[:, idx.to("cpu")]
        out.extend(z_nF.split(batch.keep.sum(1).tolist()))
    return out
