"""The TopK training loop on synthetic activations: it learns, folds, checkpoints, and rejects bad data."""

import math

import pytest
import torch

from saekit import ActivationCache, ConfigError, Sae, SaeConfig, Trainer, TrainConfig, train
from saekit.metrics import fvu
from saekit.train import TrainingError, lr_factor


def sparse_data(n=8192, d=32, n_feat=96, k=3, offset=20.0, seed=0):
    """Activations made of a few of many unit directions, plus a large common offset (as in real residuals)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_feat, d, generator=g)
    dirs /= dirs.norm(dim=-1, keepdim=True)
    idx = torch.rand(n, n_feat, generator=g).topk(k, dim=-1).indices
    coef = torch.rand(n, k, generator=g) * 3 + 0.5
    x = (coef[..., None] * dirs[idx]).sum(1)
    return x + offset * torch.randn(d, generator=g) / math.sqrt(d) * 3


def test_fvu_falls_as_tokens_grow():
    everything = sparse_data(n=10240)
    x, held = everything[:8192], everything[8192:]
    results = []
    for tokens in (2048, 16384, 65536):
        sae = train(x, cfg=TrainConfig(tokens=tokens, batch_size=512, seed=0), n_latents=128, k=4, progress=False)
        results.append(fvu(held, sae.reconstruct(held)))
    assert results[0] > results[1] > results[2]
    assert results[2] < 0.2


def test_trained_sae_reads_raw_units_after_fold():
    x = sparse_data() * 100  # far from unit scale: normalisation must be folded back
    sae = train(x, cfg=TrainConfig(tokens=32768, batch_size=512), n_latents=128, k=4, progress=False)
    assert fvu(x[:2048], sae.reconstruct(x[:2048])) < 0.3
    assert (sae.encode(x[:100]) > 0).sum(-1).eq(4).float().mean() > 0.9


def test_b_dec_starts_at_the_data_median():
    x = sparse_data(offset=50.0)
    sae = Sae(SaeConfig(d_in=32, n_latents=64, k=4))
    t = Trainer(sae, TrainConfig(tokens=512, batch_size=512))
    t.fit(x, progress=False)
    median = x.median(0).values * t.scale
    assert (sae.b_dec - median).norm() < 0.2 * median.norm()


def test_many_saes_from_one_pass():
    x = sparse_data()
    saes = train(x, [SaeConfig(d_in=32, n_latents=n, k=4) for n in (64, 128)], TrainConfig(tokens=8192, batch_size=512), progress=False)
    assert [s.n_latents for s in saes] == [64, 128]
    assert all(fvu(x[:1024], s.reconstruct(x[:1024])) < 0.6 for s in saes)


def test_history_records_metrics_as_plain_data():
    t = Trainer(Sae(SaeConfig(d_in=32, n_latents=64, k=4)), TrainConfig(tokens=8192, batch_size=512, log_every=4))
    seen = []
    t.callbacks.append(seen.append)
    t.fit(sparse_data(), progress=False)
    assert [h["step"] for h in t.history] == [4, 8, 12, 16] and seen == t.history
    entry = t.history[-1]["saes"][0]
    assert set(entry) >= {"loss", "fvu", "l0", "dead_fraction"} and entry["l0"] <= 4


def test_cache_and_tensor_inputs_train_identically(tmp_path):
    x = sparse_data(n=4096)
    cache = ActivationCache.create(tmp_path / "c", ["h"], {"h": 32}, {})
    cache.append({"h": x}, {}, contexts_done=1)
    a = train(ActivationCache.open(tmp_path / "c"), cfg=TrainConfig(tokens=4096, batch_size=512), n_latents=64, k=4, progress=False)
    b = train(x, cfg=TrainConfig(tokens=4096, batch_size=512), n_latents=64, k=4, progress=False)
    torch.testing.assert_close(a.W_enc, b.W_enc)


def test_checkpoint_then_resume_finishes_the_run(tmp_path):
    x = sparse_data(n=4096)
    cfg = TrainConfig(tokens=8192, batch_size=512)
    t = Trainer(Sae(SaeConfig(d_in=32, n_latents=64, k=4)), cfg)
    cfg_half = TrainConfig(tokens=4096, batch_size=512)
    t.cfg = cfg_half
    t.fit(x, progress=False)
    t.cfg = cfg
    t.checkpoint(tmp_path / "ckpt")
    r = Trainer.resume(tmp_path / "ckpt")
    assert r.step == 8 and r.scale == t.scale
    r.fit(x, progress=False)
    assert r.step == 16


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_activations_are_rejected_before_training(bad):
    x = sparse_data(n=1024)
    x[5, 3] = bad
    with pytest.raises(TrainingError, match="NaN or inf"):
        train(x, cfg=TrainConfig(tokens=1024, batch_size=512), n_latents=64, k=4, progress=False)


def test_budget_smaller_than_a_batch_and_width_mismatch():
    with pytest.raises(ConfigError, match="smaller than one batch"):
        TrainConfig(tokens=100, batch_size=512)
    t = Trainer(Sae(SaeConfig(d_in=16, n_latents=64, k=4)), TrainConfig(tokens=512, batch_size=512))
    with pytest.raises(TrainingError, match="d_in=32"):
        t.fit(sparse_data(n=1024), progress=False)
    with pytest.raises(TrainingError, match="fewer than one batch"):
        train(sparse_data(n=100), cfg=TrainConfig(tokens=1024, batch_size=512), n_latents=64, k=4, progress=False)


def test_lr_schedule_warms_up_and_decays_to_zero():
    f = [lr_factor(s, 100, 5, 0.8) for s in range(100)]
    assert f[0] == pytest.approx(0.2) and f[4] == 1.0 and f[50] == 1.0
    assert all(a >= b for a, b in zip(f[80:], f[81:])) and f[99] < 0.06


def test_the_trainer_steps_with_fused_adam_and_it_follows_plain_adam(monkeypatch):
    """The trainer's optimiser is torch's fused Adam (one kernel per step). Two claims, checked apart:
    - fused Adam, with exactly the settings the trainer passes, takes plain per-tensor Adam's steps to float32
      rounding over 200 steps of identical SAE-shaped gradients (sparse decoder rows, as TopK gives, and scales from
      1e-6 to 1e2). The gradients do not depend on the weights, so no difference can be amplified;
    - a short end-to-end run with each ends at the same weights. End to end is kept to 10 steps on purpose: TopK's
      selection is discontinuous, so once rounding flips one near-tie the two runs legitimately part (measured on an
      AMD EPYC: equal to 5e-7 at 10 and 20 steps, then 3e-3 in 31 of 128 decoder rows at 40)."""
    real_adam = torch.optim.Adam
    seen = []

    def recording_adam(params, **kw):
        seen.append(dict(kw))
        return real_adam(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", recording_adam)
    x = sparse_data(n=4096)
    cfg = TrainConfig(tokens=10 * 256, batch_size=256, seed=0)
    fused = train(x, cfg=cfg, n_latents=128, k=4, progress=False)
    assert len(seen) == 1 and seen[0]["fused"] is True
    settings = {k: v for k, v in seen[0].items() if k != "fused"}

    def plain_adam(params, **kw):
        kw.pop("fused")
        return real_adam(params, foreach=False, **kw)

    monkeypatch.setattr(torch.optim, "Adam", plain_adam)
    plain = train(x, cfg=cfg, n_latents=128, k=4, progress=False)
    for name, p in fused.state_dict().items():
        torch.testing.assert_close(p, plain.state_dict()[name], rtol=1e-5, atol=1e-5, msg=name)

    g = torch.Generator().manual_seed(0)
    shapes = {"W_enc": (32, 128), "W_dec": (128, 32), "b_enc": (128,), "b_dec": (32,)}
    start = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    a = [start[n].clone().requires_grad_() for n in shapes]
    b = [start[n].clone().requires_grad_() for n in shapes]
    opt_a = real_adam(a, fused=True, **settings)
    opt_b = real_adam(b, foreach=False, **settings)
    for step in range(200):
        scale = 10.0 ** (step % 9 - 6)
        for pa, pb, (n, s) in zip(a, b, shapes.items()):
            grad = torch.randn(s, generator=g) * scale
            if n == "W_dec":  # TopK leaves most decoder rows without a gradient on a step
                grad *= (torch.rand(s[0], 1, generator=g) < 0.1).float()
            pa.grad, pb.grad = grad.clone(), grad.clone()
        opt_a.step()
        opt_b.step()
    assert not torch.equal(a[0], start["W_enc"])  # the steps moved the weights
    for pa, pb, n in zip(a, b, shapes):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=n)
