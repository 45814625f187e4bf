"""Metrics: pure functions on known cases, and evaluate() splicing a perfect and a useless SAE."""

import math

import pytest
import torch

import saekit
from saekit import Sae, SaeConfig
from saekit.metrics import ce_loss_recovered, cosine_similarity, density_histogram, fvu, kl_divergence, l0
from tiny import tiny_model

TEXTS = [f"Paris is the capital of France. Line {i}: the cat sat on the mat. " * 2 for i in range(12)]


def test_fvu_of_perfect_and_mean_predictors():
    x = torch.randn(100, 8) + 5
    assert fvu(x, x) == 0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    assert cosine_similarity(x, 2 * x) == pytest.approx(1.0)


def test_l0_kl_and_recovered():
    lat = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    assert l0(lat) == 1.5
    logp = torch.log_softmax(torch.randn(4, 10), -1)
    assert torch.allclose(kl_divergence(logp, logp), torch.zeros(4), atol=1e-6)
    assert (kl_divergence(logp, torch.log_softmax(torch.randn(4, 10), -1)) > 0).all()
    assert ce_loss_recovered(2.0, 2.0, 10.0) == 1.0 and ce_loss_recovered(2.0, 10.0, 10.0) == 0.0
    assert math.isnan(ce_loss_recovered(2.0, 3.0, 2.0))


def test_density_histogram_counts_every_alive_latent():
    d = torch.tensor([0.0, 1e-3, 1e-3, 0.5, 1.0])
    h = density_histogram(d, bins=8)
    assert h["dead"] == 1 and sum(h["counts"]) == 4 and len(h["edges"]) == 9


def perfect_sae(d: int, hookpoint: str) -> Sae:
    """TopK with k = d over the directions +e_i and -e_i reconstructs every vector exactly."""
    sae = Sae(SaeConfig(d_in=d, n_latents=2 * d, k=d, hookpoint=hookpoint))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def model():
    return tiny_model("gemma3")


def test_evaluate_a_perfect_sae_recovers_everything(model):
    sae = perfect_sae(model.d_model, "resid_post.1")
    r = saekit.evaluate(model, sae, TEXTS, n_tokens=600, context_len=64, progress=False)
    assert r.fvu < 1e-9 and r.cosine_similarity == pytest.approx(1.0)
    assert r.ce_spliced == pytest.approx(r.ce_clean, abs=1e-5) and r.kl_divergence < 1e-6
    assert r.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert r.ce_zero_ablation != pytest.approx(r.ce_clean, abs=1e-3)
    assert r.n_tokens >= 600 and r.l0 <= model.d_model


def test_evaluate_a_random_sae_is_worse(model):
    sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=2, hookpoint="resid_post.1"), seed=5)
    r = saekit.evaluate(model, sae, TEXTS, n_tokens=600, context_len=64, progress=False)
    # FVU and KL, not CE-loss recovered: on a random tiny LM zero-ablation barely moves the CE (KL ~1e-2), so the
    # ratio's denominator is near 0 and its value says nothing (this SAE's splice even lowered the CE: ratio 2.35)
    assert r.fvu > 0.3 and r.kl_divergence > 1e-4
    assert r.l0 <= 2 and 0 <= r.dead_fraction <= 1 and r.density.shape == (64,)
    assert set(r.to_dict()) >= {"l0", "fvu", "explained_variance", "delta_lm_loss", "ce_loss_recovered", "kl_divergence"}
    assert "ce_loss_recovered" in r.table()


def test_evaluate_rejects_an_sae_of_another_width(model):
    sae = Sae(SaeConfig(d_in=model.d_model + 1, n_latents=64, k=2, hookpoint="resid_post.1"))
    with pytest.raises(ValueError, match="trained on another model"):
        saekit.evaluate(model, sae, TEXTS, n_tokens=100, progress=False)
    sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=2))
    with pytest.raises(ValueError, match="hookpoint="):
        saekit.evaluate(model, sae, TEXTS, n_tokens=100, progress=False)


