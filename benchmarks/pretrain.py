"""Train the pretrained SAEs shipped with saekit for the default model (Gemma 3 270M), reproducibly.

    python benchmarks/pretrain.py                      # everything, resumable: rerun after a kill
    python benchmarks/pretrain.py --stage stats        # one stage again (harvest, train, eval, stats, export)
    python benchmarks/pretrain.py --only transcoder.6 --work runs/pretrain-tc   # one SAE (harvests only its hook points)

Stages, each writing under --work as it finishes (a rerun skips what is done, training resumes from its
checkpoint):
1. harvest: `--tokens` training tokens of the built-in corpus (train split) at resid_post.{2,6,10,14},
   mlp_in.6 and mlp_out.6 in one forward pass per batch (stopped after layer 14), bf16 on disk;
   and the whole test split at the same hook points (the held-out cache for statistics).
2. train: one TopK SAE per residual hook point and one TopK transcoder mlp_in.6 -> mlp_out.6,
   each over `--epochs` passes of the training cache (checkpointed every 200 steps).
3. eval: the evaluation card on held-out text (L0, FVU, CE-loss recovered, KL, dead fraction).
4. stats: `FeatureStats` over the held-out cache (no second forward), with logit effects.
5. export: bf16 weights + card + statistics into saekit/pretrained/gemma-3-270m/<hook point>/.
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
from saekit.tokens import keep_mask
from saekit.saes.disk import weights_file
from saekit.train.checkpoint import STATE_JSON

REPO = Path(__file__).resolve().parents[1]
RESID_LAYERS = (2, 6, 10, 14)
TRANSCODER_LAYER = 6
# name -> (hookpoint, target hookpoint or None, n_latents, k)
SAES = {
    **{f"resid_post.{L}": (f"resid_post.{L}", None, 4096 if L == 6 else 2048, 32) for L in RESID_LAYERS},
    f"transcoder.{TRANSCODER_LAYER}": (f"mlp_in.{TRANSCODER_LAYER}", f"mlp_out.{TRANSCODER_LAYER}", 4096, 32),
}
HOOKPOINTS = tuple(f"resid_post.{L}" for L in RESID_LAYERS) + (f"mlp_in.{TRANSCODER_LAYER}", f"mlp_out.{TRANSCODER_LAYER}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def hookpoints_of(names) -> tuple[str, ...]:
    """The hook points the SAEs `names` read and predict, in HOOKPOINTS' order."""
    wanted = {h for n in names for h in SAES[n][:2] if h}
    return tuple(h for h in HOOKPOINTS if h in wanted)


def stage_harvest(model, work: Path, tokens: int, test_tokens: int, as_is: bool = False, hookpoints=HOOKPOINTS):
    cfg = saekit.HarvestConfig(hookpoints=hookpoints, dtype="bfloat16", batch_size=16)
    if as_is and (work / "acts_train" / "manifest.json").exists():
        train = saekit.ActivationCache.open(work / "acts_train")  # the shards finished so far, checksummed
        log(f"harvest: using the training cache as it is ({train.n_tokens:,} tokens of the {tokens:,} asked for)")
    else:
        log(f"harvest: {tokens:,} training tokens at {hookpoints}")
        train = saekit.harvest(model, n_tokens=tokens, out=work / "acts_train", cfg=cfg, shard_tokens=131_072)
    log(f"harvest: held-out (test split) at {hookpoints}")
    test = saekit.harvest(model, n_tokens=test_tokens, out=work / "acts_test", cfg=cfg, split="test", shard_tokens=131_072)
    log(f"harvest done: train {train.n_tokens:,} tokens, test {test.n_tokens:,} tokens")
    return train, test


def _has_checkpoint(ckpt: Path) -> bool:
    return (ckpt / STATE_JSON).exists() or (ckpt.with_name(ckpt.name + ".old") / STATE_JSON).exists()


def stage_train(train_cache, work: Path, epochs: float, names=tuple(SAES)) -> None:
    for name in names:
        hp, target, F, k = SAES[name]
        out = work / "saes" / name
        if weights_file(out) is not None:
            log(f"train {name}: done already")
            continue
        arch = "transcoder" if target else "topk"
        sae_cfg = saekit.SaeConfig(
            d_in=train_cache.d[hp], n_latents=F, k=k, architecture=arch, hookpoint=hp, target_hookpoint=target,
            model_name="gemma-3-270m",
        )
        cfg = saekit.TrainConfig(tokens=int(epochs * train_cache.n_tokens), checkpoint_every=200, seed=0)
        ckpt = work / "checkpoints" / name
        t = time.time()
        trainer = saekit.Trainer.resume(ckpt, cfg) if _has_checkpoint(ckpt) else saekit.Trainer([saekit.Sae(sae_cfg, seed=0)], cfg)
        log(f"train {name}: {arch}, {F} latents, k={k}, {cfg.tokens:,} tokens from step {trainer.step}")
        trainer.fit(train_cache, hp, checkpoint_dir=ckpt)
        trainer.fold()
        trainer.save(out)
        (out / "training.json").write_text(json.dumps({
            "harvested_tokens": train_cache.n_tokens, "training_tokens": cfg.tokens, "batch_size": cfg.batch_size,
            "corpus": "saekit built-in corpus (train split): Wikipedia leads en/es/fr + Python stdlib source",
            "seconds_this_run": round(time.time() - t, 1),
        }, indent=2) + "\n")
        log(f"train {name}: {time.time() - t:.0f} s")


