"""Steering on the shipped SAE (Gemma 3 270M, resid_post.6): three concept features found automatically,
each steered on neutral prompts and scored for concept and fluency, against the difference-of-means
baseline at equal added norm (`saekit.steering_eval`); plus ablation of the Python feature on Python code
against random features of similar density.

    python benchmarks/bench_steering.py [--samples 4] [--tokens 24] [--out benchmarks/steering.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import saekit
from saekit import pretrained
from saekit.interventions import Ablate, loss_change

CONCEPTS = {
    "sea": [
        "The ocean waves crashed on the beach while sailors steered their ships across the open sea.",
        "Fish and coral live beneath the water of the sea, far from the coast and the harbour.",
        "The tide came in over the sand, and the boat drifted out into the ocean.",
    ],
    "python": [
        "def main():\n    for i in range(10):\n        print(i)\n",
        "import os\n\nclass Loader(object):\n    def __init__(self, path):\n        self.path = path\n",
        "    if not isinstance(value, str):\n        raise TypeError('expected a string')\n    return value.strip()\n",
    ],
    "french": [
        "Le chat dort sur la table de la cuisine pendant que nous préparons le dîner.",
        "Elle habite dans une petite maison près de la rivière avec ses deux enfants.",
        "Nous sommes allés à la plage avec nos amis et nous avons mangé des glaces.",
    ],
}
CONTROL = [
    "The committee met on Tuesday to discuss the new budget for the library and the school.",
    "He studied economics at university and later worked for a bank in the city for many years.",
    "The film received positive reviews from critics, who praised its acting and music.",
]
PROMPTS = ["I think that", "My favourite thing is", "Yesterday, we", "The best way to"]


def mean_latents(model, sae, texts):
    """Mean activation of every feature over the real tokens of `texts` [F]."""
    ctx = saekit.contexts(model, texts, context_len=128, min_tokens=1)
    acts = model.capture(ctx.input_ids, [sae.cfg.hookpoint], attention_mask=ctx.attention_mask)[sae.cfg.hookpoint]
    keep = ctx.attention_mask.bool().clone()
    keep[:, 0] = False  # the separator
    with torch.no_grad():
        return sae.encode(acts[keep].float()).mean(0)


def concept_feature(model, sae, stats, texts, control, max_density=0.2):
    """The feature most specific to `texts`: mean activation on them over (mean on control text + corpus mean
    activation + 1% of its max), among features that are not dense; returns (feature, specificity)."""
    on = mean_latents(model, sae, texts)
    off = mean_latents(model, sae, control)
    corpus_mean = stats.density * stats.mean_act
    spec = on / (off + corpus_mean + 0.01 * stats.max_act.clamp_min(1e-6))
    spec[(stats.density > max_density) | (stats.max_act <= 0)] = 0
    f = int(spec.argmax())
    return f, float(spec[f])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("steering.json"))
    a = p.parse_args()
    model = saekit.load_model()
    sae = pretrained.load("gemma-3-270m", "resid_post.6")
    stats = pretrained.stats("gemma-3-270m", "resid_post.6")
    results = {}
    for name, texts in CONCEPTS.items():
        t = time.time()
        f, spec = concept_feature(model, sae, stats, texts, CONTROL)
        ev = saekit.steering_eval(model, sae, f, PROMPTS, stats=stats, strengths=a.strengths, n_samples=a.samples,
                                  max_new_tokens=a.tokens, concept_texts=texts, other_texts=CONTROL)
        best_sae, best_dm = ev.best("sae"), ev.best("diff_means")
        results[name] = {"feature": f, "specificity": spec, "peak_tokens": stats.peak_tokens(f, 8),
                         "density": float(stats.density[f]), "eval": ev.to_dict(), "seconds": round(time.time() - t, 1)}
        print(f"\n== {name}: feature {f} (specificity {spec:.1f}, density {float(stats.density[f]):.4f}, "
              f"peaks {stats.peak_tokens(f, 6)}) {time.time() - t:.0f} s")
        print(ev.table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for label, b in (("sae", best_sae), ("diff_means", best_dm)):
            print(f"best {label}: strength {b.strength:g} concept {b.concept:.3f} (ref {ev.reference.concept:.3f}) "
                  f"nll {b.nll:.2f} (ref {ev.reference.nll:.2f}): {b.samples[0]!r}")
    # ablation: the Python feature on Python code vs random features of similar density
    code = [d.text for d in saekit.data.source_documents("python", "test")[:12]]
    f = results["python"]["feature"]
    d = stats.density
    similar = torch.nonzero((d > d[f] / 2) & (d < d[f] * 2)).squeeze(-1).tolist()
    similar = [g for g in similar if g != f]
    g = torch.Generator().manual_seed(0)
    picks = [similar[i] for i in torch.randperm(len(similar), generator=g)[:5].tolist()]
    abl = loss_change(model, code, [Ablate(sae, [f])], n_tokens=4096).delta
    rnd = [loss_change(model, code, [Ablate(sae, [r])], n_tokens=4096).delta for r in picks]
    results["ablation"] = {"feature": f, "delta": abl, "random_features": picks, "random_deltas": rnd}
    print(f"\nablating python feature {f} on Python code: delta loss {abl:.4f}; random features of similar density: "
          + ", ".join(f"{x:.4f}" for x in rnd))
    a.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
