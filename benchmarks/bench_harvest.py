"""Harvest throughput on the default model: saekit (early stop after the hooked layer) vs a full forward.

    python benchmarks/bench_harvest.py [--hookpoint resid_post.6] [--tokens 16384]
"""

from __future__ import annotations

import argparse
import time

import torch

import saekit
from saekit.stream import stream_activations


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hookpoint", default="resid_post.6")
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    model = saekit.load_model()
    ctx = saekit.contexts(model, saekit.corpus(), context_len=128, n_tokens=a.tokens)
    for _ in stream_activations(model, ctx[:a.batch], [a.hookpoint], batch_size=a.batch):  # warm-up
        pass
    t = time.perf_counter()
    kept = sum(b.n_tokens for b in stream_activations(model, ctx, [a.hookpoint], batch_size=a.batch))
    early = kept / (time.perf_counter() - t)
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(ctx), a.batch):
            model.hf_model(ctx.input_ids[s : s + a.batch], attention_mask=ctx.attention_mask[s : s + a.batch], output_hidden_states=True)
    full = kept / (time.perf_counter() - t)
    print(f"saekit harvest (early stop): {early:8.0f} tokens/s")
    print(f"full forward (transformers): {full:8.0f} tokens/s   speed-up {early / full:.1f}x")
    if not a.no_report:
        from _report import write_section

        write_section(
            "Harvest",
            f"{model.name}, hook point {a.hookpoint}, {kept} kept tokens (BOS/pad dropped), contexts of 128, batch {a.batch}.\n\n"
            "| method | tokens / s |\n|---|---:|\n"
            f"| saekit.harvest (nnsight, stop after the hooked layer, inference mode) | {early:,.0f} |\n"
            f"| full forward with output_hidden_states (plain transformers) | {full:,.0f} |\n\n"
            f"Early stop speed-up: **{early / full:.1f}x**.",
        )


if __name__ == "__main__":
    main()
