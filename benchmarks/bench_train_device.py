"""Training throughput of saekit's real loop (Trainer: autocast on CUDA, pinned non-blocking copies) at
several widths, against the encoder GEMM's limit measured in the same run.

    python benchmarks/bench_train_device.py [--latents 16384 65536] [--steps 20] [--device cuda|cpu]
        [--pre-act 0 0.75] [--selection float32 bfloat16]

A TopK step's floor is the encoder's dense pre-activation, 2*d*F FLOPs per token forward: the script
times that GEMM alone at the step's shape ([B, d] x [d, F], fp32 and bf16) and reports the step's
tokens/s as a fraction of both GEMM-only limits: float32 (the faster of torch's mm (MKL) and oneDNN,
`saekit.gemm`) and bfloat16 (the dtype the selection product uses under CUDA autocast, and on the CPU where
`SaeConfig.selection_dtype` resolves to it). Data: random rows kept on the host (as a cache's batches are), d=640,
k=32, batch 4096.
Prints BENCHMARKS.md rows; no report is written (paste the rows).
"""

from __future__ import annotations

import argparse
import time

import torch

from saekit import Sae, SaeConfig, TrainConfig
from saekit.gemm import linear, onednn_available
from saekit.train import Trainer


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def gemm_tokens_per_s(d: int, F: int, B: int, dtype: torch.dtype, device: str, reps: int, product=None) -> float:
    """Tokens/s of the encoder's pre-activation GEMM alone ([B, d] x [d, F]) by `product(x, W)` (default torch's
    `x @ W.t()`: MKL for float32 on the CPU; `saekit.gemm.linear`: oneDNN there)."""
    product = product or (lambda x, W: x @ W.t())
    x = torch.randn(B, d, device=device, dtype=dtype)
    W = torch.randn(F, d, device=device, dtype=dtype)
    for _ in range(2):
        product(x, W)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        product(x, W)
    sync(device)
    return B * reps / (time.perf_counter() - t)


def step_tokens_per_s(
    d: int, F: int, B: int, k: int, device: str, steps: int, pre_act: float | None = None, selection: str = "auto"
) -> tuple[float, float]:
    """Tokens/s of `Trainer.fit` between its first and last history entries (each entry reads numbers back,
    so the GPU has finished the steps between them; warm-up and initialisation fall before the first)."""
    x = torch.randn((steps + 5) * B, d)
    sae = Sae(SaeConfig(d_in=d, n_latents=F, k=k, pre_act_coefficient=pre_act, selection_dtype=selection))
    tr = Trainer(sae, TrainConfig(tokens=(steps + 5) * B, batch_size=B, log_every=5, device=device))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tr.fit(list(x.split(B)), progress=False)
    first, last = tr.history[0], tr.history[-1]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"]), peak


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--latents", type=int, nargs="+", default=[16384, 65536])
    p.add_argument("--d", type=int, default=640)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20, help="timed steps (a multiple of 5), after 5 untimed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--pre-act", type=float, nargs="+", default=[None],
                   help="SaeConfig.pre_act_coefficient values to time the step with (default: TopK's own, 0.75; 0: off)")
    p.add_argument("--selection", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16"],
                   help="SaeConfig.selection_dtype values to time the step with (default: 'auto')")
    a = p.parse_args()
    dev = a.device
    name = torch.cuda.get_device_name(0) if dev == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; d={a.d}, k={a.k}, batch {a.batch}, {a.steps} timed steps")
    print(
        "| device | latents | selection | step tokens/s | GEMM-only tokens/s fp32 (torch mm) | GEMM-only tokens/s fp32 (oneDNN) "
        "| GEMM-only tokens/s bf16 | step / fastest fp32 GEMM | step / bf16 GEMM | peak GPU MiB |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for F in a.latents:
        reps = 50 if dev == "cuda" else 3
        g32 = gemm_tokens_per_s(a.d, F, a.batch, torch.float32, dev, reps)
        g32_onednn = float("nan")
        if dev == "cpu" and onednn_available():
            g32_onednn = gemm_tokens_per_s(a.d, F, a.batch, torch.float32, dev, reps, product=linear)
        g16 = gemm_tokens_per_s(a.d, F, a.batch, torch.bfloat16, dev, reps)
        limit32 = max(g32, g32_onednn if g32_onednn == g32_onednn else 0.0)
        for selection in a.selection:
            probe = Sae(SaeConfig(d_in=a.d, n_latents=8, k=1, selection_dtype=selection), device=dev)
            used = "bf16 (CUDA autocast)" if dev == "cuda" else ("bf16" if probe.select_dtype == torch.bfloat16 else "fp32")
            for pre_act in a.pre_act:
                tps, peak = step_tokens_per_s(a.d, F, a.batch, a.k, dev, a.steps, pre_act, selection)
                label = f"{F}" + ("" if pre_act is None else f", pre_act {pre_act:g}")
                print(
                    f"| {name} | {label} | {selection}: {used} | {tps:,.0f} | {g32:,.0f} | {g32_onednn:,.0f} | {g16:,.0f} "
                    f"| {tps / limit32:.2f} | {tps / g16:.2f} | {peak:,.0f} |",
                    flush=True,
                )

if __name__ == "__main__":
    main()
