"""`evaluate` on the default model with the shipped SAE: the fast path vs the readable reference path.

    python benchmarks/bench_evaluate.py [--tokens 4096] [--rounds 2] [--no-report]

Each run is a fresh process (so its peak RSS is its own), alternating reference and fast (R F R F ...);
medians of the wall times of `evaluate` itself (model loading excluded), the metrics of both paths side by
side, and the machine's load average before each run (the machine may be shared).
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--what", choices=["evaluate", "loss_change"], default="evaluate")
    p.add_argument("--one", choices=["reference", "fast"])
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.tokens, a.batch, a.what)))
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

        write_section("Evaluate: fast vs reference path" if a.what == "evaluate" else "loss_change: fast vs reference path", body)


if __name__ == "__main__":
    main()
