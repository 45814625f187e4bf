"""TopK SAE: sparse kernels equal the dense math, save/load, folding, SAELens file layout, bad input."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from saekit import ConfigError, Sae, SaeConfig
from saekit.saes.kernels import dense_decode, sparse_decode, topk_encode


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 9), D=st.integers(2, 12), F=st.integers(2, 40), seed=st.integers(0, 1000))
def test_sparse_kernels_match_dense_math_and_gradients(B, D, F, seed):
    g = torch.Generator().manual_seed(seed)
    k = max(1, F // 3)
    x = torch.randn(B, D, generator=g, dtype=torch.double, requires_grad=True)
    W_enc = torch.randn(F, D, generator=g, dtype=torch.double, requires_grad=True)
    b_enc = torch.randn(F, generator=g, dtype=torch.double, requires_grad=True)
    W_dec = torch.randn(F, D, generator=g, dtype=torch.double, requires_grad=True)
    acts, idx = topk_encode(x, W_enc, b_enc, k)
    out = sparse_decode(acts, idx, W_dec)
    # dense reference: full pre-activations, top k, ReLU, scatter, matmul
    pre = x @ W_enc.T + b_enc
    v, i = pre.topk(k, dim=-1)
    ref = torch.zeros_like(pre).scatter(-1, i, v.relu()) @ W_dec
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(dense_decode(acts, idx, W_dec), ref)
    w = torch.randn(B, D, generator=g, dtype=torch.double)
    grads = torch.autograd.grad((out * w).sum(), [x, W_enc, b_enc, W_dec])
    grads_ref = torch.autograd.grad((ref * w).sum(), [x, W_enc, b_enc, W_dec])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("F", [300, 4096])
def test_sparse_decode_gradient_equals_dense_in_float32_with_unsorted_indices(F):
    """The decoder's backward (a sampled product on the CPU, reading each code's indices in the order top-k
    left them) gives the dense product's gradients at a realistic shape."""
    g = torch.Generator().manual_seed(F)
    B, D, K = 257, 64, 32
    idx = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])  # distinct, unsorted per row
    acts = torch.rand(B, K, generator=g, requires_grad=True)
    W_dec = torch.randn(F, D, generator=g, requires_grad=True)
    w = torch.randn(B, D, generator=g)
    grads = torch.autograd.grad((sparse_decode(acts, idx, W_dec) * w).sum(), [acts, W_dec])
    grads_ref = torch.autograd.grad((dense_decode(acts, idx, W_dec) * w).sum(), [acts, W_dec])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_gradcheck_kernels():
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(*s, generator=g, dtype=torch.double, requires_grad=True) for s in [(5, 6), (20, 6), (20,), (20, 6)]]
    assert torch.autograd.gradcheck(lambda x, W, b, Wd: sparse_decode(*topk_encode(x, W, b, 3), Wd), args)


def _sae(**kw):
    cfg = SaeConfig(d_in=16, n_latents=64, k=4, hookpoint="resid_post.1", model_name="tiny", **kw)
    return Sae(cfg, seed=3)


def test_encode_has_exactly_k_active_latents_and_reconstruct_matches_decode():
    sae = _sae()
    x = torch.randn(10, 7, 16)
    lat = sae.encode(x)
    assert lat.shape == (10, 7, 64)
    assert ((lat > 0).sum(-1) <= 4).all() and ((lat != 0).sum(-1) >= 1).all()
    torch.testing.assert_close(sae.reconstruct(x), sae.decode(lat))


