"""The training step's fast paths against their readable references: selection in bfloat16 (`SaeConfig.selection_dtype`)
with exact values, and the pre-activation loss on the encoder's own rows (`pre_act.rows_penalty`)."""

import pytest
import torch

from saekit import ConfigError, Sae, SaeConfig, TrainConfig, Trainer
from saekit.metrics import fvu
from saekit.saes.kernels import topk_encode, topk_encode_train
from saekit.saes.pre_act import penalty_scale, pre_act_penalty, rows_penalty, sample_rows
from saekit.synthetic import SyntheticDictionary, recovery

VARIANTS = [("topk", {}), ("batchtopk", {}), ("batchtopk", {"relative_selection": True}),
            ("matryoshka", {"matryoshka_prefixes": (64, 256)})]


def _sae(arch, extra, selection="float32", F=1024, k=8, d=32, **kw):
    return Sae(SaeConfig(d_in=d, n_latents=F, architecture=arch, k=k, selection_dtype=selection, **extra, **kw), seed=1)


def test_bf16_selection_keeps_exact_values_and_near_top_latents():
    """Chosen on a bfloat16 product, the kept values are the float32 pre-activations of the chosen latents, and a
    latent is only ever swapped for one within bfloat16 rounding of the k-th largest."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 64, generator=g)
    W = torch.randn(2048, 64, generator=g) / 8
    b = torch.randn(2048, generator=g) / 10
    acts, idx, _ = topk_encode_train(x, W, b, 16, torch.bfloat16)
    pre = x @ W.t() + b
    torch.testing.assert_close(acts, pre.gather(1, idx).relu(), rtol=1e-6, atol=1e-6)
    ref_acts, ref_idx = topk_encode(x, W, b, 16)
    kth = pre.topk(16, dim=-1).values[:, -1:]
    chosen = pre.gather(1, idx)
    slack = 2 * 2.0**-8 * pre.abs().amax(-1, keepdim=True)  # two bfloat16 roundings of the largest magnitude
    assert (chosen >= kth - slack).all()
    same = (idx.sort(-1).values == ref_idx.sort(-1).values).all(-1).float().mean()
    assert same > 0.5  # most rows choose exactly the float32 set


@pytest.mark.parametrize("arch, extra", VARIANTS)
def test_bf16_selection_gradients_equal_the_float32_path_on_the_same_code(arch, extra):
    """Given the same chosen latents, the step's loss and every gradient equal the float32 path's."""
    fast, ref = _sae(arch, extra, "bfloat16", pre_act_coefficient=0.0), _sae(arch, extra, "float32", pre_act_coefficient=0.0)
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(2)) * 2 + 1
    out = fast(x)
    out.fvu.backward()  # (Matryoshka's loss adds its nested terms; the code's gradient is in the FVU's)
    # the reference: the float32 path forced onto the fast path's indices (a dense mask of the same latents)
    x_in = x - ref.b_dec
    pre = x_in @ ref.W_enc.t() + ref.b_enc
    keep = torch.zeros_like(pre, dtype=torch.bool).scatter(1, out.indices, out.acts.detach() > 0)
    x_hat = (pre.relu() * keep) @ ref.W_dec + ref.b_dec
    ref_loss = fvu(x, x_hat)
    ref_loss.backward()
    torch.testing.assert_close(out.fvu, ref_loss)
    for a, b in zip(fast.parameters(), ref.parameters()):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch, extra", VARIANTS)
def test_pre_act_loss_on_the_encoders_rows_equals_the_recomputed_one(arch, extra):
    """`rows_penalty` (no product of its own) gives the readable path's value and gradients, including the
    gradient a per-token threshold carries to b_dec under relative selection."""
    sae = _sae(arch, extra, "float32", k=4, pre_act_coefficient=2.0)
    x = torch.randn(1024, 32, generator=torch.Generator().manual_seed(3)) * 3 + 1
    tv = (x - x.mean(0)).pow(2).sum()

    def loss_and_grads(fused: bool):
        sae.zero_grad()
        x_in = x - sae.b_dec
        acts, _, pre_RF = sae._encode_train(x_in, sae.pre_act_rows(x.shape[0]))
        loss = sae.pre_act_loss(x_in, acts, tv, pre_RF if fused else None)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.b_dec)]

    (fused_loss, fused_grads), (ref_loss, ref_grads) = loss_and_grads(True), loss_and_grads(False)
    assert fused_loss > 0
    torch.testing.assert_close(fused_loss, ref_loss)
    for a, b in zip(fused_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


def test_rows_penalty_matches_pre_act_penalty_with_bf16_products():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 48, generator=g, requires_grad=True)
    W = torch.randn(700, 48, generator=g, requires_grad=True)
    b = torch.randn(700, generator=g, requires_grad=True)
    theta, scale = torch.rand(300, 1, generator=g), torch.tensor(3.0)
    pre = (x @ W.t() + b).detach()
    fused = rows_penalty(x, W, b, pre, theta, scale, torch.bfloat16)
    grads = torch.autograd.grad(fused, [x, W, b])
    ref = pre_act_penalty(x @ W.t() + b, theta, scale)
    ref_grads = torch.autograd.grad(ref, [x, W, b])
    torch.testing.assert_close(fused, ref)
    for a, r in zip(grads, ref_grads):  # products of the 0/1 mask with bfloat16-rounded operands
        torch.testing.assert_close(a, r, rtol=2e-2, atol=2e-2 * float(r.abs().max()))


def test_bf16_selection_trains_as_well_as_float32_on_the_synthetic_dictionary():
    """Quality holds: the same TopK run with the selection in bfloat16 and in float32 reaches the same held-out FVU
    and recovers the same share of the true features (d 32, 512 features, 1024 latents, k 4, 200k samples)."""
    gen = SyntheticDictionary(d=32, n_features=512, mean_active=4)
    x, held = gen.sample(200_000, seed=0), gen.sample(8192, seed=1)
    got = {}
    for sel in ("float32", "bfloat16"):
        sae = Sae(SaeConfig(d_in=32, n_latents=1024, k=4, selection_dtype=sel), seed=0)
        tr = Trainer(sae, TrainConfig(tokens=200_000, batch_size=1024, seed=0))
        tr.fit(x, progress=False)
        tr.fold()
        with torch.no_grad():
            got[sel] = (float(fvu(held, sae.reconstruct(held))), recovery(sae.W_dec, gen.directions())[0])
    print(got)
    assert got["bfloat16"][0] == pytest.approx(got["float32"][0], rel=0.03)
    assert got["bfloat16"][1] == pytest.approx(got["float32"][1], abs=0.05)


def test_selection_dtype_is_checked():
    with pytest.raises(ConfigError, match="selection_dtype"):
        SaeConfig(d_in=8, n_latents=32, k=4, selection_dtype="float16")
    with pytest.raises(ConfigError, match="selection_dtype='bfloat16'"):
        SaeConfig(d_in=8, n_latents=32, architecture="jumprelu", target_l0=4, selection_dtype="bfloat16")
    sae = Sae(SaeConfig(d_in=8, n_latents=32, k=4, selection_dtype="float32"))
    assert sae.select_dtype is None
    assert Sae(SaeConfig(d_in=8, n_latents=32, k=4, selection_dtype="bfloat16")).select_dtype == torch.bfloat16
    assert sample_rows(4096) == slice(None, None, 8) and penalty_scale(torch.tensor(4.0), 1, 4) == 4.0
