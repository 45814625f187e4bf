"""Which features of a shipped SAE write their concept when steered: `output_scores` over every feature whose
density lies in a band, on one neutral prompt, ranked (BENCHMARKS.md, "Steering, second pass").

    python benchmarks/bench_output_scores.py [--sae resid_post.6] [--min-density 0.001] [--max-density 0.03] [--top 40]
"""

from __future__ import annotations

import argparse
import time

import saekit
from saekit.steering_eval import output_scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sae", default="resid_post.6")
    p.add_argument("--min-density", type=float, default=1e-3)
    p.add_argument("--max-density", type=float, default=0.03)
    p.add_argument("--prompt", default="I think that")
    p.add_argument("--top", type=int, default=40)
    a = p.parse_args()
    model = saekit.load_model()
    sae = saekit.load_pretrained("gemma-3-270m", a.sae)
    stats = saekit.pretrained.stats("gemma-3-270m", a.sae)
    d = stats.density
    feats = ((d > a.min_density) & (d < a.max_density)).nonzero().squeeze(-1).tolist()
    t = time.time()
    scores = output_scores(model, sae, feats, stats, prompts=[a.prompt])
    print(f"{len(feats)} features of density {a.min_density:g}-{a.max_density:g} scored in {time.time() - t:.0f} s")
    print(scores.head(a.top).to_string(float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