def test_forward_reports_fvu_l0_and_fired_latents():
    sae = _sae()
    x = torch.randn(32, 16)
    out = sae(x)
    assert out.x_hat.shape == x.shape and out.acts.shape == (32, 4)
    fired = torch.zeros(64, dtype=torch.bool)
    fired[out.indices[out.acts > 0]] = True
    assert torch.equal(out.fired, fired)
    assert 0 < out.fvu.item() and out.l0.item() <= 4
    # no dead mask: no AuxK term; the aux loss is the pre-activation loss (default 0.75, scaled by k / 16 = 4 / 16
    # below k 16): the mean over tokens and latents of relu(smallest kept activation - pre-activation), over d_in
    # times the per-coordinate std
    pre = torch.nn.functional.linear(x - sae.b_dec, sae.W_enc, sae.b_enc)
    theta = pre.topk(4, dim=-1).values[:, -1:].clamp_min(0)
    kept_positive = (pre.topk(4, dim=-1).values > 0).any(-1, keepdim=True)
    theta = torch.where(kept_positive, theta, torch.zeros_like(theta))
    tv = (x - x.mean(0)).pow(2).sum()
    torch.testing.assert_close(out.aux_loss, 0.75 * 4 / 16 * (theta - pre).relu().mean() / (16 * (tv / x.numel()).sqrt()))
    torch.testing.assert_close(out.loss, out.fvu + out.aux_loss)
    off = _sae(pre_act_coefficient=0.0)(x)
    assert torch.equal(off.loss, off.fvu)


@pytest.mark.parametrize("arch, default", [("topk", 0.75), ("batchtopk", 3.0), ("matryoshka", 3.0)])
def test_default_pre_act_coefficient_scales_with_k_below_16_and_given_values_are_kept(arch, default):
    def coefficient(k, **kw):
        extra = {"matryoshka_prefixes": (16, 64)} if arch == "matryoshka" else {}
        return Sae(SaeConfig(d_in=8, n_latents=128, k=k, architecture=arch, **extra, **kw)).pre_act_coefficient
    assert coefficient(4) == pytest.approx(default * 4 / 16)
    assert coefficient(16) == coefficient(64) == pytest.approx(default)
    assert coefficient(4, pre_act_coefficient=0.5) == 0.5
    if arch != "topk":
        relative = {"batchtopk": 1.0, "matryoshka": 0.75}[arch]
        assert coefficient(8, relative_selection=True) == pytest.approx(relative * 8 / 16)


def test_auxk_gives_dead_latents_a_gradient():
    sae = _sae()
    x = torch.randn(32, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:32] = True
    out = sae(x, dead_mask=dead)
    assert out.aux_loss.item() > 0
    out.loss.backward()
    assert sae.W_enc.grad[:32].abs().sum() > 0


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_absolute_batchtopk_warms_up_with_topks_coefficient(arch):
    """The absolute ranking's TopK warm-up (default 0.9 of training) takes TopK's default pre-activation coefficient
    and the batch phase its own; a given coefficient, and `relative_selection` (warm-up 0.5), keep one coefficient."""
    def sae(**kw):
        extra = {"matryoshka_prefixes": (16, 64)} if arch == "matryoshka" else {}
        return Sae(SaeConfig(d_in=8, n_latents=128, k=4, architecture=arch, **extra, **kw))
    s = sae()
    assert s.topk_warmup == 0.9 and s.initial_encoder_scale == 0.3
    assert s.pre_act_coefficient_for(True) == pytest.approx(0.75 * 4 / 16)
    assert s.pre_act_coefficient_for(False) == s.pre_act_coefficient > s.pre_act_coefficient_for(True)
    given = sae(pre_act_coefficient=2.0)
    assert given.pre_act_coefficient_for(True) == given.pre_act_coefficient_for(False) == 2.0
    rel = sae(relative_selection=True)
    assert rel.topk_warmup == 0.5 and rel.pre_act_coefficient_for(True) == rel.pre_act_coefficient_for(False)
    assert sae(topk_warmup=0.0).initial_encoder_scale == 0.1  # the paper's batch selection from the first step


def _auxk_by_hand(x_in, err, W_enc, b_enc, W_dec, dead, k_aux, tv):
    """Gao et al.'s AuxK written out: the k_aux largest dead pre-activations per row, ReLU'd, decoded, against err."""
    pre = x_in @ W_enc[dead].T + b_enc[dead]
    v, i = pre.topk(k_aux, dim=-1)
    return ((torch.zeros_like(pre).scatter(-1, i, v.relu()) @ W_dec[dead]) - err).pow(2).sum() / tv


