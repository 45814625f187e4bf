"""Training-step throughput of a TopK SAE: saekit's sparse kernels vs the dense decoder.

d=640, 16384 latents, k=32, batch 4096 by default (the issue's setting); full steps (forward, backward,
Adam, decoder renormalisation) on random-direction data, after warm-up steps.

    python benchmarks/bench_train.py [--latents 16384] [--k 32] [--batch 4096] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from saekit import Sae, SaeConfig
from saekit.saes.base import SaeOutput
from saekit.saes.kernels import dense_decode
from saekit.saes.topk import TopKSae


class DenseTopK(TopKSae, architecture="_dense_topk_benchmark"):
    """The straightforward implementation: dense pre-activations, scatter to [B, F], dense decoder matmul."""

    def forward(self, x, dead_mask=None, progress=1.0):
        pre = (x - self.b_dec) @ self.W_enc.T + self.b_enc
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        acts = vals.relu()
        x_hat = dense_decode(acts, idx, self.W_dec) + self.b_dec
        f = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        z = x.new_zeros(())
        return SaeOutput(x_hat, acts, idx, f, z, f, torch.zeros(self.n_latents, dtype=torch.bool), z)


def step_time(sae, x, steps):
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)

    def step():
        out = sae(x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--d", type=int, default=640)
    p.add_argument("--latents", type=int, default=16384)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(a.batch, a.d, device=device)
    rows = []
    for name, cls in [("saekit sparse TopK", TopKSae), ("dense TopK (reference)", DenseTopK)]:
        cfg = SaeConfig(d_in=a.d, n_latents=a.latents, k=a.k)
        sae = cls(cfg).to(device)
        dt = step_time(sae, x, a.steps)
        rows.append((name, dt))
        print(f"{name:26s} {dt * 1000:8.1f} ms/step  {a.batch / dt:9.0f} tokens/s", flush=True)
    speedup = rows[1][1] / rows[0][1]
    print(f"sparse speed-up: {speedup:.2f}x")
    if not a.no_report:
        from _report import write_section

        body = f"d={a.d}, latents={a.latents}, k={a.k}, batch={a.batch}, device={device}, mean of {a.steps} steps after 2 warm-up steps.\n\n"
        body += "| implementation | ms / step | tokens / s |\n|---|---:|---:|\n"
        body += "".join(f"| {n} | {dt * 1000:.0f} | {a.batch / dt:,.0f} |\n" for n, dt in rows)
        body += f"\nSparse speed-up over dense: **{speedup:.1f}x**."
        write_section(f"TopK training step ({device})", body)


if __name__ == "__main__":
    main()
