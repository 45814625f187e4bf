"""Harvest: the activation stream (`saekit.stream`) written to an `ActivationCache`, shard by shard, so
a kill loses no finished work (and a rerun with the same settings resumes where it stopped). One forward
per batch, stopped after the deepest hook point; the separator and padding left out; finite values checked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import HarvestError
from .config import HarvestConfig
from .data import Document, TokenContexts, contexts, corpus
from .store import ActivationCache
from .stream import ActivationBatch, stream_activations
from .tokens import keep_mask

if TYPE_CHECKING:
    from .lm import Model

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def harvest(
    model: Model,
    texts: Iterable[Document] | Sequence[str] | str | TokenContexts | None = None,
    *,
    hookpoints: Sequence[str] | str | None = None,
    n_tokens: int = 100_000,
    out: str | Path | None = None,
    cfg: HarvestConfig | None = None,
    split: str = "train",
    shard_tokens: int = 65_536,
    progress: bool = True,
) -> ActivationCache:
    """Capture activations at `hookpoints` for about `n_tokens` kept tokens of `texts`.

    `texts` None is the built-in corpus (`split` 'train' or 'test'). With `out`, shards go to that
    folder as they finish and the returned cache reads from disk; rerunning with the same settings
    resumes an interrupted harvest. Without `out` everything stays in RAM.
    """
    if isinstance(hookpoints, str):
        hookpoints = [hookpoints]
    if cfg is None:
        cfg = HarvestConfig(hookpoints=tuple(hookpoints or (model.default_hookpoint(),)))
    elif hookpoints is not None:
        raise HarvestError("pass hook points either in hookpoints= or in cfg=, not both")
    for h in cfg.hookpoints:
        model.resolve(h)
    if n_tokens <= 0:
        raise HarvestError(f"n_tokens must be positive, got {n_tokens}")
    if isinstance(texts, TokenContexts):
        ctx = texts
    else:
        docs = corpus(split=split) if texts is None else texts
        # contexts counts text tokens (BOS excluded): exactly the positions harvest keeps
        ctx = contexts(model, docs, context_len=cfg.context_len, n_tokens=n_tokens)
    d = {h: model.d_model for h in cfg.hookpoints}
    info = {
        "model": model.name,
        # the setting, not the tensor's width: contexts trims users' short texts to their longest context,
        # and every harvested position lies below context_len either way
        "context_len": ctx.input_ids.shape[1] if isinstance(texts, TokenContexts) else cfg.context_len,
        "n_contexts": len(ctx),
        "drop_bos": cfg.drop_bos,
        "drop_pad": cfg.drop_pad,
        "dtype": cfg.dtype,
        "split": split if texts is None else "user",
        "requested_tokens": n_tokens,
    }
    cache, start = _open_or_create(out, list(cfg.hookpoints), d, info)
    if cache.shards and cache.path is not None:
        repair_shards(model, cache, ctx, cfg, progress=progress)  # a resume re-verifies what is already there
    if start >= len(ctx):
        return cache
    keep_NT = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id, cfg.drop_bos, cfg.drop_pad)
    bar = tqdm(total=int(keep_NT.sum()), initial=int(keep_NT[:start].sum()), desc="harvest", unit="tok", disable=not progress)
    pending: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []
    rows = 0
    kept = cache.n_tokens
    batches = stream_activations(
        model, ctx, cfg.hookpoints, batch_size=cfg.batch_size, start=start,
        drop_separator=cfg.drop_bos, drop_pad=cfg.drop_pad, dtype=_DTYPES[cfg.dtype],
    )
    for batch in batches:
        _check_finite(batch)
        bar.update(batch.n_tokens)
        take = min(batch.n_tokens, n_tokens - kept)
        acts = {k: v[:take] for k, v in batch.acts.items()}
        meta = {
            "token_ids": batch.token_ids[:take].to(torch.int32),
            "context_index": batch.context_index[:take].to(torch.int32),
            "position": batch.position[:take].to(torch.int16),
        }
        pending.append((acts, meta))
        rows += take
        kept += take
        if rows >= shard_tokens or kept >= n_tokens:
            cache.append(*_concat(pending), contexts_done=batch.end)
            pending, rows = [], 0
        if kept >= n_tokens:
            break
    bar.close()
    if pending:
        cache.append(*_concat(pending), contexts_done=len(ctx))
    return cache


def repair_shards(
    model: Model, cache: ActivationCache, ctx: TokenContexts, cfg: HarvestConfig, *, progress: bool = True
) -> list[int]:
    """Check every shard of the on-disk `cache` against its checksum and harvest the damaged or missing ones
    again from their contexts (`ctx` must be the contexts the cache was harvested from). Returns their indices.

    The other shards are left as they are: a flipped bit costs one shard's forwards, not the whole harvest.
    """
    bad = cache.bad_shards()
    for i in tqdm(bad, desc="re-harvest damaged shards", disable=not progress or not bad):
        record = cache.shards[i]
        if "contexts" not in record:
            raise HarvestError(
                f"{cache.path}: shard {record['file']} is damaged and was written without its context range "
                f"(an older saekit): delete {cache.path} and harvest again"
            )
        lo, hi = record["contexts"]
        part = (ctx.input_ids[lo:hi], ctx.attention_mask[lo:hi])  # [hi - lo, T]: the shard's own contexts
        pending = []
        for batch in stream_activations(
            model, part, cfg.hookpoints, batch_size=cfg.batch_size,
            drop_separator=cfg.drop_bos, drop_pad=cfg.drop_pad, dtype=_DTYPES[cfg.dtype],
        ):
            _check_finite(batch)
            meta = {
                "token_ids": batch.token_ids.to(torch.int32),
                "context_index": (batch.context_index + lo).to(torch.int32),
                "position": batch.position.to(torch.int16),
            }
            pending.append((batch.acts, meta))
        if not pending:
            raise HarvestError(f"{cache.path}: contexts {lo}..{hi} of shard {record['file']} hold no kept tokens now")
        acts, meta = _concat(pending)
        n = record["rows"]  # the last shard stops at the requested token count
        cache.replace_shard(i, {k: v[:n] for k, v in acts.items()}, {k: v[:n] for k, v in meta.items()})
    return bad


def _check_finite(batch: ActivationBatch) -> None:
    for h, rows_nD in batch.acts.items():
        if not torch.isfinite(rows_nD).all():
            bad = int((~torch.isfinite(rows_nD)).any(-1).sum())
            c = batch.context
            raise HarvestError(
                f"{bad} activation vectors at {h!r} are NaN or inf (contexts {int(c[0])}..{int(c[-1])}); "
                f"the model overflowed: load it in float32 (load_model(..., dtype=torch.float32)) or harvest in float32."
            )


def _concat(pending):
    acts = {k: torch.cat([p[0][k] for p in pending]) for k in pending[0][0]}
    meta = {k: torch.cat([p[1][k] for p in pending]) for k in pending[0][1]}
    return acts, meta


def _open_or_create(out, hookpoints, d, info) -> tuple[ActivationCache, int]:
    if out is not None and (Path(out) / "manifest.json").exists():
        old = ActivationCache.open(out)
        same = old.hookpoints == hookpoints and all(
            old.info.get(k) == info[k] for k in ("model", "context_len", "n_contexts", "drop_bos", "drop_pad", "dtype", "split")
        )
        if same and old.info.get("requested_tokens") == info["requested_tokens"]:
            return old, int(old.info.get("contexts_done", 0))
        raise HarvestError(
            f"{out} already holds a harvest with other settings ({old.info}); choose another out= folder or delete it"
        )
    return ActivationCache.create(out, hookpoints, d, info), 0
