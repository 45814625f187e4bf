"""Known-answer benchmark of every SAE architecture: synthetic activations from a dictionary 16x wider than
the space (`saekit.synthetic.SyntheticDictionary`: power-law frequencies, log-normal magnitudes, a large
common offset), each architecture asked for the same L0, scored on held-out samples: L0, FVU, dead
latents, and the fraction of true features some decoder row matches at cosine > 0.9. Writes the section
"Synthetic dictionary recovery" of BENCHMARKS.md.

    python benchmarks/bench_synthetic.py                          # 2048 latents, 1M tokens, L0 4
    python benchmarks/bench_synthetic.py --archs jumprelu relu --no-write
"""

from __future__ import annotations

import argparse
import time

import torch

from saekit import Sae, SaeConfig, TrainConfig, Trainer
from saekit.metrics import fvu as fvu_of
from saekit.synthetic import SyntheticDictionary, recovery

from _overrides import parse_overrides, with_overrides
from _report import write_section

ARCHS = ("topk", "batchtopk", "batchtopk-relative", "matryoshka", "matryoshka-relative", "jumprelu", "gated", "relu")
"""The family, with BatchTopK and Matryoshka also under `SaeConfig.relative_selection` ('-relative')."""


def config(arch: str, d: int, n_latents: int, target: float) -> SaeConfig:
    extra = {"relative_selection": True} if arch.endswith("-relative") else {}
    arch = arch.removesuffix("-relative")
    if arch == "matryoshka":
        extra["matryoshka_prefixes"] = (n_latents // 16, n_latents // 4)
    return SaeConfig(d_in=d, n_latents=n_latents, architecture=arch, target_l0=target, **extra)


def run(arch: str, data: SyntheticDictionary, x_train, x_held, args) -> dict:
    sae = Sae(with_overrides(config(arch, data.d, args.n_latents, args.target_l0), parse_overrides(args.set)), seed=0)
    t0 = time.perf_counter()
    tr = Trainer(sae, TrainConfig(tokens=args.tokens, batch_size=args.batch_size, seed=0, log_every=args.log_every))
    tr.fit(x_train, progress=False)
    tr.fold()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        z = sae.encode(x_held)
        frac, mean_cos = recovery(sae.W_dec, data.directions())
        row = {
            "arch": arch,
            "l0": float((z > 0).sum(-1).float().mean()),
            "fvu": float(fvu_of(x_held, sae.decode(z))),
            "dead": float(((z > 0).sum(0) == 0).float().mean()),
            "recovered": frac,
            "mean_cos": mean_cos,
            "seconds": seconds,
        }
    if args.trace:
        for h in tr.history:
            s = h["saes"][0]
            print(f"  {arch} step {h['step']}: fvu {s['fvu']:.3f} l0 {s['l0']:.1f} dead {s['dead_fraction']:.2f}"
                  + (f" log_coef {float(sae.log_coefficient):.2f}" if hasattr(sae, "log_coefficient") else ""))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--n-features", type=int, default=1024)
    ap.add_argument("--zipf-exponent", type=float, default=0.7)
    ap.add_argument("--zipf-offset", type=float, default=10.0)
    ap.add_argument("--n-latents", type=int, default=2048)
    ap.add_argument("--target-l0", type=float, default=4.0)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--held-out", type=int, default=16_384)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--trace", action="store_true", help="print the training curve of each run")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                    help="SaeConfig fields to override in every SAE of the run, e.g. topk_warmup=0 (values as JSON)")
    args = ap.parse_args()

    data = SyntheticDictionary(d=args.d, n_features=args.n_features, mean_active=args.target_l0,
                               zipf_exponent=args.zipf_exponent, zipf_offset=args.zipf_offset)
    t0 = time.perf_counter()
    x_train = data.sample(args.tokens, seed=0)
    x_held = data.sample(args.held_out, seed=1)
    t_data = time.perf_counter() - t0
    rows = []
    for arch in args.archs:
        rows.append(run(arch, data, x_train, x_held, args))
        r = rows[-1]
        print(f"{arch}: L0 {r['l0']:.2f}, FVU {r['fvu']:.3f}, dead {r['dead']:.1%}, recovered {r['recovered']:.1%} "
              f"(mean best cos {r['mean_cos']:.3f}), {r['seconds']:.0f} s", flush=True)
    table = ["| architecture | asked for | held-out L0 | held-out FVU | dead on held-out | true features recovered (cos > 0.9) | mean best cos | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {r['arch']} | target_l0={args.target_l0:g} | {r['l0']:.2f} | {r['fvu']:.3f} | {r['dead']:.1%} | "
              f"{r['recovered']:.1%} | {r['mean_cos']:.3f} | {r['seconds']:.0f} |" for r in rows]
    print("\n".join(table))
    if args.no_write:
        return
    body = (
        f"Data: `SyntheticDictionary(d={args.d}, n_features={args.n_features}, mean_active={args.target_l0:g})`: "
        f"{args.n_features} unit directions in {args.d} dimensions ({args.n_features // args.d}x wider than the space), "
        f"feature i on with probability proportional to (i + 10)^-{args.zipf_exponent:g} (a power law), log-normal "
        f"magnitudes per feature (sigma 0.15) and per occurrence (sigma 0.4), a common offset 4x the typical deviation "
        f"and 1% noise. {args.tokens:,} training samples (drawn in {t_data:.0f} s), {args.held_out:,} held-out. Each "
        f"SAE: {args.n_latents} latents, `target_l0={args.target_l0:g}` (TopK-style: k), default SaeConfig and "
        f"TrainConfig (batch {args.batch_size}). Every metric on the held-out samples; recovered = share of true "
        f"directions matched by some decoder row at cosine > 0.9.\n\n" + "\n".join(table)
        + "\n\nTarget (L0 within 10% of the target and >= 90% of true features recovered): "
        + "; ".join(f"{r['arch']} {'met' if abs(r['l0'] - args.target_l0) <= 0.1 * args.target_l0 and r['recovered'] >= 0.9 else 'not met'}"
                    for r in rows) + "."
    )
    write_section("Synthetic dictionary recovery", body)


if __name__ == "__main__":
    main()
