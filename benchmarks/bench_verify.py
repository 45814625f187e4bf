"""What verifying a cache's checksums costs: the streaming SHA-256 of every shard on first read, against
reading the shards without it and against training on the same tokens (TopK, 4096 latents, k=32).

    python benchmarks/bench_verify.py [--tokens 262144] [--d 640]

Writes a cache of random activations (Gemma 3 270M's width by default) to a temporary folder, so no model
is needed; the hash cost depends only on the bytes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import saekit
from saekit.store import ActivationCache

from _report import write_section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=262_144)
    ap.add_argument("--d", type=int, default=640)
    ap.add_argument("--shard-tokens", type=int, default=65_536)
    ap.add_argument("--train-steps", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ActivationCache.create(Path(tmp) / "c", ["resid_post.6"], {"resid_post.6": args.d}, {"model": "random"})
        for lo in range(0, args.tokens, args.shard_tokens):
            n = min(args.shard_tokens, args.tokens - lo)
            meta = {"token_ids": torch.zeros(n, dtype=torch.int32), "context_index": torch.zeros(n, dtype=torch.int32),
                    "position": torch.zeros(n, dtype=torch.int16)}
            cache.append({"resid_post.6": torch.randn(n, args.d)}, meta, contexts_done=lo + n)
        size = sum((cache.path / s["file"]).stat().st_size for s in cache.shards)

        def timed_load(verify: bool) -> float:
            c = ActivationCache.open(cache.path)
            if not verify:
                c._verified.update(range(len(c.shards)))  # pretend every shard was checked already
            t = time.perf_counter()
            c.load()
            return time.perf_counter() - t

        rows = []
        for _ in range(3):  # alternate, report medians (the page cache is warm after the first write)
            rows.append((timed_load(False), timed_load(True)))
        plain = sorted(r[0] for r in rows)[1]
        verified = sorted(r[1] for r in rows)[1]
        hash_s = verified - plain

        data = ActivationCache.open(cache.path).load()
        batch = 4096
        steps = args.train_steps
        tcfg = saekit.TrainConfig(batch_size=batch, tokens=batch * steps, log_every=10**9)
        t = time.perf_counter()
        saekit.train(data[: batch * steps], cfg=tcfg, n_latents=4096, k=32, progress=False)
        train_tps = batch * steps / (time.perf_counter() - t)
    train_s = args.tokens / train_tps
    body = f"""
Verifying a cache costs one streaming SHA-256 per shard, on its first read in a process (and again on every
resume): {size / 2**20:.0f} MiB of shards ({args.tokens:,} tokens x {args.d} fp32) in {len(cache.shards)} shards.

| | seconds | MiB/s |
|---|---:|---:|
| `load()` without the hash | {plain:.2f} | {size / 2**20 / plain:.0f} |
| `load()` with the hash (first read) | {verified:.2f} | {size / 2**20 / verified:.0f} |
| the hash alone | {hash_s:.2f} | {size / 2**20 / max(hash_s, 1e-9):.0f} |
| training one epoch of these tokens (TopK 4096 latents, k=32, {train_tps:,.0f} tokens/s) | {train_s:.1f} | |

The hash adds **{100 * hash_s / train_s:.1f}%** to one epoch of training on the same tokens (medians of 3
alternating runs; the machine was shared with other jobs, so absolute times are noisy, and a
{steps}-step run includes the data-dependent initialisation). At the quiet-machine training speed in this
file's summary (15.7k tokens/s) the epoch takes {args.tokens / 15_700:.1f} s and the hash adds
{100 * hash_s / (args.tokens / 15_700):.0f}%, paid once per process: later epochs read verified shards.
"""
    print(body)
    write_section("Cache verification cost", body)


if __name__ == "__main__":
    main()
