"""The training step's bookkeeping in forms that need no host synchronisation on a GPU equals the
readable forms (the CPU values must not change)."""

import torch

from saekit.train import fire_counts


def test_fire_counts_equal_bincount_of_active_indices():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 300, (512, 16), generator=g)
    acts = torch.randn(512, 16, generator=g).relu()
    assert torch.equal(fire_counts(acts, idx, 300), torch.bincount(idx[acts > 0], minlength=300))
    dense = torch.randn(64, 300, generator=g).relu()
    assert torch.equal(fire_counts(dense, torch.empty(0, dtype=torch.long), 300), (dense > 0).sum(0))


# -- the training step reads nothing back from the device between host reads (TrainConfig.sync_every) ----------

import collections  # noqa: E402

import pytest  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from saekit import Sae, SaeConfig, TrainConfig  # noqa: E402
from saekit.errors import TrainingError  # noqa: E402
from saekit.saes.base import dead_indices  # noqa: E402
from saekit.train import Trainer  # noqa: E402

READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default", "aten._unique2.default"}
"""Ops that make a GPU wait for the host: reading a value back (`.item()`, `bool()`, `float()`) or computing an output
whose shape depends on values (`nonzero`, and boolean indexing, counted by its index's dtype)."""


class _CountReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        bool_index = name.startswith(("aten.index.", "aten.index_put")) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())
        )  # a boolean mask as an index: nonzero inside the kernel, below this mode
        self.n += name in READS or bool_index
        return func(*args, **(kwargs or {}))


def _data(n: int = 256 * 24, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(64, d, generator=g), dim=-1)
    codes = torch.rand(n, 64, generator=g) * (torch.rand(n, 64, generator=g) < 0.06)
    return codes @ dirs + 0.01 * torch.randn(n, d, generator=g)


