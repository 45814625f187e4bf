"""Overhead of watching training: the same run with no callback, with the TrainingMonitor (updates every
0.5 s, the default) and with the monitor updating at every log entry (every_s=0, the worst case).

Trains a TopK SAE on random activations from an in-memory cache that carries token positions, so the
monitor's newly-alive lookup runs too. Runs are interleaved (plain, monitor, every-entry monitor, repeat)
and each configuration's median wall time is reported. Outside a kernel no comm exists, so this times
what the training process pays (packing arrays, trait updates, newly alive lookups), not the browser.

    python benchmarks/bench_monitor.py [--d 256] [--latents 4096] [--k 32] [--batch 1024] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import saekit
from saekit import ActivationCache, TrainConfig
from saekit.widgets import TrainingMonitor


def make_cache(n: int, d: int) -> ActivationCache:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) / d**0.5
    ctx_len = 128
    tensors = {
        "x": x,
        "token_ids": torch.randint(0, 1000, (n,), generator=g),
        "context_index": torch.arange(n) // ctx_len,
        "position": torch.arange(n) % ctx_len + 1,
    }
    return ActivationCache(["x"], {"x": d}, tensors=tensors, shards=[{"rows": n}])


def run(cache, args, monitor) -> tuple[float, float, float]:
    """(wall s, process CPU s, CPU s spent inside the monitor's callbacks) of one training run."""
    cfg = TrainConfig(tokens=args.steps * args.batch, batch_size=args.batch, log_every=args.log_every, seed=0)
    t, c = time.perf_counter(), time.process_time()
    saekit.train(cache, n_latents=args.latents, k=args.k, cfg=cfg, progress=False, monitor=monitor)
    return time.perf_counter() - t, time.process_time() - c, getattr(monitor, "spent", 0.0)


class TimedMonitor(TrainingMonitor):
    """The TrainingMonitor, with the CPU time of its callbacks added up in `spent`."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.spent = 0.0
        self._shown = True  # nothing to display into outside a kernel; everything else runs as in a notebook

    def _timed(self, fn, *a):
        t = time.process_time()
        try:
            return fn(*a)
        finally:
            self.spent += time.process_time() - t

    def on_start(self, trainer, data):
        return self._timed(super().on_start, trainer, data)

    def on_log(self, entry, arrays):
        return self._timed(super().on_log, entry, arrays)

    def on_end(self, trainer, info):
        return self._timed(super().on_end, trainer, info)


def quiet_monitor(every_s: float) -> TrainingMonitor:
    return TimedMonitor(every_s=every_s, display=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--latents", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = p.parse_args()
    cache = make_cache(max(args.batch * 20, 32_768), args.d)
    run(cache, argparse.Namespace(**{**vars(args), "steps": 5}), None)  # warm-up
    names = ["no callback", "TrainingMonitor (every_s=0.5)", "TrainingMonitor (every_s=0)"]
    runs: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    for _ in range(args.repeats):
        runs[names[0]].append(run(cache, args, None))
        runs[names[1]].append(run(cache, args, quiet_monitor(0.5)))
        runs[names[2]].append(run(cache, args, quiet_monitor(0.0)))
    base_wall = statistics.median(r[0] for r in runs[names[0]])
    base_cpu = statistics.median(r[1] for r in runs[names[0]])
    lines = [
        f"TopK SAE d={args.d}, {args.latents} latents, k={args.k}, batch {args.batch}, {args.steps} steps, log_every "
        f"{args.log_every} ({args.steps // args.log_every} entries); median of {args.repeats} interleaved runs. "
        f"'in callbacks' is the CPU time spent inside the monitor's on_start/on_log/on_end as a share of the run's "
        f"process CPU time: the overhead itself, measured inside each run, so it does not depend on other jobs.",
        "",
        "| run | wall s (median) | wall runs | process CPU s (median) | CPU vs no callback | in callbacks (median share) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        rs = runs[name]
        wall, cpu = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
        share = statistics.median(r[2] / r[1] for r in rs)
        lines.append(
            f"| {name} | {wall:.2f} | {', '.join(f'{r[0]:.1f}' for r in rs)} | {cpu:.2f} | {100 * (cpu / base_cpu - 1):+.1f}% | "
            f"{100 * share:.2f}% |"
        )
    del base_wall
    body = "\n".join(lines)
    print(body)
    if args.write:
        from _report import write_section

        write_section("TrainingMonitor overhead", body + "\n\n" + NOTE)


NOTE = """(Interpretation written by hand below the table; see BENCHMARKS.md.)"""


if __name__ == "__main__":
    main()
