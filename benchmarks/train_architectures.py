"""Two architectures on the same data and budget, for the side-by-side evaluations (BENCHMARKS.md,
"Evaluations beyond reconstruction"): a TopK and a BatchTopK SAE at resid_post.6 of Gemma 3 270M,
4096 latents, k = 32, trained together by one Trainer (the same batches in the same order), then each
one's held-out card (L0, FVU, dead fraction on the held-out cache) and its FeatureStats over the
held-out cache (no second forward; logit effects from the model), as benchmarks/pretrain.py's stats stage.

    python benchmarks/train_architectures.py --train /work/data/r6-train --test /work/data/r6-test \
        --work /work/data/evals-run [--epochs 2] [--stage all|train|card|stats]

Writes --work/saes/{topk,batchtopk}/ (weights, card.json, training.json, features/). Then
`python benchmarks/bench_evals.py --sae-dirs --work/saes/topk --work/saes/batchtopk`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

import saekit
from saekit.features import feature_stats
from saekit.metrics import fvu, l0
from saekit.tokens import keep_mask

HOOKPOINT = "resid_post.6"
ARCHITECTURES = ("topk", "batchtopk")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage_train(train_cache, work: Path, epochs: float, n_latents: int, k: int) -> None:
    cfg = saekit.TrainConfig(tokens=int(epochs * train_cache.n_tokens), seed=0)
    saes = [saekit.Sae(saekit.SaeConfig(d_in=train_cache.d[HOOKPOINT], n_latents=n_latents, k=k, architecture=a,
                                        hookpoint=HOOKPOINT, model_name="gemma-3-270m"), seed=0)
            for a in ARCHITECTURES]
    t = time.time()
    log(f"train {ARCHITECTURES}: {n_latents} latents, k={k}, {cfg.tokens:,} tokens ({cfg.steps} steps)")
    trainer = saekit.Trainer(saes, cfg)
    trainer.fit(train_cache, HOOKPOINT, progress=False)
    trainer.save(work / "saes", names=list(ARCHITECTURES))
    for a in ARCHITECTURES:
        (work / "saes" / a / "training.json").write_text(json.dumps({
            "harvested_tokens": train_cache.n_tokens, "training_tokens": cfg.tokens, "batch_size": cfg.batch_size,
            "trained_together_with": list(ARCHITECTURES), "seconds_both": round(time.time() - t, 1)}, indent=2) + "\n")
    log(f"train: {time.time() - t:.0f} s for both")


@torch.no_grad()
def stage_card(test_cache, work: Path) -> None:
    x_ND = test_cache.load(HOOKPOINT, dtype=torch.float32)
    for a in ARCHITECTURES:
        sae = saekit.Sae.load(work / "saes" / a)
        z_NF = torch.cat([sae.encode(x) for x in x_ND.split(8192)])
        x_hat_ND = torch.cat([sae.decode(z) for z in z_NF.split(8192)])
        card = {"architecture": a, "n_latents": sae.n_latents, "k": sae.cfg.k, "hookpoint": HOOKPOINT,
                "heldout_tokens": int(x_ND.shape[0]), "l0": l0(z_NF), "fvu": float(fvu(x_ND, x_hat_ND)),
                "dead_fraction": float(((z_NF != 0).sum(0) == 0).float().mean()),
                "eval_text": "held-out cache (built-in corpus, test split), no splice"}
        (work / "saes" / a / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        log(f"card {a}: L0 {card['l0']:.2f}, FVU {card['fvu']:.4f}, dead {card['dead_fraction']:.4f}")


def stage_stats(model, test_cache, work: Path) -> None:
    info = test_cache.info
    ctx = saekit.contexts(model, saekit.corpus(split="test"), context_len=info["context_len"],
                          n_tokens=info["requested_tokens"])
    keep = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    rows = min(test_cache.n_tokens, 20_000)
    if not torch.equal(ctx.input_ids[keep][:rows], test_cache.load("token_ids")[:rows].long()):
        raise SystemExit("the rebuilt held-out contexts differ from the harvested ones: harvest the test cache again")
    for a in ARCHITECTURES:
        out = work / "saes" / a / "features"
        sae = saekit.Sae.load(work / "saes" / a)
        t = time.time()
        stats = feature_stats(model, sae, test_cache, n_tokens=test_cache.n_tokens, documents=ctx, progress=False)
        if out.exists():
            shutil.rmtree(out)
        stats.save(out)
        log(f"stats {a}: {stats.n_tokens:,} tokens, {time.time() - t:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=Path, required=True, help="training ActivationCache at resid_post.6")
    p.add_argument("--test", type=Path, required=True, help="held-out ActivationCache at resid_post.6 (with token_ids)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--latents", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--stage", choices=["all", "train", "card", "stats"], default="all")
    a = p.parse_args()
    torch.manual_seed(0)
    stages = ["train", "card", "stats"] if a.stage == "all" else [a.stage]
    if "train" in stages:
        stage_train(saekit.ActivationCache.open(a.train), a.work, a.epochs, a.latents, a.k)
    test_cache = saekit.ActivationCache.open(a.test)
    if "card" in stages:
        stage_card(test_cache, a.work)
    if "stats" in stages:
        stage_stats(saekit.load_model(), test_cache, a.work)


if __name__ == "__main__":
    main()
