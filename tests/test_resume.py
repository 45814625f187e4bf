"""Exact resume: N steps in one go equal N/2 steps, a checkpoint, a fresh Trainer from it and N/2 more,
for every architecture together (weights, Adam state, schedule, RNG for resampling, data position),
from the on-disk cache and from a stream; and checkpoints survive a crash mid-write."""

from __future__ import annotations

import shutil

import pytest
import torch

from saekit import ActivationCache, Sae, SaeConfig, ShuffleBuffer, TrainConfig, Trainer
from saekit.train import STATE_JSON, TrainingError

D, F = 16, 64
STEPS, BATCH = 24, 128


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def configs() -> list[SaeConfig]:
    common = dict(d_in=D, n_latents=F, k=4, hookpoint="a")
    return [
        SaeConfig(**common),
        SaeConfig(**common, architecture="batchtopk"),
        SaeConfig(**common, architecture="matryoshka", matryoshka_prefixes=(16,)),
        SaeConfig(**common, architecture="jumprelu", target_l0=4),
        SaeConfig(**common, architecture="gated"),
        # resampling every 5 steps draws from the trainer's generator: resume must restore it
        SaeConfig(**common, architecture="relu", l1_coefficient=100.0, resample_every=4),
        SaeConfig(**common, architecture="skip_transcoder", target_hookpoint="b"),
    ]


