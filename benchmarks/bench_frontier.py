"""The L0-vs-FVU (and CE-loss recovered) frontier of the whole SAE family on the default model at one hook
point and one token budget: every architecture is asked for the same L0 (k for TopK-style codes,
`target_l0` for the penalty architectures), all SAEs train in a single pass over the same batches (one
Trainer), then L0, FVU and the dead fraction are measured on held-out activations and CE-loss recovered
with `saekit.evaluate` on held-out text. Writes the section "SAE family frontier" of BENCHMARKS.md and the
plot benchmarks/frontier.png.

    python benchmarks/bench_frontier.py                                   # harvests ~64k tokens, 1024 latents
    python benchmarks/bench_frontier.py --train-cache DIR --test-cache DIR --n-latents 4096 --l0 32 --tokens 330000
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

import saekit
from saekit import ActivationCache, Sae, SaeConfig, TrainConfig, Trainer
from saekit.metrics import fvu as fvu_of, l0 as l0_of

from _overrides import parse_overrides, with_overrides
from _report import write_section

HERE = Path(__file__).resolve().parent
ARCHS = ("topk", "batchtopk", "batchtopk-relative", "matryoshka", "matryoshka-relative", "jumprelu", "gated", "relu")
"""The family, with BatchTopK and Matryoshka also under `SaeConfig.relative_selection` ('-relative')."""
K_FIELD = {"topk": "k", "batchtopk": "k", "matryoshka": "k", "batchtopk-relative": "k", "matryoshka-relative": "k"}
"""TopK-style codes are asked for their L0 through k; the others through target_l0 (the controller)."""


def sae_config(arch: str, l0: int, d_in: int, n_latents: int, hookpoint: str, model_name: str) -> SaeConfig:
    kw = {"k": l0} if arch in K_FIELD else {"k": l0, "target_l0": float(l0)}
    if arch.endswith("-relative"):
        arch, kw["relative_selection"] = arch.removesuffix("-relative"), True
    if arch == "matryoshka":
        kw["matryoshka_prefixes"] = (n_latents // 16, n_latents // 4)
    return SaeConfig(d_in=d_in, n_latents=n_latents, architecture=arch, hookpoint=hookpoint, model_name=model_name, **kw)


def held_out(args, model) -> tuple[ActivationCache, torch.Tensor]:
    """(training cache, held-out activations [N, D]) from the given caches or a fresh harvest."""
    if args.train_cache:
        train = ActivationCache.open(args.train_cache)
        test = ActivationCache.open(args.test_cache) if args.test_cache else None
        held = test.load(args.hookpoint).float()[: args.held_out] if test else None
        if held is None:
            raise SystemExit("--train-cache needs --test-cache (held-out activations of the test split)")
        return train, held
    n = args.tokens + args.held_out
    cache = saekit.harvest(model, hookpoints=[args.hookpoint], n_tokens=n, out=Path(args.cache) / f"{args.hookpoint}-{n}")
    acts = cache.load(args.hookpoint).float()
    train = ActivationCache([args.hookpoint], {args.hookpoint: acts.shape[-1]}, tensors={args.hookpoint: acts[: args.tokens]},
                            shards=[{"rows": args.tokens}])
    return train, acts[args.tokens :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hookpoint", default="resid_post.6")
    ap.add_argument("--tokens", type=int, default=65_536, help="training tokens (passes over the cache as needed)")
    ap.add_argument("--held-out", type=int, default=8_192, help="held-out activations for L0, FVU and dead latents")
    ap.add_argument("--ce-tokens", type=int, default=1_024, help="test-split tokens for CE-loss recovered (0: skip)")
    ap.add_argument("--n-latents", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--l0", type=int, nargs="+", default=[16, 32, 64], help="the L0 every architecture is asked for")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--train-cache", help="an existing activation cache to train on (saekit harvest --out)")
    ap.add_argument("--test-cache", help="an existing test-split cache for the held-out activations")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "saekit-bench-frontier"), help="harvest folder when no caches are given")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md and the plot alone")
    ap.add_argument("--tag", default="", help="a second frontier beside the first: files frontier-<tag slug>.json/.png, "
                    "section 'SAE family frontier (TAG)'")
    ap.add_argument("--save", help="a folder to save every trained SAE in (<arch>-<L0>), for measuring them again later")
    ap.add_argument("--merge", action="store_true", help="keep the rows of earlier runs in the tagged json (other L0 values "
                    "or architectures, run separately) and write the section and plot from all of them")
    ap.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                    help="SaeConfig fields to override in every SAE of the run, e.g. topk_warmup=0.8 (values as JSON)")
    args = ap.parse_args()
    overrides = parse_overrides(args.set)

    t0 = time.perf_counter()
    model = saekit.load_model()
    train, held = held_out(args, model)
    t_harvest = time.perf_counter() - t0

    runs = [(arch, l0) for arch in args.archs for l0 in args.l0]
    cfgs = [with_overrides(sae_config(a, l0, held.shape[-1], args.n_latents, args.hookpoint, model.name), overrides)
            for a, l0 in runs]
    t1 = time.perf_counter()
    tr = Trainer([Sae(c, seed=i) for i, c in enumerate(cfgs)], TrainConfig(tokens=args.tokens, batch_size=args.batch_size, seed=0))
    tr.fit(train, args.hookpoint)
    tr.fold()
    t_train = time.perf_counter() - t1

    ces = [float("nan")] * len(runs)
    if args.ce_tokens:  # every SAE on the same held-out tokens, sharing the clean and zero-ablated runs
        for sae in tr.saes:
            sae.eval()
        ces = [r.ce_loss_recovered for r in saekit.evaluate_many(model, tr.saes, n_tokens=args.ce_tokens, progress=False)]
    rows = []
    for (arch, asked), sae, ce in zip(runs, tr.saes, ces):
        sae.eval()
        if args.save:
            sae.save(Path(args.save) / f"{arch}-{asked}")
        with torch.no_grad():
            latents = sae.encode(held)
            row = {"arch": arch, "asked": asked, "l0": l0_of(latents), "fvu": float(fvu_of(held, sae.decode(latents))),
                   "dead": float(((latents > 0).sum(0) == 0).float().mean()), "ce": ce}
        rows.append(row)
        print(f"{arch} L0 {asked}: held-out L0 {row['l0']:.1f}, FVU {row['fvu']:.3f}, dead {row['dead']:.1%}, "
              f"CE recovered {row['ce']:.3f}", flush=True)
    table = ["| architecture | asked for L0 | held-out L0 | held-out FVU | CE-loss recovered | dead on held-out |",
             "|---|---:|---:|---:|---:|---:|"]
    table += [f"| {r['arch']} | {r['asked']} | {r['l0']:.1f} | {r['fvu']:.3f} | {r['ce']:.3f} | {r['dead']:.1%} |" for r in rows]
    print("\n".join(table))
    if args.no_write:
        return
    stem = "frontier-" + re.sub(r"[^a-z0-9]+", "-", args.tag.lower()).strip("-") if args.tag else "frontier"
    commands = ["python benchmarks/bench_frontier.py " + shlex.join(sys.argv[1:])]
    if args.merge and (HERE / f"{stem}.json").exists():
        earlier = json.loads((HERE / f"{stem}.json").read_text())
        new_keys = {(r["arch"], r["asked"]) for r in rows}
        rows = [r for r in earlier["rows"] if (r["arch"], r["asked"]) not in new_keys] + rows
        rows.sort(key=lambda r: (ARCHS.index(r["arch"]), r["asked"]))
        commands = earlier["settings"].get("commands", [earlier["settings"]["command"]]) + commands
        table = table[:2] + [f"| {r['arch']} | {r['asked']} | {r['l0']:.1f} | {r['fvu']:.3f} | {r['ce']:.3f} | {r['dead']:.1%} |" for r in rows]
    plot(rows, HERE / f"{stem}.png", args)
    write_json(rows, HERE / f"{stem}.json", args, train.n_tokens, len(held), model.name, commands)
    runs_note = "" if len(commands) == 1 else (
        f" The rows come from {len(commands)} runs of this script with the same settings (one per set of L0 values or architectures; "
        f"`benchmarks/{stem}.json` lists the commands); the timings are the last run's."
    )
    body = (
        f"{len(runs)} SAEs ({args.n_latents} latents, d_in {held.shape[-1]}) trained together in one pass of "
        f"{args.tokens:,} training tokens over a cache of {train.n_tokens:,} `{args.hookpoint}` activations "
        f"({model.name}), batch {args.batch_size}, default SaeConfig/TrainConfig; every architecture asked for the same "
        f"L0 (k, or target_l0 for JumpReLU/Gated/ReLU). L0, FVU and dead latents on {len(held):,} held-out activations "
        f"(test split); CE-loss recovered by `saekit.evaluate` on {args.ce_tokens:,} test-split tokens. Harvest/load "
        f"{t_harvest:.0f} s, training all {len(runs)} together {t_train:.0f} s (shared 2-core machine). "
        f"Plot: `benchmarks/{stem}.png`.{runs_note}\n\n" + "\n".join(table)
    )
    write_section("SAE family frontier" + (f" ({args.tag})" if args.tag else ""), body)


def write_json(rows, out: Path, args, cache_tokens: int, n_held: int, model_name: str, commands: list[str]) -> None:
    """The measured rows and the settings that produced them (notebook 08 plots this file)."""
    meta = {"model": model_name, "hookpoint": args.hookpoint, "n_latents": args.n_latents, "tokens": args.tokens,
            "cache_tokens": cache_tokens, "held_out": n_held, "ce_tokens": args.ce_tokens, "batch_size": args.batch_size,
            "date": time.strftime("%Y-%m-%d"), "command": commands[-1], "commands": commands}
    out.write_text(json.dumps({"settings": meta, "rows": rows}, indent=1) + "\n")


def plot(rows, out: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arch in [a for a in ARCHS if any(r["arch"] == a for r in rows)]:  # every architecture in the (merged) rows
        pts = sorted((r["l0"], r["fvu"]) for r in rows if r["arch"] == arch)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=arch)
    ax.set_xscale("log")
    ax.set_xlabel("held-out L0 (active latents per token)")
    ax.set_ylabel("held-out FVU")
    ax.set_title(f"{args.hookpoint}, {args.n_latents} latents, {args.tokens:,} tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
