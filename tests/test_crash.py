"""Kill -9 at every moment that matters, rerun the same command, and get exactly the uninterrupted result.

`saekit harvest` and `saekit train` run as subprocesses on a tiny model folder; the environment variable
SAEKIT_TEST_KILL_AT=<point>[@N] makes the process SIGKILL itself the N-th time it reaches a crash point
(`saekit.durable.crash_point`). Each chain kills one run at each point in turn, every rerun resumes
from what the kill left, and the final files must equal those of a run that was never killed, bit for bit
(shard checksums, SAE weights file bytes). The README's RELIABILITY section lists the points.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import byte_tokenizer, tiny_hf_model

from saekit.cli import main
from saekit.saes.disk import WEIGHTS_FILES

TOKENS = 2048
BATCH = 256
STEPS = 40


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model folder, a text file and the reference (never killed) harvest and training run."""
    root = tmp_path_factory.mktemp("crash")
    tiny_hf_model("llama", n_layers=2).save_pretrained(root / "model")
    byte_tokenizer().save_pretrained(root / "model")
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    text = " ".join(f"{words[i % 10]}{i % 7} {words[(i * 3) % 10]}" for i in range(1500))
    (root / "text.txt").write_text(text)
    w = {"root": root, "model": root / "model", "text": root / "text.txt"}
    r = cli(w, harvest_args(w, root / "ref_cache"))
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli(w, train_args(w, root / "ref_run", cache=root / "ref_cache"))
    assert r.returncode == 0, r.stderr[-3000:]
    return w


