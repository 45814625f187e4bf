"""Evaluations beyond reconstruction on the shipped SAEs (Gemma 3 270M): each evaluation's runtime and
scores for resid_post.6 side by side with resid_post.10 (both TopK, 4096 latents; saekit.evals, offline
baseline explainer). Timings on a shared CPU are noisy.

    python benchmarks/bench_evals.py [--features 50] [--words 3000] [--per-class 60] [--out benchmarks/evals.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import saekit
from saekit import evals as ev


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--words", type=int, default=3000)
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--hookpoints", nargs="+", default=["resid_post.6", "resid_post.10"])
    p.add_argument("--out", default="benchmarks/evals.json")
    a = p.parse_args()
    model = saekit.load_model()
    results = {}
    for hp in a.hookpoints:
        sae = saekit.load_pretrained("gemma-3-270m", hp)
        stats = saekit.pretrained.stats("gemma-3-270m", hp)
        rep = ev.run(model, sae, stats, out=Path(a.out).parent / f"evals_{hp}", progress=False, options={
            "autointerp": {"n_features": a.features, "set_labels": False},
            "sparse_probing": {"n_per_class": a.per_class}, "absorption": {"n_words": a.words}})
        results[hp] = {"summary": {f"{r.eval} {r.metric}": r.value for r in rep.table.itertuples()},
                       "seconds": rep.seconds,
                       "probing": rep.details["sparse_probing"].drop(columns=["top_latents"]).to_dict(orient="records")}
        print(hp, json.dumps(results[hp], indent=1), flush=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    keys = list(results[a.hookpoints[0]]["summary"])
    print("\n| metric | " + " | ".join(a.hookpoints) + " |\n|---|" + "---|" * len(a.hookpoints))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{results[h]['summary'][k]:.3f}" for h in a.hookpoints) + " |")
    for name in results[a.hookpoints[0]]["seconds"]:
        print(f"| seconds: {name} | " + " | ".join(f"{results[h]['seconds'][name]:.0f}" for h in a.hookpoints) + " |")


if __name__ == "__main__":
    main()
