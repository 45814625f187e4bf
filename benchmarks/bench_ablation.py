"""Ablating the shipped SAE's Python-code feature vs many random features of similar density (issue 10's claim).

    python benchmarks/bench_ablation.py [--random 20] [--tokens 1024]

Notebook 05 picks the feature with the best coverage on held-out Python source (`features_for_text`, rank="coverage")
and compares the rise in loss on Python code when it is ablated (`Ablate`, error term kept) with five random features
of similar density (half to twice its density). This script does the same with `--random` features, so the
feature's rank among them says how unusual its effect is. Prints the deltas and the rank; no report is written.
"""

from __future__ import annotations

import argparse

import torch

import saekit
from saekit import Ablate
from saekit.data import source_documents
from saekit.features.search import features_for_text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--random", type=int, default=20, help="random features of similar density to compare with")
    p.add_argument("--tokens", type=int, default=1024, help="Python-code tokens the loss is measured on")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model = saekit.load_model()
    sae = saekit.load_pretrained("gemma-3-270m", "resid_post.6")
    stats = saekit.pretrained.stats("gemma-3-270m", "resid_post.6")
    code = [d.text[:600] for d in source_documents("python", "test")[:16]]
    py = int(features_for_text(model, sae, code, stats, top=1, rank="coverage").index[0])
    d = stats.density
    similar = [g for g in torch.nonzero((d > d[py] / 2) & (d < d[py] * 2)).squeeze(-1).tolist() if g != py]
    order = torch.randperm(len(similar), generator=torch.Generator().manual_seed(a.seed))[: a.random].tolist()
    randoms = [similar[i] for i in order]

    def delta(f: int) -> float:
        return saekit.loss_change(model, code, Ablate(sae, [f]), n_tokens=a.tokens, batch_size=8).delta

    d_py = delta(py)
    d_rand = [delta(f) for f in randoms]
    above = sum(x >= d_py for x in d_rand)
    print(f"Python feature {py} (peaks {stats.peak_tokens(py, 3)}, density {float(d[py]):.4f}): {d_py:+.5f} nats/token")
    print(f"{len(d_rand)} random features of density {float(d[py]) / 2:.4f}-{float(d[py]) * 2:.4f} ({len(similar)} such): "
          + ", ".join(f"{x:+.5f}" for x in sorted(d_rand, reverse=True)))
    print(f"random features with an effect at least as large: {above} of {len(d_rand)}; "
          f"random mean {sum(d_rand) / len(d_rand):+.5f}, largest {max(d_rand):+.5f}")


if __name__ == "__main__":
    main()
