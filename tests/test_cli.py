"""The command line: help for every option, train/eval end to end on a local model folder, clear errors."""

import json
import subprocess
import sys

import pytest

from saekit.cli import build_parser, main
from tiny import byte_tokenizer, tiny_hf_model


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "saekit.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_every_option_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert {"train", "eval", "harvest", "quickstart"} <= set(subparsers)
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"saekit {name} {action.option_strings or action.dest} has no help"
    train_opts = {o for a in subparsers["train"]._actions for o in a.option_strings}
    assert {"--model", "--hookpoint", "--latents", "--k", "--tokens", "--out"} <= train_opts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_hf_model("llama", n_layers=2).save_pretrained(d)
    byte_tokenizer().save_pretrained(d)
    return d


def test_train_then_eval_on_a_local_model_folder(model_dir, tmp_path):
    out = tmp_path / "run"
    r = run(
        "train", "--model", str(model_dir), "--hookpoint", "resid_post.1", "--latents", "64", "--k", "4",
        "--tokens", "8192", "--harvest-tokens", "4096", "--batch-size", "1024", "--eval-tokens", "256",
        "--text", str(__file__), "--out", str(out),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "cfg.json").exists() and (out / "sae_weights.safetensors").exists()
    assert "summary" in r.stdout and "held-out ce_loss_recovered" in r.stdout
    assert json.loads((out / "cfg.json").read_text())["saekit"]["hookpoint"] == "resid_post.1"
    e = run("eval", str(out), "--model", str(model_dir), "--tokens", "256", "--text", str(__file__), "--json", str(tmp_path / "m.json"))
    assert e.returncode == 0, e.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["l0"] <= 4 and 0 <= metrics["fvu"] < 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--latents", "16", "--k", "32"], "k=32 is larger than n_latents=16"),
        (["train", "--tokens", "100"], "smaller than one batch"),
        (["train", "--harvest-tokens", "10"], "smaller than one batch"),
        (["eval", "/nonexistent"], "has no cfg.json"),
    ],
)
def test_bad_arguments_fail_fast_with_the_fix(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as e:
        code, err = e.code, str(e.code)
    else:
        err = capsys.readouterr().err
    assert code != 0 and message in (err if isinstance(err, str) else "")


def test_unknown_hookpoint_on_a_real_folder(model_dir, tmp_path, capsys):
    code = main(["train", "--model", str(model_dir), "--hookpoint", "resid_post.7", "--out", str(tmp_path / "x")])
    assert code == 2 and "out of range" in capsys.readouterr().err


def test_killed_training_resumes_from_its_checkpoint(model_dir, tmp_path):
    """A kill loses at most the steps since the last checkpoint; rerunning the command finishes the run."""
    import signal
    import time

    out = tmp_path / "run"
    args = [
        sys.executable, "-m", "saekit.cli", "train", "--model", str(model_dir), "--hookpoint", "resid_post.1",
        "--latents", "64", "--k", "4", "--tokens", str(256 * 400), "--harvest-tokens", "2048", "--batch-size", "256",
        "--checkpoint-every", "5", "--eval-tokens", "0", "--text", str(__file__), "--out", str(out),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    # the kill may land between a checkpoint write's two renames, leaving only `checkpoint.old`: resume uses that
    from saekit.train.checkpoint import STATE_JSON, find_checkpoint

    step_at_kill = json.loads((find_checkpoint(out / "checkpoint") / STATE_JSON).read_text())["step"]
    assert 0 < step_at_kill < 400
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming the interrupted run" in r.stdout
    assert (out / "sae_weights.safetensors").exists() and not (out / "checkpoint").exists()


def test_train_on_a_cache_with_a_damaged_shard_harvests_that_shard_again(model_dir, tmp_path):
    """`saekit train --cache` re-verifies a finished cache before training on it: a flipped bit is found, only
    that shard is harvested again, and the run trains on the original values."""
    from saekit.store import ActivationCache

    cache_dir = tmp_path / "cache"
    base = [
        "train", "--model", str(model_dir), "--hookpoint", "resid_post.1", "--latents", "64", "--k", "4",
        "--tokens", "2048", "--harvest-tokens", "2048", "--shard-tokens", "512", "--batch-size", "256",
        "--context-len", "32", "--harvest-batch-size", "4",
        "--eval-tokens", "0", "--text", str(__file__), "--cache", str(cache_dir),
    ]
    assert run(*base, "--out", str(tmp_path / "a")).returncode == 0
    shards = ActivationCache.open(cache_dir).shards
    assert len(shards) >= 3
    target = cache_dir / shards[1]["file"]
    original = target.read_bytes()
    raw = bytearray(original)
    raw[-6] ^= 0x40
    target.write_bytes(bytes(raw))
    r = run(*base, "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checked against its checksum" in r.stdout
    assert target.read_bytes() == original and ActivationCache.open(cache_dir).bad_shards() == []


@pytest.mark.parametrize(
    "extra, arch",
    [
        (["--architecture", "jumprelu", "--target-l0", "4"], "jumprelu"),
        (["--architecture", "transcoder", "--hookpoint", "mlp_in.1", "--target-hookpoint", "mlp_out.1"], "transcoder"),
    ],
)
def test_train_other_architectures_from_the_cli(model_dir, tmp_path, extra, arch, capsys):
    out = tmp_path / arch
    args = ["train", "--model", str(model_dir), "--latents", "64", "--k", "4", "--tokens", "4096", "--harvest-tokens", "2048",
            "--batch-size", "512", "--eval-tokens", "128", "--text", str(__file__), "--out", str(out)]
    if "--hookpoint" not in extra:
        args += ["--hookpoint", "resid_post.1"]
    assert main(args + extra) == 0
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["saekit"]["architecture"] == arch
    assert "architecture" in capsys.readouterr().out


def test_architecture_specific_errors_name_the_fix(capsys):
    assert main(["train", "--architecture", "matryoshka"]) == 2
    assert "matryoshka_prefixes" in capsys.readouterr().err


# -- the configs are the source of truth of the train and harvest options ---------------------------


def _subparser(name: str):
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]


@pytest.mark.parametrize("command", ["train", "harvest"])
def test_every_config_field_is_an_option_with_the_librarys_default_and_docstring(command):
    """Drift fails here: each field's option has the dataclass default (or a documented CLI default) and its docstring."""
    from dataclasses import fields

    from saekit import cli
    from saekit.config import field_docs

    sections = {"train": cli.TRAIN, "harvest": cli.HARVEST}[command]
    by_dest = {a.dest: a for a in _subparser(command)._actions}
    for section in sections:
        cls = section.cls
        docs = field_docs(cls)
        for f in fields(cls):
            if f.name in section.derived:
                assert section.derived[f.name] and section.dest(f.name) not in by_dest, f"{cls.__name__}.{f.name}"
                continue
            action = by_dest[section.dest(f.name)]
            assert "--" + section.dest(f.name).replace("_", "-") in action.option_strings
            lib_default = cli.field_default(cls, f.name)
            default, why = cli.CLI_DEFAULTS.get((cls, f.name), (lib_default, None))
            assert action.default == default, f"{cls.__name__}.{f.name}"
            assert docs[f.name].replace("%", "%%") in action.help, f"{cls.__name__}.{f.name}"
            if why is not None:  # a CLI default says so in --help, with the library's
                assert why in action.help and cli._show(lib_default) in action.help
    assert {s.cls.__name__: set(s.derived) for s in sections} == {
        "train": {"SaeConfig": {"d_in", "model_name"}, "TrainConfig": set(), "HarvestConfig": {"hookpoints"}},
        "harvest": {"HarvestConfig": set()},
    }[command]


def test_every_config_field_has_a_docstring():
    """The house style, and what --help is built from."""
    from dataclasses import fields

    from saekit.config import HarvestConfig, SaeConfig, TrainConfig, field_docs

    for cls in (SaeConfig, TrainConfig, HarvestConfig):
        assert set(field_docs(cls)) == {f.name for f in fields(cls)}, cls.__name__
        assert all(field_docs(cls).values()), cls.__name__


def test_default_options_build_the_librarys_configs():
    """With no options, train and harvest build the dataclasses' defaults, except the documented CLI defaults."""
    from dataclasses import replace

    from saekit import cli
    from saekit.config import HarvestConfig, SaeConfig, TrainConfig

    args = build_parser().parse_args(["train"])
    sae_kw, train_kw, harvest_kw = (cli.config_kwargs(args, s) for s in cli.TRAIN)
    assert SaeConfig(d_in=8, **sae_kw) == SaeConfig(d_in=8)
    assert TrainConfig(**train_kw) == replace(TrainConfig(), checkpoint_every=cli.CLI_DEFAULTS[(TrainConfig, "checkpoint_every")][0])
    assert HarvestConfig(hookpoints=("h",), **harvest_kw) == HarvestConfig(hookpoints=("h",))
    (h_kw,) = (cli.config_kwargs(build_parser().parse_args(["harvest", "--out", "x"]), s) for s in cli.HARVEST)
    assert HarvestConfig(**{**h_kw, "hookpoints": ("h",)}) == HarvestConfig(hookpoints=("h",)) and h_kw["hookpoints"] is None


def test_options_reach_the_configs_under_old_and_new_names():
    """Old names stay aliases (--latents, --prefixes, --hookpoint); tuples, booleans and clashing names parse."""
    from saekit import cli

    args = build_parser().parse_args(
        ["train", "--latents", "64", "--prefixes", "16", "32", "--no-normalize", "--harvest-batch-size", "8",
         "--batch-size", "256", "--dtype", "bfloat16", "--harvest-dtype", "float32"]
    )
    sae_kw, train_kw, harvest_kw = (cli.config_kwargs(args, s) for s in cli.TRAIN)
    assert sae_kw["n_latents"] == 64 and sae_kw["matryoshka_prefixes"] == (16, 32) and sae_kw["dtype"] == "bfloat16"
    assert train_kw["normalize"] is False and train_kw["batch_size"] == 256
    assert harvest_kw["batch_size"] == 8 and harvest_kw["dtype"] == "float32"
    args = build_parser().parse_args(["train", "--n-latents", "32", "--matryoshka-prefixes", "8"])
    assert (args.n_latents, args.matryoshka_prefixes) == (32, [8])
    args = build_parser().parse_args(["harvest", "--out", "x", "--hookpoint", "resid_post.0", "mlp_out.1"])
    assert cli.config_kwargs(args, cli.HARVEST[0])["hookpoints"] == ("resid_post.0", "mlp_out.1")


def test_train_help_lists_every_architecture_of_the_registry(capsys):
    """--architecture's choices are the SAE registry, including an architecture registered after import."""
    from saekit import Sae

    class _ToySae(Sae, architecture="toy_registered_in_a_test"):
        pass

    try:
        with pytest.raises(SystemExit):
            main(["train", "--help"])
        out = capsys.readouterr().out
        action = next(a for a in _subparser("train")._actions if a.dest == "architecture")
    finally:
        del Sae.registry["toy_registered_in_a_test"]
    assert set(action.choices) == set(Sae.registry) | {"toy_registered_in_a_test"}
    for name in action.choices:
        assert name in out


def test_a_field_type_the_cli_cannot_take_is_named():
    """A new config field of an unsupported type fails when the parser is built, naming the field."""
    import argparse
    from dataclasses import dataclass

    from saekit import cli

    @dataclass
    class Odd:
        mapping: dict[str, int] | None = None
        """A mapping."""

    with pytest.raises(TypeError, match="Odd.mapping"):
        cli.add_config_options(argparse.ArgumentParser(), cli.Section(Odd))