def train_cfg() -> TrainConfig:
    return TrainConfig(tokens=STEPS * BATCH, batch_size=BATCH, log_every=2, warmup_steps=3, dead_tokens=2 * BATCH, seed=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> ActivationCache:
    """An on-disk cache with two hook points of the same tokens (2.5 epochs of data for the run)."""
    g = torch.Generator().manual_seed(0)
    n = 10 * BATCH
    a = torch.randn(n, D, generator=g).abs() * torch.rand(n, D, generator=g).lt(0.2) @ torch.randn(D, D, generator=g)
    b = torch.tanh(a) @ torch.randn(D, D, generator=g)
    c = ActivationCache.create(tmp_path_factory.mktemp("cache"), ["a", "b"], {"a": D, "b": D}, {"model": "toy"})
    c.append({"a": a[: n // 2], "b": b[: n // 2]}, {}, contexts_done=1)
    c.append({"a": a[n // 2 :], "b": b[n // 2 :]}, {}, contexts_done=2)
    return ActivationCache.open(c.path)


def fresh() -> Trainer:
    return Trainer([Sae(c, seed=i) for i, c in enumerate(configs())], train_cfg())


def losses(tr: Trainer) -> torch.Tensor:
    """[log entries, SAEs, (loss, fvu, l0)] of the training history."""
    return torch.tensor([[(s["loss"], s["fvu"], s["l0"]) for s in h["saes"]] for h in tr.history])


def assert_same_run(a: Trainer, b: Trainer) -> None:
    assert a.step == b.step == STEPS
    torch.testing.assert_close(losses(a), losses(b), rtol=1e-5, atol=1e-6)
    for sa, sb in zip(a.saes, b.saes):
        for (name, pa), pb in zip(sa.state_dict().items(), sb.state_dict().values()):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=f"{sa.architecture}.{name}")
    for xa, xb in zip(a.slots, b.slots):
        assert torch.equal(xa.tokens_since_fired, xb.tokens_since_fired)


def test_resume_from_cache_continues_the_same_run(cache, tmp_path):
    """Uninterrupted vs half + checkpoint + resume in a fresh Trainer + half: same losses and weights."""
    full = fresh().fit(cache, "a", progress=False)

    first = fresh()
    _fit_steps(first, cache, STEPS // 2)
    first.checkpoint(tmp_path / "ckpt")
    resumed = Trainer.resume(tmp_path / "ckpt")
    assert resumed.step == STEPS // 2
    resumed.fit(cache, "a", progress=False)
    assert_same_run(full, resumed)


def _fit_steps(tr: Trainer, data, n: int, hookpoint: str | None = "a") -> None:
    """Run the first n steps of the full run, then stop as a kill would (callbacks cannot stop fit, so raise)."""

    class Stop(Exception):
        pass

    def stop_at(entry):
        if entry["step"] >= n:
            raise Stop

    tr.callbacks.append(stop_at)
    with pytest.raises(Stop):
        tr.fit(data, hookpoint, progress=False)
    tr.callbacks.remove(stop_at)
    assert tr.step == n


def test_kill_and_resume_from_periodic_checkpoint(cache, tmp_path):
    """A run killed after a periodic checkpoint resumes from it and ends where an unkilled run ends."""
    full = fresh().fit(cache, "a", progress=False)
    cfg = TrainConfig(**{**train_cfg().to_dict(), "checkpoint_every": 4})
    killed = Trainer([Sae(c, seed=i) for i, c in enumerate(configs())], cfg)

    def kill(entry):
        if entry["step"] == 10:
            raise KeyboardInterrupt

    killed.callbacks.append(kill)
    with pytest.raises(KeyboardInterrupt):
        killed.fit(cache, "a", checkpoint_dir=tmp_path / "run", progress=False)
    resumed = Trainer.resume(tmp_path / "run")
    assert resumed.step == 8  # the last periodic checkpoint before the kill
    resumed.fit(cache, "a", checkpoint_dir=tmp_path / "run", progress=False)
    assert resumed.step == STEPS
    assert_same_run(full, resumed)


def test_resume_a_stream(cache, tmp_path):
    """A ShuffleBuffer rebuilt with the same chunks and seed replays the same batches after a resume."""
    a, b = cache.load("a"), cache.load("b")

    def stream():
        chunks = [(a[i : i + 200], b[i : i + 200]) for i in range(0, len(a), 200)] * 4
        return ShuffleBuffer(chunks, capacity=4 * BATCH, batch_size=BATCH, seed=5)

    full = fresh().fit(stream(), "a", progress=False)
    first = fresh()
    _fit_steps(first, stream(), STEPS // 2)
    first.checkpoint(tmp_path / "ckpt")
    resumed = Trainer.resume(tmp_path / "ckpt")
    resumed.fit(stream(), "a", progress=False)
    assert_same_run(full, resumed)


def test_checkpoint_survives_a_crash_between_renames(cache, tmp_path):
    """If a crash leaves only `ckpt.old` (and a half-written `ckpt.tmp`), resume uses the old checkpoint."""
    tr = fresh()
    _fit_steps(tr, cache, 4)
    tr.checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt.tmp").mkdir()  # a half-written newer checkpoint (no state json)
    shutil.move(tmp_path / "ckpt", tmp_path / "ckpt.old")
    resumed = Trainer.resume(tmp_path / "ckpt")
    assert resumed.step == 4
    resumed.checkpoint(tmp_path / "ckpt")  # the next checkpoint replaces the leftovers cleanly
    assert (tmp_path / "ckpt" / STATE_JSON).exists()
    assert not (tmp_path / "ckpt.tmp").exists() and not (tmp_path / "ckpt.old").exists()


def test_resume_refuses_a_folder_that_is_not_a_checkpoint(tmp_path):
    """Resuming from a wrong folder says where checkpoints come from."""
    with pytest.raises(TrainingError, match="Trainer.checkpoint"):
        Trainer.resume(tmp_path)


def test_resume_refuses_a_different_config(cache, tmp_path):
    """A changed TrainConfig would silently change the run: refuse it."""
    tr = fresh()
    _fit_steps(tr, cache, 2)
    tr.checkpoint(tmp_path / "ckpt")
    with pytest.raises(TrainingError, match="cfg=None"):
        Trainer.resume(tmp_path / "ckpt", TrainConfig(tokens=STEPS * BATCH, batch_size=BATCH))


def test_a_checkpoint_from_another_saekit_version_gives_a_training_error(cache, tmp_path):
    """An unknown TrainConfig field, a damaged state json or a missing tensors file: a TrainingError naming the file."""
    import json

    tr = fresh()
    _fit_steps(tr, cache, 2)
    tr.checkpoint(tmp_path / "ckpt")
    state_file = tmp_path / "ckpt" / STATE_JSON
    good = state_file.read_text()
    state = json.loads(good)
    state["cfg"]["from_the_future"] = 1
    state_file.write_text(json.dumps(state))
    with pytest.raises(TrainingError, match="from_the_future"):
        Trainer.resume(tmp_path / "ckpt")
    state_file.write_text(good[: len(good) // 2])
    with pytest.raises(TrainingError, match="damaged"):
        Trainer.resume(tmp_path / "ckpt")
    state_file.write_text(good)
    (tmp_path / "ckpt" / "trainer_state.safetensors").unlink()
    with pytest.raises(TrainingError, match="damaged"):
        Trainer.resume(tmp_path / "ckpt")


def test_resume_names_the_differing_fields(cache, tmp_path):
    tr = fresh()
    _fit_steps(tr, cache, 2)
    tr.checkpoint(tmp_path / "ckpt")
    with pytest.raises(TrainingError, match="log_every: 2 -> 10"):
        Trainer.resume(tmp_path / "ckpt", TrainConfig(**{**train_cfg().to_dict(), "log_every": 10}))


def test_resume_keeps_relu_budget_warmup_plan(cache, tmp_path, monkeypatch):
    """ReLU/L1's default TopK warm-up is planned from the run's steps (`ReluSae.plan`): a run stopped inside the
    warm-up and resumed keeps the plan (its buffer), hands over at the same step and ends at the same weights, even
    when resumed under a budget rule that would plan another warm-up."""
    from saekit.saes import ReluSae

    monkeypatch.setattr(ReluSae, "relu_phase_steps", STEPS // 2)  # warm-up 0.5 at this budget
    cfg = SaeConfig(d_in=D, n_latents=F, hookpoint="a", architecture="relu", target_l0=4)
    full = Trainer(Sae(cfg, seed=1), train_cfg()).fit(cache, "a", progress=False)
    assert full.sae.topk_warmup == 0.5 and float(full.sae.planned_topk_warmup) == 0.5 and bool(full.sae.handed_over)
    first = Trainer(Sae(cfg, seed=1), train_cfg())
    _fit_steps(first, cache, STEPS // 4)
    assert not bool(first.sae.handed_over)
    first.checkpoint(tmp_path / "ckpt")
    monkeypatch.setattr(ReluSae, "relu_phase_steps", STEPS // 4)  # the rule would now say 0.75
    resumed = Trainer.resume(tmp_path / "ckpt")
    resumed.fit(cache, "a", progress=False)
    assert resumed.sae.topk_warmup == 0.5
    assert_same_run(full, resumed)
