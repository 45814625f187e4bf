"""Harvest throughput: saekit.harvest vs a plain torch forward hook that stops the forward after the hooked
block vs a full forward with output_hidden_states, fp32 and bf16 storage, and the cache's bytes per token.

    python benchmarks/bench_harvest_raw.py [--tokens 8192] [--rounds 2] [--no-report]

All methods read resid_post.6 of the default model on the same contexts (128 tokens, batch 16), keep the
same rows (no BOS, no padding) and hold them in memory in the storage dtype; saekit's also stores token
ids, context indices and positions (10 bytes per token) and checks the rows are finite. Methods alternate
within each round (A B C A B C ...); medians over rounds, the load average recorded.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

import saekit
from saekit.config import HarvestConfig
from saekit.tokens import keep_mask

HOOK = "resid_post.6"


class _Stop(Exception):
    pass


def raw_hook(model, ctx, batch: int, dtype) -> int:
    hf, layer = model.hf_model, model.hf_model.model.layers[6]
    keep = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    out, grab = [], {}

    def hook(mod, args, output):
        grab["x"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    h = layer.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            for s in range(0, len(ctx), batch):
                try:
                    hf(input_ids=ctx.input_ids[s : s + batch], attention_mask=ctx.attention_mask[s : s + batch], use_cache=False)
                except _Stop:
                    pass
                out.append(grab["x"][keep[s : s + batch]].to(dtype))
    finally:
        h.remove()
    return sum(len(o) for o in out)


def full_forward(model, ctx, batch: int, dtype) -> int:
    keep = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    out = []
    with torch.inference_mode():
        for s in range(0, len(ctx), batch):
            hs = model.hf_model(input_ids=ctx.input_ids[s : s + batch], attention_mask=ctx.attention_mask[s : s + batch],
                                output_hidden_states=True, use_cache=False).hidden_states
            out.append(hs[7][keep[s : s + batch]].to(dtype))
    return sum(len(o) for o in out)


def saekit_harvest(model, ctx, batch: int, dtype) -> int:
    cfg = HarvestConfig(hookpoints=(HOOK,), batch_size=batch, dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
    cache = saekit.harvest(model, ctx, cfg=cfg, n_tokens=10**9, progress=False)
    return cache.n_tokens


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="include the full forward")
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    model = saekit.load_model()
    ctx = saekit.contexts(model, saekit.corpus(), context_len=128, n_tokens=a.tokens)
    raw_hook(model, ctx[: a.batch], a.batch, torch.float32)  # warm-up
    methods = [("saekit.harvest", saekit_harvest), ("raw forward hook + early stop", raw_hook)]
    if a.full:
        methods.append(("full forward, output_hidden_states", full_forward))
    times: dict[tuple[str, str], list[float]] = {}
    loads = []
    n = 0
    for _ in range(a.rounds):
        for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            for name, fn in methods:
                loads.append(os.getloadavg()[0])
                t = time.perf_counter()
                n = fn(model, ctx, a.batch, dtype)
                times.setdefault((name, dname), []).append(time.perf_counter() - t)
                print(f"{name:36s} {dname}  {n / times[(name, dname)][-1]:8.0f} tokens/s", flush=True)
    med = {k: n / statistics.median(v) for k, v in times.items()}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = []
    for dname in ("fp32", "bf16"):
        base = med[("raw forward hook + early stop", dname)]
        for name, _ in methods:
            rows.append(f"| {name} | {dname} | {med[(name, dname)]:,.0f} | {med[(name, dname)] / base:.2f} |")
    d = model.d_model
    disk = {}
    import tempfile
    from pathlib import Path

    for dname in ("float32", "bfloat16"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = HarvestConfig(hookpoints=(HOOK,), batch_size=a.batch, dtype=dname)
            cache = saekit.harvest(model, ctx, cfg=cfg, n_tokens=10**9, out=Path(tmp) / "c", progress=False)
            files = [f for f in (Path(tmp) / "c").rglob("*") if f.is_file()]
            disk[dname] = (sum(f.stat().st_size for f in files) / cache.n_tokens)
    body = (
        f"gemma-3-270m, {HOOK}, {n} kept tokens (no BOS/padding), contexts of 128, batch {a.batch}; {a.rounds} rounds, "
        f"methods alternating within each; medians. Load average at each run's start: {', '.join(f'{x:.1f}' for x in loads)}. "
        f"Peak RSS of the whole benchmark process: {rss:,.0f} MiB.\n\n"
        "| method | storage | tokens/s | vs raw hook |\n|---|---|---:|---:|\n" + "\n".join(rows) + "\n\n"
        f"Cache bytes per token (one hook point, d={d}): activations {4 * d} (fp32) or {2 * d} (bf16), plus token id "
        "(int32), context index (int32) and position (int16) = 10 bytes: "
        f"{4 * d + 10} B/token fp32, {2 * d + 10} B/token bf16; measured on disk (shards + manifest, the same "
        f"{n} tokens harvested to a folder): **{disk['float32']:,.1f} B/token fp32, {disk['bfloat16']:,.1f} B/token bf16**."
    )
    print(body)
    if not a.no_report:
        from _report import write_section

        write_section("Harvest: saekit vs a raw forward hook vs a full forward", body)


if __name__ == "__main__":
    main()
