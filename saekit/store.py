"""Activation storage: an on-disk cache (safetensors shards + manifest with checksums) and an in-RAM
shuffle buffer for streaming. Harvest once, train many SAEs from the cache.

Layout of a cache folder:
    manifest.json            settings, hook points, widths, shards (rows, sha256), contexts done
    shard_00000.safetensors  one tensor per hook point [n, D], plus token_ids / context_index / position [n]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from . import durable
from .errors import CacheError

MANIFEST = "manifest.json"
META_KEYS = ("token_ids", "context_index", "position")
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ActivationCache:
    """Harvested activations: in RAM (`tensors`) or in a folder of shards (`path`)."""

    hookpoints: list[str]
    d: dict[str, int]
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    shards: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    _verified: set[int] = field(default_factory=set, repr=False, compare=False)
    """Shards whose checksum was checked since this object was made (each is hashed once, on first read)."""

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path | None, hookpoints: list[str], d: dict[str, int], info: dict[str, Any]) -> "ActivationCache":
        cache = cls(list(hookpoints), dict(d), Path(path) if path is not None else None, dict(info))
        if cache.path is not None:
            cache.path.mkdir(parents=True, exist_ok=True)
            durable.remove_stale_temporaries(cache.path)
            cache._write_manifest(contexts_done=0)
        return cache

    @classmethod
    def open(cls, path: str | Path) -> "ActivationCache":
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise CacheError(f"{path} is not an activation cache (no {MANIFEST}); create one with saekit.harvest(..., out=path)")
        try:
            m = json.loads((path / MANIFEST).read_text())
            if m.get("format") != FORMAT_VERSION:
                raise CacheError(f"{path}: cache format {m.get('format')!r} is not {FORMAT_VERSION}; harvest again")
            cache = cls(m["hookpoints"], m["d"], path, m["info"], m["shards"])
            durable.remove_stale_temporaries(path)  # half-written shards of a killed harvest
            return cache
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if isinstance(e, CacheError):
                raise
            raise CacheError(
                f"{path / MANIFEST} is damaged ({type(e).__name__}: {e}); delete the folder and harvest again"
            ) from None

    def append(self, acts: dict[str, Tensor], meta: dict[str, Tensor], contexts_done: int) -> None:
        """Add rows; on disk each call writes one finished shard and then the manifest."""
        n = next(iter(acts.values())).shape[0]
        if n == 0:
            return
        if self.path is None:
            for k, v in {**acts, **meta}.items():
                self.tensors[k] = torch.cat([self.tensors[k], v]) if k in self.tensors else v
            self.shards.append({"rows": n})
            self.info["contexts_done"] = contexts_done
            return
        name = f"shard_{len(self.shards):05d}.safetensors"
        first = int(self.info.get("contexts_done", 0))
        durable.save_tensors({**acts, **meta}, self.path / name)
        durable.crash_point("cache.before_manifest")  # the shard is in place, the manifest does not list it yet
        self._verified.add(len(self.shards))  # just written and hashed from the file itself
        self.shards.append({"file": name, "rows": n, "sha256": _sha256(self.path / name), "contexts": [first, contexts_done]})
        self._write_manifest(contexts_done)
        durable.crash_point("cache.after_shard")

    def replace_shard(self, i: int, acts: dict[str, Tensor], meta: dict[str, Tensor]) -> None:
        """Write shard `i` again (a damaged or missing shard harvested anew) with the same rows and contexts."""
        assert self.path is not None, "an in-memory cache has no shard files to replace"
        n = next(iter(acts.values())).shape[0]
        if n != self.shards[i]["rows"]:
            raise CacheError(
                f"shard {self.shards[i]['file']} held {self.shards[i]['rows']} rows but harvesting its contexts again "
                f"gave {n}: the model or corpus changed since; delete {self.path} and harvest again"
            )
        file = self.path / self.shards[i]["file"]
        durable.save_tensors({**acts, **meta}, file)
        self.shards[i] = {**self.shards[i], "sha256": _sha256(file)}
        self._verified.add(i)
        self._write_manifest(int(self.info.get("contexts_done", 0)))

    def _write_manifest(self, contexts_done: int) -> None:
        assert self.path is not None
        self.info["contexts_done"] = contexts_done
        durable.write_json(
            {"format": FORMAT_VERSION, "hookpoints": self.hookpoints, "d": self.d, "info": self.info, "shards": self.shards},
            self.path / MANIFEST,
        )

    # -- reading --------------------------------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        return sum(s["rows"] for s in self.shards)

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        where = str(self.path) if self.path else "in memory"
        return f"ActivationCache({self.hookpoints}, n_tokens={self.n_tokens}, {where})"

    def check_hookpoint(self, hookpoint: str | None = None) -> str:
        """The hook point to read: `hookpoint` when this cache holds it (or names a META_KEYS entry), the cache's
        only hook point when None; raises CacheError naming what the cache holds otherwise."""
        if hookpoint is None:
            if len(self.hookpoints) != 1:
                raise CacheError(f"this cache holds {self.hookpoints}: name the hook point to read")
            return self.hookpoints[0]
        if hookpoint not in self.hookpoints and hookpoint not in META_KEYS:
            raise CacheError(f"hook point {hookpoint!r} is not in this cache; it holds {self.hookpoints}")
        return hookpoint

    def shard(self, i: int, key: str) -> Tensor:
        if self.path is None:
            start = sum(s["rows"] for s in self.shards[:i])
            return self.tensors[key][start : start + self.shards[i]["rows"]]
        self._verify_shard(i)
        file = self.path / self.shards[i]["file"]
        try:
            with safe_open(str(file), framework="pt") as f:
                return f.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise CacheError(f"{file} is unreadable ({e}); {self._fix(i)}") from None

    def _fix(self, i: int) -> str:
        return (
            f"rerun the same saekit.harvest(..., out={str(self.path)!r}) (or the same `saekit harvest` / "
            f"`saekit train` command): it checks every shard and harvests only the damaged ones again"
        )

    def _verify_shard(self, i: int) -> None:
        """Check shard `i`'s checksum the first time it is read (a streaming hash, cheap next to training)."""
        if i in self._verified or self.path is None:
            return
        file = self.path / self.shards[i]["file"]
        if not file.exists():
            raise CacheError(f"{file} is missing; {self._fix(i)}")
        if _sha256(file) != self.shards[i]["sha256"]:
            raise CacheError(f"{file} is corrupt (its checksum differs from the manifest's); {self._fix(i)}")
        self._verified.add(i)

    def load(self, hookpoint: str | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """All rows of one hook point (or of 'token_ids' / 'context_index' / 'position') as one tensor."""
        key = self.check_hookpoint(hookpoint)
        if self.path is None:
            t = self.tensors[key]
        else:
            t = torch.cat([self.shard(i, key) for i in range(len(self.shards))]) if self.shards else torch.empty(0)
        return t.to(dtype) if dtype is not None else t

    def verify(self) -> None:
        """Recompute every shard's checksum now (even those already checked); raise CacheError on a mismatch."""
        self._verified.clear()
        for i in range(len(self.shards)):
            self._verify_shard(i)

    def bad_shards(self) -> list[int]:
        """Indices of shards that are missing or whose checksum differs from the manifest's."""
        bad = []
        for i in range(len(self.shards)):
            try:
                self._verified.discard(i)
                self._verify_shard(i)
            except CacheError:
                bad.append(i)
        return bad

    def batches(
        self,
        hookpoint: str | Sequence[str] | None = None,
        batch_size: int = 4096,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epochs: int | None = 1,
        drop_last: bool = True,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[Tensor] | Iterator[tuple[Tensor, ...]]:
        """Float batches [batch_size, D]; shuffled each epoch with a seeded permutation (None epochs: forever).

        A list of hook points, e.g. ['mlp_in.6', 'mlp_out.6'], yields tuples of batches whose rows are the
        same tokens (one permutation for all), which is what transcoders train on. `start_batch` skips that
        many batches first, which is how a resumed run continues where it stopped. With `world_size` > 1
        each batch is split into equal contiguous shards and only shard `rank` comes out
        ([batch_size // world_size, D]): data-parallel ranks read disjoint parts of the same global batch.
        """
        many = isinstance(hookpoint, (list, tuple))
        keys = [self.check_hookpoint(h) for h in hookpoint] if many else [self.check_hookpoint(hookpoint)]
        if not 0 <= rank < world_size or batch_size % world_size:
            raise CacheError(
                f"rank {rank} of world_size {world_size} with batch_size {batch_size}: the batch must split evenly "
                f"across ranks; choose a batch_size divisible by {world_size}"
            )
        arrays = [self.load(k) for k in keys]
        n = arrays[0].shape[0]
        local = batch_size // world_size
        lo = rank * local
        if n < batch_size and drop_last:
            raise CacheError(
                f"the cache holds {n} tokens, fewer than one batch of {batch_size}: harvest more tokens or lower batch_size"
            )
        per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        epoch = 0
        skip = start_batch
        while epochs is None or epoch < epochs:
            if skip >= per_epoch:
                skip -= per_epoch
                epoch += 1
                continue
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)) if shuffle else torch.arange(n)
            for b in range(skip, per_epoch):
                rows = order[b * batch_size : (b + 1) * batch_size][lo : lo + local]
                out = tuple(a[rows].float() for a in arrays)
                yield out if many else out[0]
            skip = 0
            epoch += 1