def cli(w, args, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("SAEKIT_TEST_KILL_AT", None)
    if kill_at:
        env["SAEKIT_TEST_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "saekit.cli", *args], capture_output=True, text=True, timeout=300, env=env)


def killed(w, args, point: str) -> subprocess.CompletedProcess:
    r = cli(w, args, kill_at=point)
    assert r.returncode == -signal.SIGKILL, f"{point} was never reached (exit {r.returncode}): {r.stderr[-3000:]}"
    return r


def harvest_args(w, out: Path) -> list[str]:
    return ["harvest", "--model", str(w["model"]), "--hookpoint", "resid_post.1", "--tokens", str(TOKENS),
            "--shard-tokens", "512", "--batch-size", "2", "--context-len", "64", "--text", str(w["text"]), "--out", str(out)]


def train_args(w, out: Path, cache: Path | None = None, *extra: str) -> list[str]:
    args = ["train", "--model", str(w["model"]), "--hookpoint", "resid_post.1", "--latents", "64", "--k", "4",
            "--tokens", str(BATCH * STEPS), "--harvest-tokens", str(TOKENS), "--batch-size", str(BATCH),
            "--checkpoint-every", "5", "--eval-tokens", "0", "--shard-tokens", "512", "--harvest-batch-size", "2",
            "--context-len", "64", "--text", str(w["text"]), "--out", str(out)]
    return args + (["--cache", str(cache)] if cache else []) + list(extra)


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def assert_same_cache(a: Path, b: Path) -> None:
    ma, mb = manifest(a), manifest(b)
    assert ma["shards"] == mb["shards"]  # rows, context spans and sha256 of every shard
    assert ma["info"] == mb["info"] and ma["hookpoints"] == mb["hookpoints"]
    for s in ma["shards"]:
        assert (a / s["file"]).read_bytes() == (b / s["file"]).read_bytes()


def weights(run: Path) -> bytes:
    return next(run / n for n in WEIGHTS_FILES if (run / n).exists()).read_bytes()


def assert_same_sae(a: Path, b: Path) -> None:
    assert weights(a) == weights(b), "the resumed SAE differs from the uninterrupted one"
    assert json.loads((a / "cfg.json").read_text()) == json.loads((b / "cfg.json").read_text())


def resumed_step(r: subprocess.CompletedProcess) -> int | None:
    m = re.search(r"resuming the interrupted run in \S+ at step (\d+)", r.stdout)
    return int(m.group(1)) if m else None


def test_harvest_killed_between_and_inside_shards_resumes_to_the_same_cache(world):
    """Kills mid-shard (file in place, manifest not yet), inside the shard write, and between shards lose nothing."""
    out = world["root"] / "h_chain"
    args = harvest_args(world, out)
    killed(world, args, "cache.before_manifest@2")  # the second shard is on disk, the manifest lists one
    assert len(manifest(out)["shards"]) == 1
    killed(world, args, "save_tensors.before_rename@1")  # inside the next shard's write: a temp file only
    assert len(manifest(out)["shards"]) == 1
    killed(world, args, "cache.after_shard@1")  # between shards
    assert len(manifest(out)["shards"]) == 2
    r = cli(world, args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_cache(out, world["root"] / "ref_cache")


def test_train_killed_during_its_harvest_resumes_the_harvest_to_the_requested_size(world):
    """A harvest killed before its first shard, then after one shard, is finished by the rerun (not trained on)."""
    out = world["root"] / "t_harvest"
    args = train_args(world, out)
    killed(world, args, "cache.before_manifest@1")  # no finished shard: the manifest lists none
    assert manifest(out / "activations")["shards"] == []
    killed(world, args, "cache.after_shard@1")  # a quarter of the requested tokens
    assert len(manifest(out / "activations")["shards"]) == 1
    r = cli(world, args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming the interrupted harvest" in r.stdout
    assert_same_cache(out / "activations", world["root"] / "ref_cache")
    assert_same_sae(out, world["root"] / "ref_run")


def test_train_killed_at_every_phase_resumes_to_the_same_sae(world):
    """Between steps, in each phase of a checkpoint write, while saving and while cleaning up: nothing is lost."""
    out = world["root"] / "t_chain"
    ckpt, old = out / "checkpoint", out / "checkpoint.old"
    args = train_args(world, out, world["root"] / "ref_cache")

    killed(world, args, "train.after_step@3")  # before the first checkpoint
    assert not ckpt.exists()
    r = killed(world, args, "train.after_step@12")  # a fresh start; checkpoints at steps 5 and 10
    assert resumed_step(r) is None
    killed(world, args, "checkpoint.before_state@1")  # writing step 15: SAEs and tensors in checkpoint.tmp
    killed(world, args, "checkpoint.before_first_rename@1")  # checkpoint.tmp complete, not swapped in
    r = killed(world, args, "checkpoint.after_first_rename@1")  # the defect: only checkpoint.old is left
    assert resumed_step(r) == 10
    assert not ckpt.exists() and (old / "trainer_state.json").exists()

    changed = cli(world, train_args(world, out, world["root"] / "ref_cache", "--k", "8"))
    assert changed.returncode == 2 and "SaeConfig.k: 4 -> 8" in changed.stderr and "--overwrite" in changed.stderr
    assert (old / "trainer_state.json").exists()  # the refusal touched nothing

    r = killed(world, args, "checkpoint.after_second_rename@1")  # resumed from checkpoint.old; step 15 in place
    assert resumed_step(r) == 10
    r = cli(world, args)  # finishes from step 15
    assert r.returncode == 0, r.stderr[-3000:]
    assert resumed_step(r) == 15 and not ckpt.exists() and not old.exists()
    assert_same_sae(out, world["root"] / "ref_run")
    # tokens/s counts this process's steps only: (40 - 15) steps * 256 over "train s"
    rate = float(re.search(r"train tokens/s\s+(\S+)", r.stdout).group(1))
    secs = float(re.search(r"train s\s+(\S+)", r.stdout).group(1))
    assert rate * max(secs, 0.05) < 1.6 * (STEPS - 15) * BATCH

    again = cli(world, args)  # a finished run says so and changes nothing
    assert again.returncode == 0 and "already holds this finished run" in again.stdout
    assert_same_sae(out, world["root"] / "ref_run")

    # the end of a run: kill while saving the SAE, after saving it, and while deleting the checkpoint
    # Sae.save runs for checkpoints too: 8 periodic ones and the final one come first, the SAE itself is the 10th
    r = killed(world, args + ["--overwrite"], "sae.save.after_weights@10")
    assert resumed_step(r) is None and (ckpt / "trainer_state.json").exists() and not (out / "cfg.json").exists()
    r = killed(world, args, "cli.after_save@1")
    assert resumed_step(r) == STEPS
    killed(world, args, "remove_tree.after_rename@1")  # the checkpoint is renamed away, not yet deleted
    assert not ckpt.exists() and list(out.glob(".checkpoint.deleting-*")), list(out.iterdir())
    r = cli(world, args)
    assert r.returncode == 0 and "already holds this finished run" in r.stdout, r.stderr[-3000:]
    assert not list(out.glob(".checkpoint*")) and not ckpt.exists()
    assert_same_sae(out, world["root"] / "ref_run")


def test_a_cache_of_other_settings_is_refused_naming_the_setting(world, tmp_path, capsys):
    base = train_args(world, tmp_path / "run", world["root"] / "ref_cache")
    code = main([a if a != "64" or base[i - 1] != "--context-len" else "32" for i, a in enumerate(base)])
    assert code == 2 and "context_len: 64 -> 32" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text("completely different words " * 200)
    code = main([str(other) if a == str(world["text"]) else a for a in base])
    assert code == 2 and "the text" in capsys.readouterr().err
    code = main(base + ["--harvest-dtype", "bfloat16"])
    assert code == 2 and "dtype: 'float32' -> 'bfloat16'" in capsys.readouterr().err
    code = main([str(TOKENS * 2) if a == str(TOKENS) else a for a in base])
    assert code == 2 and "fewer than the 4096 asked for" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint").exists()
