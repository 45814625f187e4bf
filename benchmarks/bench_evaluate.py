"""`evaluate` on the default model with the shipped SAE: the fast path vs the readable reference path.

    python benchmarks/bench_evaluate.py [--tokens 4096] [--no-report]            # timing, interleaved
    python benchmarks/bench_evaluate.py --rss [--rounds 1] [--no-report]         # peak RSS, whole runs
    python benchmarks/bench_evaluate.py --many [SAE_DIR ...] [--tokens 1024]     # several SAEs: evaluate_many

Timing (default): one process walks the held-out batches once and runs each batch through both paths
(`EvalSums.of_batch`, the reference, with its own early-stopped capture; `EvalSums.of_runs`, the fast
path), alternating which goes first, so that both see the same machine load; wall and CPU seconds are
summed per path and both paths' metrics reduced from their own sums. `--many`: several SAEs (the folders
given, or every shipped Gemma 3 270M SAE) on the same batches, each batch through three paths in turn (the
reference for each SAE, the fast path for each SAE, and `EvalSums.of_runs_many` for all of them, as
`evaluate_many` runs it), with the largest difference of any metric between the paths. `--rss`: each path's whole
`evaluate` in a fresh process (alternating, R F R F ...), for its peak RSS and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def one(path: str, tokens: int, batch: int, what: str) -> dict:
    import torch

    import saekit
    from saekit.interventions import loss_change

    model = saekit.load_model()
    sae = saekit.load_pretrained("gemma-3-270m", "resid_post.6")
    ctx = saekit.contexts(model, saekit.corpus(split="test"), context_len=128, n_tokens=tokens)
    with torch.inference_mode():
        model.capture(ctx.input_ids[:1], ["resid_post.6"], ctx.attention_mask[:1])  # warm-up
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if what == "evaluate":
        r = saekit.evaluate(model, sae, ctx, batch_size=batch, progress=False, reference=path == "reference").to_dict()
    else:
        lc = loss_change(model, ctx, saekit.interventions.Splice(sae, error_term=False), batch_size=batch, reference=path == "reference")
        r = {"n_tokens": lc.n_tokens, "loss_clean": lc.loss_clean, "loss_edited": lc.loss_edited}
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "metrics": r, "peak_rss_mib": rss / 1024, "rss_before_mib": rss0 / 1024}


def interleaved(tokens: int, batch: int) -> dict:
    import torch

    import saekit
    from saekit.interventions import Splice
    from saekit.metrics import EvalSums
    from saekit.stream import stream_activations
    from saekit.tokens import keep_mask

    model = saekit.load_model()
    sae = saekit.load_pretrained("gemma-3-270m", "resid_post.6")
    hp = "resid_post.6"
    ctx = saekit.contexts(model, saekit.corpus(split="test"), context_len=128, n_tokens=tokens)
    splice = Splice(sae, error_term=False)
    keep_NT = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    import saekit.metrics as metrics

    paths = ("reference", "stacked", "fast")
    sums = {p: EvalSums(fired=torch.zeros(sae.n_latents, dtype=torch.long)) for p in paths}
    wall = dict.fromkeys(paths, 0.0)
    cpu = dict.fromkeys(paths, 0.0)
    loads = []
    grouped_kinds = metrics.WHOLE_STREAM_KINDS

    def timed(path, fn):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        sums[path] = sums[path] + fn()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall[path] += time.perf_counter() - t0
        cpu[path] += (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)

    def ref(s):
        (b,) = stream_activations(model, (ctx.input_ids[s : s + batch], ctx.attention_mask[s : s + batch]), [hp], batch_size=batch)
        return EvalSums.of_batch(model, sae, b, hp, splice)

    def fast(s, kinds=grouped_kinds):
        sl = slice(s, s + batch)
        metrics.WHOLE_STREAM_KINDS = kinds
        try:
            return EvalSums.of_runs(model, sae, ctx.input_ids[sl], ctx.attention_mask[sl], keep_NT[sl],
                                    torch.arange(s, s + len(ctx.input_ids[sl])), hp, splice)
        finally:
            metrics.WHOLE_STREAM_KINDS = grouped_kinds

    def stacked(s):  # the fast path before the zero ablation ran apart: every run in the one stacked forward
        return fast(s, ())

    with torch.inference_mode():
        model.capture(ctx.input_ids[:1], [hp], ctx.attention_mask[:1])  # warm-up
    for i, s in enumerate(range(0, len(ctx), batch)):
        loads.append(os.getloadavg()[0])
        order = [("reference", ref), ("stacked", stacked), ("fast", fast)]
        order = order[i % 3:] + order[:i % 3]  # each path first in turn
        for path, fn in order:
            timed(path, lambda: fn(s))
        print(f"batch {i}: " + ", ".join(f"{p} {wall[p]:.0f} s" for p in paths) + f" so far (load {loads[-1]:.1f})", flush=True)
    return {"wall": wall, "cpu": cpu, "loads": loads,
            "metrics": {p: sums[p].result(sae.d_in).to_dict() for p in sums}, "n_batches": len(loads)}


def many(paths: list[str], tokens: int, batch: int) -> dict:
    import torch

    import saekit
    from saekit.interventions import Splice
    from saekit.metrics import _evaluate_local, EvalSums
    from saekit.stream import stream_activations
    from saekit.tokens import keep_mask

    model = saekit.load_model()
    if paths:
        saes = {Path(q).name: saekit.Sae.load(q) for q in paths}
    else:
        saes = {hp: saekit.load_pretrained("gemma-3-270m", hp) for hp in ("resid_post.2", "resid_post.6", "resid_post.10", "resid_post.14", "transcoder.6")}
    names = list(saes)
    hps = [s.cfg.hookpoint for s in saes.values()]
    ctx = saekit.contexts(model, saekit.corpus(split="test"), context_len=128, n_tokens=tokens)
    splices = [Splice(s, error_term=False) for s in saes.values()]
    keep_NT = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    paths_ = ("reference", "fast", "many")
    sums = {p: [EvalSums(fired=torch.zeros(s.n_latents, dtype=torch.long)) for s in saes.values()] for p in paths_}
    wall = dict.fromkeys(paths_, 0.0)
    loads = []

    def run(path, s):
        sl = slice(s, s + batch)
        ids, mask, keep = ctx.input_ids[sl], ctx.attention_mask[sl], keep_NT[sl]
        context = torch.arange(s, s + len(ids))
        if path == "many":
            return EvalSums.of_runs_many(model, list(saes.values()), ids, mask, keep, context, hps, splices)
        if path == "fast":
            return [EvalSums.of_runs(model, sae, ids, mask, keep, context, hp, sp) for sae, hp, sp in zip(saes.values(), hps, splices)]
        out = []
        for sae, hp, sp in zip(saes.values(), hps, splices):
            target = getattr(sae.cfg, "target_hookpoint", None)
            reads = [hp] if target is None else [hp, target]
            (b,) = stream_activations(model, (ids, mask), reads, batch_size=batch)
            out.append(EvalSums.of_batch(model, sae, b, hp, sp))
        return out

    with torch.inference_mode():
        model.capture(ctx.input_ids[:1], ["resid_post.6"], ctx.attention_mask[:1])  # warm-up
    for i, s in enumerate(range(0, len(ctx), batch)):
        loads.append(os.getloadavg()[0])
        for path in paths_[i % 3:] + paths_[: i % 3]:  # rotate which path runs first
            t0 = time.perf_counter()
            sums[path] = [a + b for a, b in zip(sums[path], run(path, s))]
            wall[path] += time.perf_counter() - t0
        print(f"batch {i}: " + ", ".join(f"{p} {wall[p]:.0f} s" for p in paths_) + f" so far (load {loads[-1]:.1f})", flush=True)
    metrics = {p: {n: sums[p][j].result(sae.d_in).to_dict() for j, (n, sae) in enumerate(saes.items())} for p in paths_}
    worst = {}
    for p in ("fast", "many"):
        worst[p] = max(abs(metrics[p][n][k] - metrics["reference"][n][k]) / max(abs(metrics["reference"][n][k]), 1e-12)
                       for n in names for k in metrics["reference"][n] if isinstance(metrics["reference"][n][k], float))
    return {"wall": wall, "loads": loads, "metrics": metrics, "worst_rel_diff": worst, "names": names,
            "n_tokens": metrics["many"][names[0]]["n_tokens"], "n_batches": len(loads)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--what", choices=["evaluate", "loss_change"], default="evaluate")
    p.add_argument("--one", choices=["reference", "fast"])
    p.add_argument("--rss", action="store_true", help="whole runs in fresh processes, for peak RSS")
    p.add_argument("--many", nargs="*", metavar="SAE_DIR", help="several SAEs (default: the shipped ones): evaluate_many")
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    if a.many is not None:
        r = many(a.many, a.tokens, a.batch)
        w, m = r["wall"], r["metrics"]
        n = len(r["names"])
        rows = "\n".join(f"| {name} | {m['reference'][name]['fvu']:.6g} | {m['many'][name]['fvu']:.6g} | "
                         f"{m['reference'][name]['ce_loss_recovered']:.6g} | {m['many'][name]['ce_loss_recovered']:.6g} | "
                         f"{m['reference'][name]['kl_divergence']:.6g} | {m['many'][name]['kl_divergence']:.6g} |" for name in r["names"])
        body = (
            f"{n} SAEs ({', '.join(r['names'])}) on the same {r['n_tokens']} held-out tokens (test split, contexts of 128, "
            f"{r['n_batches']} batches of {a.batch}); each batch through the three paths in turn, rotating which runs first. "
            f"1-minute load average at each batch: {', '.join(f'{x:.1f}' for x in r['loads'])}.\n\n"
            "| path | wall seconds, all SAEs | per SAE | vs the reference |\n|---|---:|---:|---:|\n"
            f"| reference, one SAE at a time (capture + compare + token_nll) | {w['reference']:.1f} | {w['reference'] / n:.1f} | 1.00x |\n"
            f"| fast path, one SAE at a time (`evaluate`) | {w['fast']:.1f} | {w['fast'] / n:.1f} | {w['reference'] / w['fast']:.2f}x |\n"
            f"| all SAEs together (`evaluate_many`) | {w['many']:.1f} | {w['many'] / n:.1f} | **{w['reference'] / w['many']:.2f}x** |\n\n"
            f"`evaluate_many` is {w['fast'] / w['many']:.2f}x the fast path one SAE at a time. Largest relative difference of "
            f"any metric from the reference path: fast {r['worst_rel_diff']['fast']:.1e}, together {r['worst_rel_diff']['many']:.1e}.\n\n"
            "| SAE | FVU (reference) | FVU (together) | CE-loss recovered (reference) | (together) | KL (reference) | (together) |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n" + rows
        )
        print(body)
        if not a.no_report:
            from _report import write_section

            write_section("evaluate_many: several SAEs on the same tokens", body)
        return
    if a.one:
        print(json.dumps(one(a.one, a.tokens, a.batch, a.what)))
        return
    if not a.rss:
        r = interleaved(a.tokens, a.batch)
        w, c, m = r["wall"], r["cpu"], r["metrics"]
        rows = "\n".join(
            f"| {k} | {m['reference'][k]:.6g} | {m['stacked'][k]:.6g} | {m['fast'][k]:.6g} |"
            for k in m["reference"] if isinstance(m["reference"][k], (int, float))
        )
        body = (
            f"`evaluate`'s per-batch work for the shipped SAE `load_pretrained('gemma-3-270m', 'resid_post.6')` on "
            f"{m['reference']['n_tokens']} held-out tokens (test split, contexts of 128, {r['n_batches']} batches of {a.batch}), "
            "each batch through the three paths in one process, each path first in turn; the reference includes its "
            "early-stopped capture (as `evaluate(reference=True)` does). 1-minute load average at each batch: "
            f"{', '.join(f'{x:.1f}' for x in r['loads'])}.\n\n"
            "| path | wall seconds | CPU seconds (user + sys) |\n|---|---:|---:|\n"
            f"| reference (capture + compare + token_nll, full logits) | {w['reference']:.1f} | {c['reference']:.1f} |\n"
            f"| stacked (clean, spliced and zero-ablated runs in one forward, shared blocks, chunked head) | {w['stacked']:.1f} | {c['stacked']:.1f} |\n"
            f"| fast (the same, the zero ablation apart on one row per group of equal rows) | {w['fast']:.1f} | {c['fast']:.1f} |\n\n"
            f"Speed-up of the fast path: **{w['reference'] / w['fast']:.2f}x wall, {c['reference'] / c['fast']:.2f}x CPU time** "
            f"(stacked: {w['reference'] / w['stacked']:.2f}x wall, {c['reference'] / c['stacked']:.2f}x CPU).\n\n"
            "| metric | reference | stacked | fast |\n|---|---:|---:|---:|\n" + rows
        )
        print(body)
        if not a.no_report:
            from _report import write_section

            write_section("Evaluate: fast vs reference path", body)
        return
    runs: dict[str, list[dict]] = {"reference": [], "fast": []}
    loads = []
    for i in range(a.rounds):
        for path in ("reference", "fast"):
            loads.append(os.getloadavg()[0])
            cmd = [sys.executable, __file__, "--one", path, "--tokens", str(a.tokens), "--batch", str(a.batch), "--what", a.what]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            runs[path].append(json.loads(out))
            print(f"round {i} {path:9s} {runs[path][-1]['seconds']:7.1f} s  peak RSS {runs[path][-1]['peak_rss_mib']:.0f} MiB  load {loads[-1]:.1f}", flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    rss = {k: max(r["peak_rss_mib"] for r in v) for k, v in runs.items()}
    ratios = [r["seconds"] / f["seconds"] for r, f in zip(runs["reference"], runs["fast"])]
    mref, mfast = runs["reference"][0]["metrics"], runs["fast"][0]["metrics"]
    rows = "\n".join(
        f"| {k} | {mref[k]:.6g} | {mfast[k]:.6g} |" for k in mref if isinstance(mref[k], (int, float))
    )
    body = (
        f"`{a.what}` of the shipped SAE `load_pretrained('gemma-3-270m', 'resid_post.6')` on {mref['n_tokens']} held-out "
        f"tokens (test split, contexts of 128, batch {a.batch}); {a.rounds} alternating rounds (reference, fast), "
        f"each a fresh process; 1-minute load average before the runs: {', '.join(f'{x:.1f}' for x in loads)}.\n\n"
        "| path | median seconds | peak RSS (MiB) |\n|---|---:|---:|\n"
        f"| reference (capture + compare + token_nll, full logits) | {med['reference']:.1f} | {rss['reference']:,.0f} |\n"
        f"| fast (one stacked forward, shared blocks, chunked head) | {med['fast']:.1f} | {rss['fast']:,.0f} |\n\n"
        f"Speed-up: **{med['reference'] / med['fast']:.2f}x** (per round: {', '.join(f'{r:.2f}' for r in ratios)}).\n\n"
        "| metric | reference | fast |\n|---|---:|---:|\n" + rows
    )
    print(body)
    if not a.no_report:
        from _report import write_section

        write_section("Evaluate: peak RSS, whole runs" if a.what == "evaluate" else "loss_change: fast vs reference path", body)


if __name__ == "__main__":
    main()