def test_auxk_on_a_row_sample_keeps_its_scale():
    """AuxK is taken on an even sample of at most `auxk_rows` rows, its sum scaled by B / rows: a batch within the cap
    gives the full loss exactly; a batch of two copies of each row (so the stride-2 sample is one copy) gives the
    same loss as the full batch, and the gradient reaches only dead latents."""
    sae = _sae()
    sae.auxk_rows = 8
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.b_enc.normal_(generator=g)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    k_aux = sae.cfg.k_aux or sae.d_in // 2
    x_in, err = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    tv = torch.tensor(37.0)
    want = sae.cfg.auxk_alpha * min(int(dead.sum()) / k_aux, 1.0) * _auxk_by_hand(
        x_in, err, sae.W_enc, sae.b_enc, sae.W_dec, dead, k_aux, tv)
    torch.testing.assert_close(sae.dead_latent_loss(x_in, err, dead, tv), want)  # within the cap: every row
    doubled = sae.dead_latent_loss(x_in.repeat_interleave(2, 0), err.repeat_interleave(2, 0), dead, 2 * tv)
    torch.testing.assert_close(doubled, want)  # 16 rows, sampled 8: the sum over all 16 is twice the sample's
    doubled.backward()
    assert sae.W_enc.grad[~dead].abs().sum() == 0 and sae.W_enc.grad[dead].abs().sum() > 0


def test_save_load_round_trip_is_exact(tmp_path):
    sae = _sae()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    sae.save(tmp_path / "s")
    back = Sae.load(tmp_path / "s")
    assert type(back) is type(sae) and back.cfg == sae.cfg
    for k, v in sae.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    x = torch.randn(8, 16)
    assert torch.equal(back.encode(x), sae.encode(x))


def test_saved_folder_is_in_saelens_layout(tmp_path):
    """The exact mapping to SAELens 6 (cfg.json keys; tensors W_enc [D,F], W_dec [F,D], b_enc, b_dec) and its
    TopK formula: acts = ReLU(TopK((x - b_dec) @ W_enc + b_enc)), x_hat = acts @ W_dec + b_dec."""
    sae = _sae()
    with torch.no_grad():
        sae.b_dec.normal_()
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_in"] == 16 and cfg["d_sae"] == 64
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and cfg["metadata"]["saekit_hookpoint"] == "resid_post.1"
    assert cfg["metadata"]["sae_lens_version"].startswith("6.") and cfg["k"] == cfg["saekit"]["k"]
    sd = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    assert sd["W_enc"].shape == (16, 64) and sd["W_dec"].shape == (64, 16)
    assert sd["b_enc"].shape == (64,) and sd["b_dec"].shape == (16,)
    x = torch.randn(20, 16)
    hidden_pre = (x - sd["b_dec"]) @ sd["W_enc"] + sd["b_enc"]
    v, i = hidden_pre.topk(cfg["k"], dim=-1, sorted=False)
    acts = torch.zeros_like(hidden_pre).scatter(-1, i, v.relu())
    torch.testing.assert_close(acts, sae.encode(x))
    torch.testing.assert_close(acts @ sd["W_dec"] + sd["b_dec"], sae.reconstruct(x))


def test_folding_the_input_scale_reads_raw_activations():
    sae = _sae()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(30, 16) * 50
    s = 0.02
    lat_scaled = sae.encode(x * s)
    recon_scaled = sae.reconstruct(x * s)
    sae.fold_input_scale_(s)
    torch.testing.assert_close(sae.encode(x), lat_scaled / s, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sae.reconstruct(x), recon_scaled / s, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64))


def test_bad_configs_and_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="k=100 is larger than n_latents=64"):
        SaeConfig(d_in=16, n_latents=64, k=100)
    with pytest.raises(ConfigError, match="Unknown SAE architecture"):
        Sae(SaeConfig(d_in=16, n_latents=64, k=4, architecture="nope"))
    sae = _sae()
    with pytest.raises(ValueError, match="width 8 but this SAE reads width 16"):
        sae.encode(torch.randn(3, 8))
    with pytest.raises(ConfigError, match="cfg.json"):
        Sae.load(tmp_path)
    sae.save(tmp_path / "a")
    Sae(SaeConfig(d_in=16, n_latents=32, k=4)).save(tmp_path / "b")
    (tmp_path / "b" / "cfg.json").write_text((tmp_path / "a" / "cfg.json").read_text())
    with pytest.raises(ConfigError, match="do not match cfg.json"):
        Sae.load(tmp_path / "b")