ARCHS = {
    "topk": dict(k=4),
    "batchtopk": dict(k=4),
    "matryoshka": dict(k=4, matryoshka_prefixes=(32, 128)),
    "jumprelu": dict(target_l0=4),
    "gated": dict(target_l0=4),
    "relu": dict(target_l0=4),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_training_steps_read_nothing_back_between_host_reads(arch, monkeypatch):
    """Forward, backward, Adam and the dead-latent / density bookkeeping of every step (Trainer._optimise and
    _track) run without one read from the device, in every phase of every architecture, with AuxK active; the
    only exception is BatchTopK's batch phase (and Matryoshka's, built on it), whose code is as wide as its busiest
    row: one count per step. The reads happen in `read_device_state`, every `sync_every` steps."""
    sae = Sae(SaeConfig(d_in=16, n_latents=256, architecture=arch, **ARCHS[arch]), seed=0)
    steps = 24
    cfg = TrainConfig(tokens=256 * steps, batch_size=256, log_every=1000, dead_tokens=512, sync_every=8)
    trainer = Trainer(sae, cfg)
    per_step: list[int] = []
    refreshed: list[int] = []
    dead_seen = []
    orig_opt, orig_track, orig_read = Trainer._optimise, Trainer._track, Trainer.read_device_state

    def optimise(self, slot, batch, factor):
        dead_seen.append(int(slot.dead_G.numel()))
        with _CountReads() as c:
            out = orig_opt(self, slot, batch, factor)
            orig_track(self, slot, out, batch[self.input_key])
        per_step.append(c.n)
        return out

    def read(self):
        refreshed.append(self.step)
        orig_read(self)

    monkeypatch.setattr(Trainer, "_optimise", optimise)
    monkeypatch.setattr(Trainer, "_track", lambda *a: None)
    monkeypatch.setattr(Trainer, "read_device_state", read)
    trainer.fit(_data(), progress=False)
    assert len(per_step) == steps and refreshed == [0, 8, 16]
    assert max(dead_seen) > 0, "AuxK never had a dead latent to train: the test would not exercise it"
    if arch in ("batchtopk", "matryoshka"):
        batch_phase = [not sae.per_token_selection(s / steps) for s in range(steps)]
        assert any(batch_phase) and not all(batch_phase)
        assert per_step == [int(b) for b in batch_phase]
    else:
        assert per_step == [0] * steps


def test_auxk_given_the_dead_latents_indices_equals_auxk_given_their_mask():
    """The Trainer's form of the dead set (indices, no read) gives the readable mask's loss and gradients."""
    x = _data(512)
    for arch in ("topk", "jumprelu"):
        sae = Sae(SaeConfig(d_in=16, n_latents=256, architecture=arch, **ARCHS[arch]), seed=0)
        sae.init_from_data(x)
        mask = torch.zeros(256, dtype=torch.bool)
        mask[torch.randperm(256, generator=torch.Generator().manual_seed(1))[:100]] = True
        results = []
        for dead in (mask, dead_indices(mask)):
            sae.zero_grad()
            out = sae(x, dead_mask=dead)
            out.loss.backward()
            results.append((out.aux_loss.detach(), [p.grad.clone() for p in sae.parameters() if p.grad is not None]))
        assert float(results[0][0]) > 0
        assert torch.equal(results[0][0], results[1][0])
        for a, b in zip(results[0][1], results[1][1]):
            assert torch.equal(a, b)
    assert dead_indices(None) is None and dead_indices(torch.zeros(4, dtype=torch.bool)) is None
    assert dead_indices(torch.empty(0, dtype=torch.long)) is None


def test_dead_set_read_every_n_steps_resumes_exactly(tmp_path):
    """A run stopped between two host reads resumes to the same weights: the AuxK set in force is checkpointed."""
    x = _data()
    cfg = TrainConfig(tokens=256 * 20, batch_size=256, log_every=3, dead_tokens=512, sync_every=4)

    def run(stop_at=None):
        t = Trainer(Sae(SaeConfig(d_in=16, n_latents=256, k=4), seed=0), cfg)
        if stop_at is not None:
            t.callbacks.append(lambda e: t.request_stop() if e["step"] == stop_at else None)
        return t.fit(x, progress=False)

    whole = run()
    part = run(stop_at=6)
    assert part.step == 6 and part.slots[0].dead_G.numel() > 0
    stale = part.slots[0].dead_G.clone()  # read at step 4, still in force at step 6
    part.checkpoint(tmp_path / "ckpt")
    resumed = Trainer.resume(tmp_path / "ckpt")
    assert torch.equal(resumed.slots[0].dead_G, stale)
    resumed.fit(x, progress=False)
    for (name, p), q in zip(whole.sae.state_dict().items(), resumed.sae.state_dict().values()):
        assert torch.equal(p, q), name


def test_a_bad_batch_already_on_the_device_is_named_at_the_next_host_read():
    """Batches that arrive on the device are checked for NaN/inf on the device and read back with the dead set
    (CPU batches are checked on the host as they come); the error names the first bad batch."""
    t = Trainer(Sae(SaeConfig(d_in=16, n_latents=64, k=4), seed=0), TrainConfig(tokens=2048, batch_size=256, sync_every=4))
    good, bad = torch.zeros(256, 16), torch.zeros(256, 16)
    bad[3, 2] = float("nan")
    for step, batch in enumerate([good, bad, good, bad]):
        t.step = step
        t.watch_finite("x", batch)
    t.step = 4
    with pytest.raises(TrainingError, match=r"batch 1 of 'x' contains NaN or inf.*3 step\(s\)"):
        t.check_device_batches()


def test_sync_every_resolves_per_device_and_is_validated():
    assert TrainConfig().sync_every_on(torch.device("cpu")) == 1
    assert TrainConfig(tokens=10**7).sync_every_on("cuda") == 32
    assert TrainConfig(tokens=10**7, dead_tokens=4096 * 5).sync_every_on("cuda") == 5  # no lag longer than dying takes
    assert TrainConfig(tokens=4096, dead_tokens=1).sync_every_on("cuda") == 1
    assert TrainConfig(sync_every=5).sync_every_on("cpu") == 5
    with pytest.raises(Exception, match="sync_every"):
        TrainConfig(sync_every=0)
