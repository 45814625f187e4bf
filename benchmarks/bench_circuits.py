"""How circuit attribution time grows with the number of SAEs and of prompts (Gemma 3 270M, shipped SAEs,
CPU): `saekit.attribute` with attribution patching and with integrated gradients, nodes only and with edges.

    python benchmarks/bench_circuits.py [--steps 4] [--repeat 2] [--out benchmarks/circuits.json]

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
    args = ap.parse_args()
    torch.manual_seed(0)
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


if __name__ == "__main__":
    main()