def stage_eval(model, test_cache, work: Path, eval_tokens: int, names=tuple(SAES)) -> None:
    for name in names:
        card_file = work / "saes" / name / "card.json"
        if card_file.exists():
            continue
        sae = saekit.Sae.load(work / "saes" / name)
        t = time.time()
        # a transcoder is scored on the MLP output it predicts, spliced in for the MLP's output
        result = saekit.evaluate(model, sae, n_tokens=eval_tokens)
        metrics = {k: v for k, v in result.to_dict().items() if not isinstance(v, (list, dict))}
        where = f"built-in corpus, test split (held out from training), {eval_tokens:,} tokens"
        training = json.loads((work / "saes" / name / "training.json").read_text())
        card = {**metrics, "eval_text": where, "eval_seconds": round(time.time() - t, 1), "training": training,
                "architecture": sae.cfg.architecture, "n_latents": sae.n_latents, "k": sae.cfg.k,
                "hookpoint": sae.cfg.hookpoint, "target_hookpoint": sae.cfg.target_hookpoint}
        card_file.write_text(json.dumps(card, indent=2) + "\n")
        log(f"eval {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in card.items() if isinstance(v, float)))


def stage_stats(model, test_cache, work: Path, stats_tokens: int, test_tokens: int, names=tuple(SAES)) -> None:
    # the held-out harvest's contexts, rebuilt exactly as harvest() built them: examples then show their
    # source document, and the top lists are drawn from many documents
    ctx = saekit.contexts(model, saekit.corpus(split="test"), context_len=test_cache.info["context_len"], n_tokens=test_tokens)
    keep = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    rows = min(test_cache.n_tokens, 20_000)
    if not torch.equal(ctx.input_ids[keep][:rows], test_cache.load("token_ids")[:rows].long()):
        raise SystemExit("the rebuilt held-out contexts differ from the harvested ones: harvest the test cache again")
    for name in names:
        out = work / "saes" / name / "features"
        sae = saekit.Sae.load(work / "saes" / name)
        t = time.time()
        stats = feature_stats(model, sae, test_cache, n_tokens=stats_tokens, documents=ctx)
        if out.exists():
            shutil.rmtree(out)
        stats.save(out)
        log(f"stats {name}: {stats.n_tokens:,} tokens, {time.time() - t:.0f} s")


def stage_export(work: Path, dest_root: Path, names=tuple(SAES)) -> None:
    for name in names:
        src = work / "saes" / name
        sae = saekit.Sae.load(src)
        sae.to(dtype=torch.bfloat16)
        sae.cfg.dtype = "bfloat16"
        dest = dest_root / name
        if dest.exists():
            shutil.rmtree(dest)
        sae.save(dest)
        shutil.copy(src / "card.json", dest / "card.json")
        shutil.copytree(src / "features", dest / "features")
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        log(f"export {name}: {size / 1e6:.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=REPO / "runs" / "pretrain")
    p.add_argument("--tokens", type=int, default=1_500_000, help="training tokens harvested")
    p.add_argument("--epochs", type=float, default=2.0, help="passes over the training cache")
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--stats-tokens", type=int, default=100_000)
    p.add_argument("--test-tokens", type=int, default=100_000, help="held-out tokens harvested (test split) for the statistics")
    p.add_argument("--train-cache-as-is", action="store_true",
                   help="train on the shards an interrupted training harvest finished, without harvesting the rest")
    p.add_argument("--dest", type=Path, default=REPO / "saekit" / "pretrained" / "gemma-3-270m")
    p.add_argument("--stage", choices=["all", "harvest", "train", "eval", "stats", "export"], default="all")
    p.add_argument("--only", nargs="+", choices=list(SAES), default=list(SAES),
                   help="train (and harvest the hook points of) these SAEs only")
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = saekit.load_model()
    stages = ["harvest", "train", "eval", "stats", "export"] if a.stage == "all" else [a.stage]
    train_cache = test_cache = None
    if set(stages) & {"harvest", "train", "eval", "stats"}:
        train_cache, test_cache = stage_harvest(model, a.work, a.tokens, a.test_tokens, a.train_cache_as_is,
                                                hookpoints_of(a.only))
    if "train" in stages:
        stage_train(train_cache, a.work, a.epochs, a.only)
    if "eval" in stages:
        stage_eval(model, test_cache, a.work, a.eval_tokens, a.only)
    if "stats" in stages:
        stage_stats(model, test_cache, a.work, a.stats_tokens, a.test_tokens, a.only)
    if "export" in stages:
        stage_export(a.work, a.dest, a.only)


if __name__ == "__main__":
    main()
