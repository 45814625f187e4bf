"""Gradient clipping on the papers' scale (`saekit.train.grad_clip`, `TrainConfig.max_grad_norm`)."""

import pytest
import torch

from saekit import Sae, SaeConfig, TrainConfig
from saekit.config import ConfigError
from saekit.metrics import total_variance
from saekit.train import Trainer, grad_clip


def _data(n: int = 4096, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(64, d, generator=g), dim=-1)
    codes = torch.rand(n, 64, generator=g) * (torch.rand(n, 64, generator=g) < 0.06)
    return 3.0 + codes @ dirs + 0.01 * torch.randn(n, d, generator=g)  # an offset, as real residual streams have


def _grads(sae: Sae, loss: torch.Tensor) -> list[torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in sae.parameters()]


@pytest.mark.parametrize("max_norm", [1e-3, 0.05, 1.0, 1e3])
def test_clip_on_fvu_scale_equals_the_papers_clip_of_the_summed_error(max_norm):
    """Clipping saekit's FVU gradient at max_norm gives the papers' clipped gradient (per-token summed squared error,
    clipped at max_norm by torch's own clip_grad_norm_) divided by the batch's variance per token: the same step
    direction, clipped on the same steps."""
    x = _data()[:512]
    sae = Sae(SaeConfig(d_in=16, n_latents=64, k=4), seed=0)
    sae.init_from_data(x)
    x_hat = sae.decode(sae.encode(x))
    err = (x - x_hat).pow(2)
    papers = _grads(sae, err.sum(-1).mean())
    for p, g in zip(sae.parameters(), papers):
        p.grad = g.clone()
    papers_norm = float(torch.nn.utils.clip_grad_norm_(list(sae.parameters()), max_norm))
    papers_clipped = [p.grad.clone() for p in sae.parameters()]

    x_hat = sae.decode(sae.encode(x))
    ours = _grads(sae, (x - x_hat).pow(2).sum() / total_variance(x))
    for p, g in zip(sae.parameters(), ours):
        p.grad = g
    norm = grad_clip.clip_(list(sae.parameters()), max_norm, x)
    per_token_var = float(total_variance(x)) / x.shape[0]
    assert float(norm) * per_token_var == pytest.approx(papers_norm, rel=1e-4)
    for p, want in zip(sae.parameters(), papers_clipped):
        torch.testing.assert_close(p.grad * per_token_var, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    assert (papers_norm > max_norm) == (max_norm in (1e-3, 0.05))  # both sides of the limit are exercised


def _train(arch: str, max_grad_norm, monkeypatch, **sae_kw) -> tuple[list[float], Sae]:
    seen = []
    real = grad_clip.clip_

    def spy(params, limit, target):
        seen.append(limit)
        return real(params, limit, target)

    monkeypatch.setattr(grad_clip, "clip_", spy)
    sae = Sae(SaeConfig(architecture=arch, d_in=16, n_latents=64, **sae_kw), seed=0)
    Trainer(sae, TrainConfig(tokens=256 * 6, batch_size=256, max_grad_norm=max_grad_norm, seed=0)).fit(_data(), progress=False)
    return seen, sae


def test_topk_clips_at_the_papers_1_by_default_and_0_turns_it_off(monkeypatch):
    seen, clipped = _train("topk", None, monkeypatch, k=4)
    assert seen == [1.0] * 6
    seen, unclipped = _train("topk", 0, monkeypatch, k=4)
    assert seen == []
    assert torch.equal(clipped.W_enc, unclipped.W_enc)  # this small data's gradients stay under the papers' 1
    _, tight = _train("topk", 1e-3, monkeypatch, k=4)
    assert not torch.equal(tight.W_enc, unclipped.W_enc)  # a clip that engages changes the run


@pytest.mark.parametrize("arch,kw", [("batchtopk", dict(k=4)), ("jumprelu", dict(target_l0=4))])
def test_batchtopk_and_jumprelu_clip_as_topk_does(arch, kw, monkeypatch):
    seen, _ = _train(arch, None, monkeypatch, **kw)
    assert seen == [1.0] * 6
    seen, _ = _train(arch, 0, monkeypatch, **kw)
    assert seen == []


@pytest.mark.parametrize("arch,kw", [("matryoshka", dict(k=4, matryoshka_prefixes=(16,))), ("gated", dict(target_l0=4)),
                                     ("relu", dict(target_l0=4)), ("batchtopk", dict(k=4, relative_selection=True))])
def test_the_other_architectures_keep_their_recipes_unclipped_unless_asked(arch, kw, monkeypatch):
    seen, _ = _train(arch, None, monkeypatch, **kw)
    assert seen == []
    seen, _ = _train(arch, 0.5, monkeypatch, **kw)
    assert seen == [0.5] * 6


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_max_grad_norm_is_validated(bad):
    with pytest.raises(ConfigError, match="max_grad_norm"):
        TrainConfig(tokens=8192, max_grad_norm=bad)
