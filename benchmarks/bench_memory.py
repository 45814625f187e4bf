"""Peak memory (RSS) of training a 16384-latent TopK SAE at growing token budgets over the same data, and
of harvesting to disk at growing token counts: neither should grow with the budget.

    python benchmarks/bench_memory.py [--data /work/exp/peers/data.pt] [--budgets 98304 393216]
        [--harvest 32768 131072] [--no-report]

Each measurement is a fresh process; 'baseline' is its RSS once the data are loaded (training) or the model
is loaded (harvest), before the measured work starts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_train(data: str, tokens: int, width: int) -> dict:
    import torch

    import saekit
    from saekit.train import Trainer

    x = torch.load(data)["train"].float() if data else torch.randn(100_000, 640)
    base = rss_mib()
    sae = saekit.Sae(saekit.SaeConfig(d_in=x.shape[1], n_latents=width, k=32))
    Trainer(sae, saekit.TrainConfig(tokens=tokens, batch_size=4096)).fit(x, progress=False)
    return {"baseline_mib": base, "peak_mib": rss_mib(), "data_mib": x.numel() * 4 / 2**20}


def one_harvest(tokens: int) -> dict:
    import saekit

    model = saekit.load_model()
    base = rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        cache = saekit.harvest(model, hookpoints="resid_post.6", n_tokens=tokens, out=Path(tmp) / "c", progress=False)
        n = cache.n_tokens
    return {"baseline_mib": base, "peak_mib": rss_mib(), "tokens": n}


def run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/work/exp/peers/data.pt")
    p.add_argument("--width", type=int, default=16384)
    p.add_argument("--budgets", type=int, nargs="+", default=[98_304, 393_216])
    p.add_argument("--harvest", type=int, nargs="*", default=[32_768, 131_072])
    p.add_argument("--one-train", type=int)
    p.add_argument("--one-harvest", type=int)
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    data = a.data if Path(a.data).exists() else ""
    if a.one_train:
        print(json.dumps(one_train(data, a.one_train, a.width)))
        return
    if a.one_harvest:
        print(json.dumps(one_harvest(a.one_harvest)))
        return
    rows = []
    for tokens in a.budgets:
        r = run(["--one-train", str(tokens), "--width", str(a.width), "--data", a.data])
        rows.append(f"| train TopK {a.width} latents, k=32, batch 4096 | {tokens:,} tokens ({tokens // 4096} steps) "
                    f"| {r['baseline_mib']:,.0f} | {r['peak_mib']:,.0f} | {r['peak_mib'] - r['baseline_mib']:,.0f} |")
        print(rows[-1], flush=True)
    for tokens in a.harvest:
        r = run(["--one-harvest", str(tokens)])
        rows.append(f"| harvest resid_post.6 to disk (fp32, shards of 65,536 tokens) | {r['tokens']:,} tokens "
                    f"| {r['baseline_mib']:,.0f} | {r['peak_mib']:,.0f} | {r['peak_mib'] - r['baseline_mib']:,.0f} |")
        print(rows[-1], flush=True)
    src = f"the 100k harvested rows of resid_post.6 ({a.data}, float32, 256 MB, in memory)" if data else "100k random rows in memory"
    body = (
        f"Training data: {src}; budgets beyond 100k tokens are further epochs over the same rows. Each row is a fresh "
        "process; baseline = its peak RSS before the measured work (data or model loaded), peak = after.\n\n"
        "| work | size | baseline RSS (MiB) | peak RSS (MiB) | peak - baseline (MiB) |\n|---|---|---:|---:|---:|\n" + "\n".join(rows)
    )
    print(body)
    if not a.no_report:
        from _report import write_section

        write_section("Memory: training and harvesting", body)


if __name__ == "__main__":
    main()
