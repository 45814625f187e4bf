"""How circuit attribution time grows with the number of SAEs and of prompts (Gemma 3 270M, shipped SAEs,
CPU): `saekit.attribute` with attribution patching and with integrated gradients, nodes only and with edges.

    python benchmarks/bench_circuits.py [--steps 4] [--repeat 2] [--out benchmarks/circuits.json]
    python benchmarks/bench_circuits.py --edges [--tiny] [--node-threshold 0.05]

`--edges`: edge time with one backward per downstream node (`edge_batch=1`, the old computation) against
batched backwards (the default chunk), and the largest difference between the two edge lists; `--tiny` runs
it on the tests' tiny random llama (two SAEs) instead of Gemma.

Each setting runs `--repeat` times and the fastest is kept (the machine may be shared: timings are noisy).

Prompts: "The <plural> to the cabinet" against the singular, metric logit(" are") - logit(" is").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import saekit
from saekit.circuits import attribute, logit_diff

HOOKPOINTS = ["resid_post.2", "resid_post.6", "resid_post.10", "resid_post.14"]
NOUNS = [("key", "keys"), ("author", "authors"), ("pilot", "pilots"), ("teacher", "teachers"),
         ("girl", "girls"), ("dog", "dogs"), ("doctor", "doctors"), ("boy", "boys")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="integrated-gradients steps")
    ap.add_argument("--repeat", type=int, default=2, help="runs per setting; the fastest is kept")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--edges", action="store_true", help="compare edge_batch=1 with batched edge backwards")
    ap.add_argument("--tiny", action="store_true", help="with --edges: the tiny random test model")
    ap.add_argument("--node-threshold", type=float, default=0.05, help="with --edges: nodes kept for edges")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    if args.edges:
        bench_edges(args)
        return
    model = saekit.load_model()
    torch.set_num_threads(2)
    saes_all = {h: saekit.load_pretrained("gemma-3-270m", h) for h in HOOKPOINTS}
    metric = logit_diff(model, " are", " is")
    pairs_all = [(f"The {pl} to the cabinet", f"The {sg} to the cabinet") for sg, pl in NOUNS]
    rows = []

    def run(n_saes: int, n_prompts: int, method: str, edges: bool) -> None:
        saes = {h: saes_all[h] for h in HOOKPOINTS[:n_saes]}
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            c = attribute(model, saes, pairs_all[:n_prompts], metric, method=method, steps=args.steps,
                          node_threshold=0.2, edges=edges, progress=False)
            times.append(time.perf_counter() - t0)
        dt = min(times)
        row = {"n_saes": n_saes, "n_prompts": n_prompts, "method": method, "edges": edges, "seconds": round(dt, 2),
               "nodes": len(c.nodes()), "n_edges": len(c.edges)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    for n_saes in (1, 2, 4):
        run(n_saes, 4, "atp", False)
    for n_prompts in (1, 4, 8):
        run(4, n_prompts, "atp", False)
    for n_saes in (1, 2, 4):
        run(n_saes, 4, "ig", False)
    run(4, 4, "ig", True)
    if args.out:
        args.out.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=1))


def bench_edges(args) -> None:
    """Seconds of attribute (atp) with edges, one backward per downstream node vs batched; same edges?"""
    if args.tiny:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny import tiny_model

        model = tiny_model("llama", n_layers=3, d=32)
        saes = {h: saekit.Sae(saekit.SaeConfig(d_in=32, n_latents=48, k=8, hookpoint=h), seed=i + 1)
                for i, h in enumerate(["resid_post.0", "resid_post.1"])}
        metric = logit_diff(model, "a", "b")
        pairs = [("hello world", "hallo world"), ("abcdefghijk", "abcdefgxijk")]
    else:
        model = saekit.load_model()
        saes = {h: saekit.load_pretrained("gemma-3-270m", h) for h in HOOKPOINTS}
        metric = logit_diff(model, " are", " is")
        pairs = [(f"The {pl} to the cabinet", f"The {sg} to the cabinet") for sg, pl in NOUNS[:4]]
    kw = dict(method="atp", node_threshold=args.node_threshold, edge_threshold=0.0, progress=False)
    attribute(model, saes, pairs, metric, edges=False, **kw)  # warm-up (first-call costs)
    nodes_only = min(timed(lambda: attribute(model, saes, pairs, metric, edges=False, **kw)) for _ in range(args.repeat))
    res = {}
    for batch in (1, None):
        runs = [timed(lambda: attribute(model, saes, pairs, metric, edge_batch=batch, **kw), keep=True) for _ in range(args.repeat)]
        res[batch] = (min(t for t, _ in runs), runs[0][1])
    (t1, c1), (tb, cb) = res[1], res[None]
    diff = max((abs(a.weight - b.weight) for a, b in zip(c1.edges, cb.edges)), default=0.0)
    row = {"model": "tiny" if args.tiny else "gemma-3-270m", "nodes": len(c1.nodes()), "edges": len(c1.edges),
           "downstream_nodes": len({e.down for e in c1.edges}), "nodes_only_s": round(nodes_only, 2),
           "edge_batch_1_s": round(t1, 2), "batched_s": round(tb, 2),
           "edge_speedup": round((t1 - nodes_only) / max(tb - nodes_only, 1e-9), 1), "max_abs_diff": diff,
           "same_edges": [(e.up, e.down) for e in c1.edges] == [(e.up, e.down) for e in cb.edges]}
    print(json.dumps(row), flush=True)


def timed(fn, keep: bool = False):
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return (dt, out) if keep else dt


if __name__ == "__main__":
    main()
