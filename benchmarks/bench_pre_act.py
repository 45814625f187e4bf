"""Dead latents against the pre-activation loss's coefficient on the default model: SAEs given as
ARCH:L0:COEFFICIENT train together in one pass over an existing activation cache (as bench_frontier trains
them), then held-out L0, FVU and the share of latents silent on every held-out token are measured on the
test split. Prints a table (BENCHMARKS.md, "Dead latents at 4096 latents", quotes it with its command).

    python benchmarks/bench_pre_act.py --train-cache /work/data/r6-train --test-cache /work/data/r6-test \\
        topk:16:0 topk:16:0.75 topk:16:3 gated:16:0 gated:16:3

COEFFICIENT is `SaeConfig.pre_act_coefficient` ("default" for the architecture's own).
"""

from __future__ import annotations

import argparse
import time

import torch

from saekit import ActivationCache, Sae, TrainConfig, Trainer
from saekit.metrics import fvu as fvu_of

from bench_frontier import ARCHS, sae_config


def parse(spec: str) -> tuple[str, int, float | None]:
    arch, l0, coef = spec.split(":")
    if arch not in ARCHS:
        raise SystemExit(f"{spec!r}: the architecture must be one of {', '.join(ARCHS)}")
    return arch, int(l0), None if coef == "default" else float(coef)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", help="ARCH:L0:COEFFICIENT, e.g. topk:16:0.75 or batchtopk:16:default")
    ap.add_argument("--train-cache", required=True)
    ap.add_argument("--test-cache", required=True)
    ap.add_argument("--hookpoint", default="resid_post.6")
    ap.add_argument("--n-latents", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--held-out", type=int, default=65_536, help="held-out activations for L0 and dead latents")
    ap.add_argument("--fvu-rows", type=int, default=16_384, help="held-out activations for FVU")
    args = ap.parse_args()

    runs = [parse(s) for s in args.specs]
    train = ActivationCache.open(args.train_cache)
    held = ActivationCache.open(args.test_cache).load(args.hookpoint).float()[: args.held_out]
    saes = []
    for i, (arch, l0, coef) in enumerate(runs):
        cfg = sae_config(arch, l0, held.shape[-1], args.n_latents, args.hookpoint, "gemma-3-270m")
        cfg.pre_act_coefficient = coef
        cfg.__post_init__()
        saes.append(Sae(cfg, seed=i))
    t0 = time.perf_counter()
    tr = Trainer(saes, TrainConfig(tokens=args.tokens, batch_size=args.batch_size, seed=0))
    tr.fit(train, args.hookpoint)
    tr.fold()
    print(f"trained {len(saes)} SAEs together in {time.perf_counter() - t0:.0f} s")
    print(f"| architecture | L0 asked | pre_act_coefficient | held-out L0 | FVU ({args.fvu_rows:,} rows) | dead on {len(held):,} held-out tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for (arch, l0, _), sae in zip(runs, tr.saes):
        sae.eval()
        with torch.no_grad():
            fired_F = torch.zeros(sae.n_latents, dtype=torch.bool)
            active = 0
            for s in range(0, held.shape[0], 4096):
                z_BF = sae.encode(held[s : s + 4096])
                fired_F |= (z_BF > 0).any(0)
                active += int((z_BF > 0).sum())
            x = held[: args.fvu_rows]
            fvu = float(fvu_of(x, sae.decode(sae.encode(x))))
        print(f"| {arch} | {l0} | {sae.pre_act_coefficient:g} | {active / held.shape[0]:.1f} | {fvu:.4f} | "
              f"{1 - float(fired_F.float().mean()):.1%} |", flush=True)


if __name__ == "__main__":
    main()
