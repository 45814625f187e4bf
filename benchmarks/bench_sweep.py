"""Sweep benchmark: harvest resid_post.6 of the default model, train a width x token-budget grid of TopK SAEs in
one pass (`saekit.sweep.run_sweep`), fit L(N, D) with bootstrap intervals, time each stage.

    PYTHONPATH=$PWD python benchmarks/bench_sweep.py [--harvest-tokens 60000] [--out /tmp/bench_sweep]

Larger budgets: the same through the command line, e.g. on a GPU
    saekit sweep --widths 1024 4096 16384 --ks 32 --tokens 1000000 4000000 16000000 --harvest-tokens 4000000
"""

from __future__ import annotations

import argparse
import time

import saekit
from saekit.config import SweepConfig, TrainConfig
from saekit.sweep import bootstrap, fit_power_law, run_sweep


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--harvest-tokens", type=int, default=60_000)
    p.add_argument("--out", default="/tmp/bench_sweep")
    p.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--tokens", type=int, nargs="+", default=[30_720, 61_440, 122_880, 245_760])
    a = p.parse_args()
    t0 = time.time()
    model = saekit.load_model()
    t = time.time()
    cache = saekit.harvest(model, hookpoints="resid_post.6", n_tokens=a.harvest_tokens, out=f"{a.out}/cache", progress=False)
    held = saekit.harvest(model, hookpoints="resid_post.6", n_tokens=4096, split="test", out=f"{a.out}/held", progress=False)
    t_harvest = time.time() - t
    cfg = SweepConfig(widths=tuple(a.widths), ks=(16,), tokens=tuple(a.tokens), eval_tokens=4096)
    t = time.time()
    res = run_sweep(cache, held, cfg, out=f"{a.out}/sweep", train_cfg=TrainConfig(batch_size=2048), progress=False)
    t_sweep = time.time() - t
    print(res.table.drop(columns=["path", "pass", "ce_loss_recovered"]).to_string(index=False))
    t = time.time()
    fit = bootstrap(fit_power_law(res.table.n_latents, res.table.fvu, tokens=res.table.tokens), n=100)
    print(fit)
    print(f"optimal width at {max(a.tokens):,} tokens: {fit.optimal_width(max(a.tokens)):,.0f}")
    print(f"harvest {t_harvest:.0f} s ({cache.n_tokens + held.n_tokens} tokens), sweep {t_sweep:.0f} s "
          f"({len(a.widths)} SAEs x {max(a.tokens):,} tokens in one pass), fit+bootstrap {time.time() - t:.1f} s, "
          f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
