"""Integration on the real default model, Gemma 3 270M (offline registry package): harvest, train, evaluate."""

import pytest
import torch

import saekit
from saekit import Sae, TrainConfig
from saekit.metrics import fvu

pytestmark = pytest.mark.real_model


def test_default_model_is_gemma_3_270m(real_model):
    assert (real_model.n_layers, real_model.d_model) == (18, 640)
    assert real_model.hf_model.config.vocab_size == 262144
    assert real_model.default_hookpoint() == "resid_post.6"
    assert real_model.bos_token_id == 2


def test_harvested_activations_equal_output_hidden_states(real_model, real_cache):
    ctx = saekit.contexts(real_model, saekit.corpus(), context_len=128, n_contexts=2)
    with torch.inference_mode():
        hs = real_model.hf_model(ctx.input_ids, attention_mask=ctx.attention_mask, output_hidden_states=True).hidden_states
    got = real_model.capture(ctx.input_ids, ["resid_post.6"], attention_mask=ctx.attention_mask)["resid_post.6"]
    torch.testing.assert_close(got, hs[7])
    # the cache rows are those activations at non-BOS, non-pad positions (harvested in another batch
    # composition, so equal up to float32 rounding: relative error per vector ~1e-7, bounded at 1e-5)
    rows = real_cache.load()[: int(ctx.attention_mask[0].sum()) - 1]
    ref = hs[7][0, 1 : 1 + rows.shape[0]]
    assert ((rows - ref).norm(dim=-1) / ref.norm(dim=-1)).max() < 1e-5
    assert torch.isfinite(real_cache.load()).all() and real_cache.n_tokens == 20_480


def test_short_training_run_learns_and_splices(real_model, real_cache, tmp_path):
    held = saekit.harvest(real_model, hookpoints="resid_post.6", n_tokens=2048, split="test", progress=False).load()
    fvus = []
    for tokens in (8192, 61440):
        sae = saekit.train(real_cache, cfg=TrainConfig(tokens=tokens, batch_size=2048), n_latents=1024, k=16, progress=False)
        lat = sae.encode(held)
        assert ((lat > 0).sum(-1) == 16).float().mean() > 0.99  # L0 = k
        fvus.append(fvu(held, sae.decode(lat)))
    assert fvus[1] < fvus[0] and fvus[1] < 0.5, fvus
    r = saekit.evaluate(real_model, sae, n_tokens=384, progress=False)
    assert r.ce_loss_recovered > 0.5 and r.l0 == pytest.approx(16, abs=0.5)
    assert r.ce_spliced < r.ce_zero_ablation
    sae.save(tmp_path / "l6")
    back = Sae.load(tmp_path / "l6")
    assert back.cfg.hookpoint == "resid_post.6" and back.cfg.model_name == "gemma-3-270m"
    assert torch.equal(back.encode(held[:64]), sae.encode(held[:64]))
    for k, v in sae.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
