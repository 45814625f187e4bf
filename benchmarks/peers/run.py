"""saekit vs SAELens vs dictionary_learning: TopK training side by side on one harvest, one evaluator.

    bash benchmarks/peers/make_venv.sh /work/peers-venv        # once: the peers' environment
    python benchmarks/peers/run.py [--venv /work/peers-venv] [--out /work/exp/peers] [--rounds 2] [--no-report]

1. Harvest resid_post.6 of the default model once (100k tokens by default, saekit.harvest; `--harvest-tokens N
   --from-cache DIR` takes the first N rows of an existing saekit cache instead) into OUT/data.pt.
2. Train each (width, trainer) in alternating order (A B C D A B C D ...), each a fresh process
   (`train_one.py`: saekit in this Python, the peers in the venv), recording wall time and peak RSS.
3. Evaluate each trainer's first-round SAE with one evaluator: saekit's `evaluate` on the same 4,096
   held-out tokens (FVU, L0, dead fraction, CE-loss recovered), and an independent FVU computed here with
   plain transformers (`output_hidden_states`) and plain torch (no saekit code).
Medians of the rounds' throughputs; the machine's load average is recorded with each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TRAINERS = ["saekit", "saekit_noclip", "saelens", "saelens_median", "dictionary_learning"]
HOOKPOINT = "resid_post.6"


def harvest(out: Path, n_tokens: int, from_cache: str | None) -> None:
    """Write OUT/data.pt: n_tokens rows of resid_post.6, harvested now or read from an existing saekit cache."""
    import saekit

    if from_cache:
        rows = saekit.ActivationCache.open(from_cache).load(HOOKPOINT)
        if rows.shape[0] < n_tokens:
            raise SystemExit(f"{from_cache} holds {rows.shape[0]:,} rows of {HOOKPOINT}, fewer than --harvest-tokens {n_tokens:,}")
        rows = rows[:n_tokens].clone()  # a view would save the whole cache's storage (torch.save keeps storages)
    else:
        model = saekit.load_model()
        rows = saekit.harvest(model, hookpoints=HOOKPOINT, n_tokens=n_tokens, progress=False).load(HOOKPOINT)
    torch.save({"train": rows.float().contiguous()}, out)


def train(a, trainer: str, width: int, rnd: int) -> dict:
    py = sys.executable if trainer.startswith("saekit") else str(Path(a.venv) / "bin" / "python")
    w = Path(a.out) / f"{trainer}_{width}_r{rnd}.pt"
    cmd = [py, str(HERE / "train_one.py"), "--trainer", trainer, "--width", str(width), "--tokens", str(a.tokens),
           "--data", str(Path(a.out) / "data.pt"), "--out", str(w)]
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"{trainer} {width} failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r.update(round=rnd, load=load, weights=str(w))
    return r


def plain_fvu(hf, ctx, sep: int, weights: list[dict]) -> list[float]:
    """FVU of each SAE on resid_post.6 = hidden_states[7], read by plain transformers, encoded by plain torch."""
    xs = []
    with torch.inference_mode():
        for s in range(0, len(ctx), 8):
            ids, mask = ctx.input_ids[s : s + 8], ctx.attention_mask[s : s + 8]
            hs = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[7]
            xs.append(hs[mask.bool() & (ids != sep)].double())
    x = torch.cat(xs)
    tv = (x - x.mean(0)).pow(2).sum()
    out = []
    for w in weights:
        W_enc, b_enc, W_dec, b_dec = (w[k].double() for k in ("W_enc", "b_enc", "W_dec", "b_dec"))
        pre = (x - b_dec) @ W_enc.t() + b_enc
        vals, idx = pre.topk(32, dim=-1)
        lat = torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        out.append(float((x - (lat @ W_dec + b_dec)).pow(2).sum() / tv))
    return out


def evaluate(a, results: list[dict]) -> dict:
    import saekit

    model = saekit.load_model()
    ctx = saekit.contexts(model, saekit.corpus(split="test"), context_len=128, n_tokens=a.eval_tokens)
    firsts = {(r["trainer"], r["width"]): r for r in results if r["round"] == 0}
    evals = {}
    keys = sorted(firsts)
    weights = [torch.load(firsts[k]["weights"]) for k in keys]
    plain = plain_fvu(model.hf_model, ctx, model.separator_id, weights)
    saes = []
    for w in weights:
        sae = saekit.Sae(saekit.SaeConfig(d_in=w["W_enc"].shape[1], n_latents=w["W_enc"].shape[0], k=32, hookpoint=HOOKPOINT))
        with torch.no_grad():
            for name, v in w.items():
                getattr(sae, name).copy_(v)
        saes.append(sae.eval())
    for key, r, pf in zip(keys, saekit.evaluate_many(model, saes, ctx, progress=False), plain):  # one evaluator, shared clean run
        evals[f"{key[0]}:{key[1]}"] = {**r.to_dict(), "plain_fvu": pf}
        print(key, f"fvu {r.fvu:.4f} plain {pf:.4f} ce_rec {r.ce_loss_recovered:.4f}", flush=True)
    return evals


def table(a, results: list[dict], evals: dict, n_rows: int) -> str:
    rows = []
    for width in a.widths:
        base = None
        for trainer in TRAINERS:
            runs = [r for r in results if r["trainer"] == trainer and r["width"] == width]
            if not runs:
                continue
            tps = statistics.median(r["tokens"] / r["seconds"] for r in runs)
            base = tps if trainer == "saekit" else base
            rss = max(r["peak_rss_mib"] for r in runs)
            e = evals.get(f"{trainer}:{width}", {})
            f = lambda k, fmt: format(e[k], fmt) if k in e else ""
            rows.append(
                f"| {width} | {trainer} | {tps:,.0f} | {tps / base:.2f} | {rss:,.0f} | {f('fvu', '.4f')} | {f('plain_fvu', '.4f')} "
                f"| {f('l0', '.1f')} | {f('dead_fraction', '.3f')} | {f('ce_loss_recovered', '.4f')} |"
            )
    loads = ", ".join(f"{r['load']:.1f}" for r in results)
    return (
        f"TopK, k=32, batch 4096, {a.tokens:,} training tokens ({a.tokens // 4096} steps over {n_rows:,} harvested tokens of "
        f"{HOOKPOINT}, gemma-3-270m), lr 2e-3/sqrt(F/4096) for every trainer, 5 warm-up steps, linear decay over the "
        f"last 20%, inputs scaled to E||x||^2 = d_in for every trainer. {a.rounds} alternating rounds; tokens/s is the "
        "median over rounds of training tokens / wall time of the library's training call (initialisation included), "
        f"in a fresh process per run; peak RSS is that process's maximum (the {n_rows:,} x 640 float32 data, "
        f"{n_rows * 640 * 4 / 2**20:,.0f} MiB, included). "
        f"FVU, L0, dead fraction (no activation on the held-out tokens) and CE-loss recovered: saekit's `evaluate` on {a.eval_tokens:,} "
        "held-out tokens (test split) of the first round's SAE; 'plain FVU' recomputes FVU with plain transformers "
        f"(`output_hidden_states`) and plain torch. Load average at each run's start: {loads}.\n\n"
        "| latents | trainer | tokens/s | vs saekit | peak RSS (MiB) | FVU | plain FVU | L0 | dead | CE-loss recovered |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows)
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--venv", default="/work/peers-venv")
    p.add_argument("--out", default="/work/exp/peers")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--widths", type=int, nargs="+", default=[16384, 4096])
    p.add_argument("--tokens", type=int, default=196_608)
    p.add_argument("--harvest-tokens", type=int, default=100_000, help="rows of the shared data file (harvested once)")
    p.add_argument("--from-cache", help="read the data file's rows from this saekit ActivationCache instead of harvesting")
    p.add_argument("--trainers", nargs="+", default=TRAINERS)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--resume", action="store_true", help="keep OUT/results.json's runs and run only the missing ones")
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "data.pt").exists():
        harvest(out / "data.pt", a.harvest_tokens, a.from_cache)
    n_rows = torch.load(out / "data.pt", mmap=True)["train"].shape[0]
    log = out / "results.json"
    results = json.loads(log.read_text()) if (a.eval_only or a.resume) and log.exists() else []
    results = [r for r in results if r["width"] in a.widths]
    done = {(r["trainer"], r["width"], r["round"]) for r in results}
    if not a.eval_only:
        for rnd in range(a.rounds):
            for width in a.widths:
                for trainer in a.trainers:
                    if (trainer, width, rnd) in done:
                        continue
                    r = train(a, trainer, width, rnd)
                    results.append(r)
                    log.write_text(json.dumps(results, indent=1))
                    print(f"round {rnd} {width:6d} {trainer:20s} {r['tokens'] / r['seconds']:8.0f} tok/s  "
                          f"RSS {r['peak_rss_mib']:.0f} MiB  load {r['load']:.1f}", flush=True)
    evals = evaluate(a, results)
    (out / "evals.json").write_text(json.dumps(evals, indent=1))
    body = table(a, results, evals, n_rows)
    print(body)
    if not a.no_report:
        sys.path.insert(0, str(HERE.parent))
        from _report import write_section

        write_section("Side by side: saekit, SAELens, dictionary_learning (TopK training)", body)


if __name__ == "__main__":
    main()
