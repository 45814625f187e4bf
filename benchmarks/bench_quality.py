"""saekit vs a plain sparse-decode TopK loop on the same activations (the issue's floor).

Gemma 3 270M resid_post.6, 100k harvested training tokens, 4096 latents, k=32, batch 4096, 3 epochs
(300k training tokens); held-out FVU on 8192 test-split activations and CE-loss recovered on 4096
held-out tokens, for both SAEs.

    python benchmarks/bench_quality.py [--cache runs/bench/resid_post.6] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import saekit
from saekit import Sae, SaeConfig, TrainConfig
from saekit.metrics import fvu


def plain_topk_loop(x_ND, n_latents, k, batch, epochs, lr=4e-4, seed=0):
    """The floor: a few dozen lines. Median b_dec, tied init, dense encoder, embedding_bag decoder, Adam."""
    g = torch.Generator().manual_seed(seed)
    N, D = x_ND.shape
    W_dec = torch.randn(n_latents, D, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_dec.requires_grad_()
    W_enc = W_dec.detach().clone().requires_grad_()
    b_enc = torch.zeros(n_latents, requires_grad=True)
    b_dec = x_ND[:32768].median(0).values.clone().requires_grad_()
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=lr)
    for ep in range(epochs):
        perm = torch.randperm(N, generator=g)
        for s in range(0, N - batch + 1, batch):
            x = x_ND[perm[s : s + batch]]
            pre = (x - b_dec) @ W_enc.T + b_enc
            vals, idx = pre.topk(k, dim=-1)
            x_hat = F.embedding_bag(idx, W_dec, per_sample_weights=vals.relu(), mode="sum") + b_dec
            loss = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=-1, keepdim=True)
    sae = Sae(SaeConfig(d_in=D, n_latents=n_latents, k=k, hookpoint="resid_post.6"))
    with torch.no_grad():
        for name, t in [("W_enc", W_enc), ("W_dec", W_dec), ("b_enc", b_enc), ("b_dec", b_dec)]:
            getattr(sae, name).copy_(t)
    return sae


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default="runs/bench/resid_post.6")
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--latents", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    model = saekit.load_model()
    cache = saekit.harvest(model, hookpoints="resid_post.6", n_tokens=a.tokens, out=a.cache)
    held = saekit.harvest(model, hookpoints="resid_post.6", n_tokens=8192, out=a.cache + "-test", split="test").load()
    x = cache.load().float()
    budget = (x.shape[0] // a.batch) * a.batch * a.epochs
    rows = []

    t = time.perf_counter()
    plain = plain_topk_loop(x, a.latents, a.k, a.batch, a.epochs)
    rows.append(("plain sparse-decode TopK loop (lr 4e-4)", plain, budget / (time.perf_counter() - t)))

    t = time.perf_counter()
    ours = saekit.train(cache, cfg=TrainConfig(tokens=budget, batch_size=a.batch), n_latents=a.latents, k=a.k, progress=False)
    rows.append(("saekit.train (defaults)", ours, budget / (time.perf_counter() - t)))

    lines = []
    for name, sae, speed in rows:
        lat = sae.encode(held)
        r = saekit.evaluate(model, sae, n_tokens=a.eval_tokens, progress=False)
        dead = float(((lat > 0).sum(0) == 0).float().mean())
        line = (name, speed, fvu(held, sae.decode(lat)), r.ce_loss_recovered, r.kl_divergence, dead)
        print("%-42s %8.0f tok/s  FVU %.3f  CE rec %.3f  KL %.3f  dead %.3f" % line, flush=True)
        lines.append(line)
    if not a.no_report:
        from _report import write_section

        body = (
            f"Gemma 3 270M resid_post.6; {x.shape[0]:,} harvested training tokens; {a.latents} latents, k={a.k}, "
            f"batch {a.batch}, {a.epochs} epochs ({budget:,} training tokens). FVU on 8,192 held-out activations; "
            f"CE-loss recovered and KL on {a.eval_tokens:,} held-out tokens (test split of the corpus); dead = no "
            "activation on the held-out activations.\n\n"
            "| trainer | training tokens/s | held-out FVU | CE-loss recovered | KL | dead |\n|---|---:|---:|---:|---:|---:|\n"
            + "".join(f"| {n} | {s:,.0f} | {f:.3f} | {c:.3f} | {k:.3f} | {d:.3f} |\n" for n, s, f, c, k, d in lines)
        )
        write_section("Quality and speed at the issue's budget (CPU)", body)


if __name__ == "__main__":
    main()
