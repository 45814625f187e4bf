"""Evaluations beyond reconstruction side by side: each evaluation's runtime and scores (saekit.evals, offline
baseline explainer) for the shipped SAEs of Gemma 3 270M (default: resid_post.6 and resid_post.10, both TopK,
4096 latents), or for SAE folders you trained (`--sae-dirs`; each needs its FeatureStats in <dir>/features,
as benchmarks/train_architectures.py writes them). SAEs at the same hook point share one forward pass of the
absorption words. Timings on a shared CPU are noisy.

    python benchmarks/bench_evals.py [--features 50] [--words 3000] [--icl 10] [--per-class 60] [--out benchmarks/evals.json]
    python benchmarks/bench_evals.py --sae-dirs runs/topk runs/batchtopk --out benchmarks/evals_architectures.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import saekit
from saekit import evals as ev
from saekit.evals.spelling import vocab_words
from saekit.features import FeatureStats


def cached_spelling(path: Path | None, tokenizer, hookpoint: str, n_words: int, n_icl: int):
    """The SpellingSet saved at `path` if it was read at `hookpoint` with the same settings, else None."""
    if path is None or not path.exists():
        return None
    d = ev.SpellingSet(**torch.load(path))
    same = d.hookpoint == hookpoint and d.n_icl == n_icl and d.words == [w for _, w in vocab_words(tokenizer, n_words)]
    return d if same else None


def finite(v):
    """`v` with NaN floats (a letter without true positives) as None, so that the file is strict JSON."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [finite(x) for x in v]
    return v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--words", type=int, default=3000)
    p.add_argument("--icl", type=int, default=10, help="solved examples in each absorption prompt (SAEBench: 10)")
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--hookpoints", nargs="+", default=["resid_post.6", "resid_post.10"],
                   help="shipped SAEs to evaluate (ignored with --sae-dirs)")
    p.add_argument("--sae-dirs", nargs="+", type=Path, default=None,
                   help="evaluate these saved SAE folders (with <dir>/features) instead of the shipped ones")
    p.add_argument("--evals-out", type=Path, default=None,
                   help="where each SAE's evals.json goes (default: next to --out for shipped SAEs, in the SAE folder)")
    p.add_argument("--spelling-cache", type=Path, default=None,
                   help="a .pt file: reuse the absorption words' activations saved there by an earlier run with the "
                        "same --words/--icl at the same hook point (saved there when absent)")
    p.add_argument("--out", default="benchmarks/evals.json")
    a = p.parse_args()
    model = saekit.load_model()
    if a.sae_dirs:
        entries = [(d.name, d) for d in a.sae_dirs]
    else:
        entries = [(hp, None) for hp in a.hookpoints]
    results, spelling = {}, {}
    for name, folder in entries:
        if folder is None:
            sae = saekit.load_pretrained("gemma-3-270m", name)
            stats = saekit.pretrained.stats("gemma-3-270m", name)
            out = (a.evals_out or Path(a.out).parent) / f"evals_{name}"
        else:
            sae = saekit.Sae.load(folder)
            stats = FeatureStats.load(folder / "features")
            stats.path = None  # labels set by autointerp stay in memory
            out = (a.evals_out / name) if a.evals_out else folder
        hp = sae.cfg.hookpoint
        t0 = time.perf_counter()
        if hp not in spelling:
            spelling[hp] = cached_spelling(a.spelling_cache, model.tokenizer, hp, a.words, a.icl)
            if spelling[hp] is None:
                spelling[hp] = ev.spelling_set(model, hp, n_words=a.words, n_icl=a.icl)
                if a.spelling_cache is not None:
                    torch.save(spelling[hp].__dict__, a.spelling_cache)
        spelling_seconds = time.perf_counter() - t0
        rep = ev.run(model, sae, stats, out=out, progress=False, options={
            "autointerp": {"n_features": a.features, "set_labels": False},
            "sparse_probing": {"n_per_class": a.per_class}, "absorption": {"data": spelling[hp]}})
        seconds = dict(rep.seconds)
        seconds["absorption_forward"] = spelling_seconds  # the words' forward pass, shared by SAEs at one hook point
        ab = rep.details["absorption"]
        results[name] = {"summary": {f"{r.eval} {r.metric}": r.value for r in rep.table.itertuples()},
                         "seconds": seconds, "architecture": sae.cfg.architecture, "hookpoint": hp,
                         "probing": rep.details["sparse_probing"].drop(columns=["top_latents"]).to_dict(orient="records"),
                         "absorption": ab.drop(columns=["main_latents"]).reset_index().to_dict(orient="records")}
        print(name, json.dumps({k: results[name][k] for k in ("summary", "seconds")}, indent=1), flush=True)
    Path(a.out).write_text(json.dumps(finite(results), indent=2, allow_nan=False) + "\n")
    names = [n for n, _ in entries]
    keys = list(results[names[0]]["summary"])
    print("\n| metric | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{results[n]['summary'][k]:.3f}" for n in names) + " |")
    for s in results[names[0]]["seconds"]:
        print(f"| seconds: {s} | " + " | ".join(f"{results[n]['seconds'][s]:.0f}" for n in names) + " |")


if __name__ == "__main__":
    main()