RESIDUAL_ARCHS = {
    "topk": {},
    "batchtopk": {},
    "matryoshka": {"matryoshka_prefixes": (16, 64)},
    "relu": {},
    "jumprelu": {"target_l0": 4},
    "gated": {},
}


@pytest.mark.parametrize(
    "arch",
    RESIDUAL_ARCHS,
)
def test_evaluate_splices_the_saes_own_reconstruction(model, arch):
    """The spliced CE is the CE with the SAE's reconstruction (sae.encode/decode) put in at the kept positions."""
    from saekit.tokens import keep_mask

    sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, architecture=arch, hookpoint="resid_post.1", **RESIDUAL_ARCHS[arch]), seed=3)
    ctx = saekit.contexts(model, TEXTS, context_len=32, n_tokens=200)
    r = saekit.evaluate(model, sae, ctx, batch_size=len(ctx), progress=False)
    x = model.capture(ctx.input_ids, ["resid_post.1"], ctx.attention_mask)["resid_post.1"]
    keep = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    nll = model.token_nll(ctx.input_ids, ctx.attention_mask, edits={"resid_post.1": lambda a: torch.where(keep[..., None], x_hat, a)})
    score = ctx.attention_mask[:, 1:].bool()
    assert r.ce_spliced == pytest.approx(float(nll[score].mean()), rel=1e-5)
    assert r.n_tokens == int(keep.sum()) and r.ce_spliced != pytest.approx(r.ce_clean, abs=1e-6)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_evaluate_scores_a_transcoder_on_the_mlp_output_it_predicts(model, arch):
    """FVU of the prediction against mlp_out; CE with the prediction in place of the MLP's output; the
    zero-ablation baseline zeroes the MLP's output."""
    from saekit.metrics import fvu
    from saekit.tokens import keep_mask

    tc = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, architecture=arch, hookpoint="mlp_in.1",
                       target_hookpoint="mlp_out.1"), seed=3)
    ctx = saekit.contexts(model, TEXTS, context_len=32, n_tokens=200)
    r = saekit.evaluate(model, tc, ctx, batch_size=len(ctx), progress=False)
    acts = model.capture(ctx.input_ids, ["mlp_in.1", "mlp_out.1"], ctx.attention_mask)
    keep = keep_mask(ctx.input_ids, ctx.attention_mask, model.separator_id)
    with torch.no_grad():
        y_hat = tc.reconstruct(acts["mlp_in.1"])
    assert r.fvu == pytest.approx(float(fvu(acts["mlp_out.1"][keep], y_hat[keep])), rel=1e-4)
    score = ctx.attention_mask[:, 1:].bool()

    def ce(new):
        nll = model.token_nll(ctx.input_ids, ctx.attention_mask, edits={"mlp_out.1": lambda a: torch.where(keep[..., None], new, a)})
        return float(nll[score].mean())

    assert r.ce_spliced == pytest.approx(ce(y_hat), rel=1e-5)
    assert r.ce_zero_ablation == pytest.approx(ce(torch.zeros_like(y_hat)), rel=1e-5)
    assert r.n_tokens == int(keep.sum()) and 0 < r.l0 <= 4


def test_evaluate_at_another_hookpoint(model):
    """hookpoint= evaluates there, also for an SAE that records none, and leaves the SAE's config alone."""
    texts = TEXTS[:4]
    own = saekit.evaluate(model, Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, hookpoint="resid_post.1")), texts, n_tokens=200, progress=False)
    for hp in (None, "resid_post.0"):
        sae = Sae(SaeConfig(d_in=model.d_model, n_latents=64, k=4, hookpoint=hp))
        r = saekit.evaluate(model, sae, texts, hookpoint="resid_post.1", n_tokens=200, progress=False)
        assert r.to_dict() == own.to_dict() and sae.cfg.hookpoint == hp