class ShuffleBuffer:
    """Mix streamed activation chunks in RAM and hand out shuffled batches.

    Fill to `capacity` rows, then each batch takes random rows and the next chunk refills them.
    Chunks may be tuples of tensors with the same rows (several hook points of the same tokens, e.g.
    a transcoder's input and target): every member gets the same shuffle and batches come out as tuples.
    The order depends only on the chunks and `seed`, so a rebuilt buffer replays the same batches.
    """

    def __init__(self, chunks: Iterable[Tensor], capacity: int = 262_144, batch_size: int = 4096, seed: int = 0) -> None:
        if capacity < batch_size:
            raise CacheError(f"ShuffleBuffer capacity {capacity} is smaller than batch_size {batch_size}: raise capacity")
        self.chunks = iter(chunks)
        self.capacity = capacity
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[Tensor] | Iterator[tuple[Tensor, ...]]:
        buf: tuple[Tensor, ...] | None = None
        many = False
        exhausted = False
        while True:
            while not exhausted and (buf is None or buf[0].shape[0] < self.capacity):
                chunk = next(self.chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                many = isinstance(chunk, (tuple, list))
                parts = tuple(chunk) if many else (chunk,)
                if len({p.shape[0] for p in parts}) != 1:
                    raise CacheError(f"a chunk's tensors must have the same rows, got shapes {[tuple(p.shape) for p in parts]}")
                buf = parts if buf is None else tuple(torch.cat([b, p]) for b, p in zip(buf, parts))
            if buf is None or buf[0].shape[0] < self.batch_size:
                return
            perm = torch.randperm(buf[0].shape[0], generator=self.gen)
            take = perm[: self.batch_size]
            out = tuple(b[take].float() for b in buf)
            yield out if many else out[0]
            buf = tuple(b[perm[self.batch_size :]] for b in buf)
