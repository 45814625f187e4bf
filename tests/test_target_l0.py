"""Target sparsity: BatchTopK's calibrated inference threshold and the target-L0 controller of the penalty
architectures (ReLU/L1, Gated, JumpReLU) land at the L0 they were asked for on held-out data, within 10%, and the
controller's state survives save/load. Data: `saekit.synthetic.SyntheticDictionary` (known answer)."""

from __future__ import annotations

import pytest
import torch

from saekit import ConfigError, Sae, SaeConfig, TrainConfig, Trainer
from saekit.synthetic import SyntheticDictionary, recovery

D, N_FEATURES, N_LATENTS, TARGET = 32, 512, 1024, 4.0  # a dictionary 16x wider than the space
TOKENS, BATCH = 200_000, 1024


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    gen = SyntheticDictionary(d=D, n_features=N_FEATURES, mean_active=TARGET)
    return gen, gen.sample(TOKENS, seed=0), gen.sample(8192, seed=1)


def held_out_l0(sae: Sae, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((sae.encode(x) > 0).sum(-1).float().mean())


def recovered_at_target(data, **cfg) -> float:
    """Train one SAE (`cfg`: SaeConfig fields beyond the shape and target_l0) on the synthetic data, check that its
    held-out L0 is the target within 10%, and return the share of true features recovered at cosine > 0.9."""
    gen, x, held = data
    sae = Sae(SaeConfig(d_in=D, n_latents=N_LATENTS, target_l0=TARGET, **cfg))
    tr = Trainer(sae, TrainConfig(tokens=TOKENS, batch_size=BATCH, seed=0))
    tr.fit(x, progress=False)
    tr.fold()
    assert abs(held_out_l0(sae, held) - TARGET) <= 0.1 * TARGET
    return recovery(sae.W_dec, gen.directions())[0]


def variant(arch: str) -> tuple[str, dict]:
    """('batchtopk', {...}) for 'batchtopk' or 'batchtopk-relative' (`SaeConfig.relative_selection`)."""
    extra = {"relative_selection": True} if arch.endswith("-relative") else {}
    arch = arch.removesuffix("-relative")
    if arch == "matryoshka":
        extra["matryoshka_prefixes"] = (64,)
    return arch, extra


@pytest.mark.parametrize("arch", ["batchtopk", "batchtopk-relative", "matryoshka", "matryoshka-relative", "jumprelu", "relu", "gated"])
def test_held_out_l0_is_the_target(arch, data):
    gen, x, held = data
    arch, extra = variant(arch)
    sae = Sae(SaeConfig(d_in=D, n_latents=N_LATENTS, architecture=arch, target_l0=TARGET, **extra))
    random_frac, random_cos = recovery(sae.W_dec, gen.directions())
    tr = Trainer(sae, TrainConfig(tokens=TOKENS, batch_size=BATCH, seed=0))
    tr.fit(x, progress=False)
    tr.fold()
    l0 = held_out_l0(sae, held)
    frac, cos = recovery(sae.W_dec, gen.directions())
    print(f"{arch}: held-out L0 {l0:.2f} (target {TARGET}), recovered {frac:.2f} (random {random_frac:.2f}), mean cos {cos:.3f}")
    assert abs(l0 - TARGET) <= 0.1 * TARGET, l0
    # recovery of this 16x-wider dictionary at this budget is still far from the target for these
    # architectures (benchmarks/bench_synthetic.py records it); this test checks the sparsity only


def test_relative_selection_recovers_more_of_the_dictionary_than_absolute(data):
    """Known answer: under the paper's batch selection from the first step (`topk_warmup=0`), ranking the batch by
    pre / ||x - b_dec|| (`relative_selection`) instead of by pre recovers more true features at cosine > 0.9
    (measured at this budget: 6.4% absolute, 18.4% relative), at the same held-out L0. With the default TopK
    warm-ups the two are level here (33.6% / 35.5%; at 1M samples 95.9% / 93.0%: BENCHMARKS.md, "Synthetic
    dictionary recovery")."""
    got = {rel: recovered_at_target(data, architecture="batchtopk", relative_selection=rel, topk_warmup=0.0)
           for rel in (False, True)}
    print(f"recovered: absolute {got[False]:.3f}, relative {got[True]:.3f}")
    assert got[True] > 2 * got[False] and got[True] > 0.12


def test_batchtopk_recovers_about_as_much_as_topk(data):
    """Known answer: absolute BatchTopK at its defaults (a TopK warm-up over 90% of training with TopK's
    pre-activation coefficient, then the batch's selection and a calibrated threshold) recovers nearly as many true
    features as TopK at the same budget and L0 (measured: 33.6% against 35.7%; 14.3% with the former 0.5 warm-up and
    BatchTopK's coefficient in it; at 1M samples 95.9% against 96.1%)."""
    got = {arch: recovered_at_target(data, architecture=arch) for arch in ("topk", "batchtopk")}
    print(f"recovered: TopK {got['topk']:.3f}, BatchTopK {got['batchtopk']:.3f}")
    assert got["batchtopk"] > 0.85 * got["topk"] and got["topk"] > 0.2, got


def test_matryoshka_inner_weight_trades_prefix_reconstruction_for_recovery(data):
    """Known answer (Chanin et al. 2025's balance): weighting the inner prefix's loss below the full dictionary's
    (`matryoshka_inner_weight`) recovers more true features of this flat (unhierarchical) dictionary, while the first
    64 latents still reconstruct on their own far better than a plain BatchTopK's first 64. Measured at this budget:
    recovered 26.8% at 1.0, 33.6% at 0.2, BatchTopK 33.8%; first-64 FVU 0.593, 0.787, 0.936 (at 1M samples, prefixes
    64/256: 70.3% -> 91.6% recovered; BENCHMARKS.md, "Synthetic dictionary recovery")."""
    gen, x, held = data
    got = {}
    for name, kw in (("1.0", {"matryoshka_inner_weight": 1.0}), ("0.2", {"matryoshka_inner_weight": 0.2}), ("batchtopk", {})):
        arch = "batchtopk" if name == "batchtopk" else "matryoshka"
        extra = {"matryoshka_prefixes": (64,)} if arch == "matryoshka" else {}
        sae = Sae(SaeConfig(d_in=D, n_latents=N_LATENTS, target_l0=TARGET, architecture=arch, **extra, **kw))
        tr = Trainer(sae, TrainConfig(tokens=TOKENS, batch_size=BATCH, seed=0))
        tr.fit(x, progress=False)
        tr.fold()
        with torch.no_grad():
            z = sae.encode(held)
            x_hat = z[:, :64] @ sae.W_dec[:64] + sae.b_dec
            first64 = float((held - x_hat).pow(2).sum() / (held - held.mean(0)).pow(2).sum())
        assert abs(held_out_l0(sae, held) - TARGET) <= 0.1 * TARGET
        got[name] = (recovery(sae.W_dec, gen.directions())[0], first64)
    print({k: f"recovered {r:.3f}, first-64 FVU {f:.3f}" for k, (r, f) in got.items()})
    assert got["0.2"][0] > 1.1 * got["1.0"][0]
    assert got["1.0"][1] < got["0.2"][1] < 0.92 * got["batchtopk"][1]


def test_relu_default_topk_warmup_follows_the_budget():
    """ReLU/L1's default warm-up leaves the ReLU code at least `relu_phase_steps` (100) steps, at most 90% warm-up, none
    in a run of 100 steps or fewer (at 48 steps every warm-up measured worse on Gemma: `ReluSae.budget_topk_warmup`)."""
    from saekit.saes import ReluSae

    rule = ReluSae.budget_topk_warmup
    assert rule(48) == rule(100) == 0.0
    assert rule(200) == pytest.approx(0.5) and rule(977) == pytest.approx(1 - 100 / 977) and rule(10_000) == 0.9
    cfg = SaeConfig(d_in=D, n_latents=64, architecture="relu", target_l0=TARGET)
    sae = Sae(cfg)
    assert sae.topk_warmup == 0.0 and bool(sae.handed_over)  # outside a Trainer: the April update's code
    W_dec = sae.W_dec.detach().clone()
    sae.plan(200, fresh=True)
    assert sae.topk_warmup == pytest.approx(0.5) and not bool(sae.handed_over)
    torch.testing.assert_close(sae.W_enc.detach(), W_dec * sae.warmup_encoder_init_scale)  # the warm-up's start
    assert float(sae.log_coefficient.exp()) == pytest.approx(sae.warmup_l1_coefficient)
    short = Sae(cfg)
    short.plan(90, fresh=True)
    assert short.topk_warmup == 0.0 and bool(short.handed_over)
    torch.testing.assert_close(short.W_enc.detach(), short.W_dec.detach() * short.encoder_init_scale)
    given = Sae(SaeConfig(d_in=D, n_latents=64, architecture="relu", target_l0=TARGET, topk_warmup=0.0))
    given.plan(1000, fresh=True)
    assert given.topk_warmup == 0.0  # an explicit value wins
    tuned = Sae(cfg)
    with torch.no_grad():
        tuned.W_enc.mul_(2.0)  # weights set before the first run (a fine-tune): kept, no warm-up
    tuned.plan(1000, fresh=True)
    assert tuned.topk_warmup == 0.0
    torch.testing.assert_close(tuned.W_enc.detach(), 2.0 * tuned.W_dec.detach())


def test_relu_default_recovers_more_than_the_april_code(data):
    """Known answer: at this budget (196 steps) the budget's warm-up (0.49) recovers more of the dictionary than the
    April update's code from the first step (`topk_warmup=0`), at the target L0. Measured: 4.9% -> 22.7%; at 1M samples
    (977 steps, warm-up 0.898) 36.7% -> 91.4%."""
    got = {w: recovered_at_target(data, architecture="relu", **({} if w is None else {"topk_warmup": w})) for w in (0.0, None)}
    print(f"relu recovered: April code {got[0.0]:.3f}, the budget's warm-up {got[None]:.3f}")
    assert got[None] > 3 * got[0.0] and got[None] > 0.15, got


def test_relu_hand_over_gain_is_not_decided_by_one_outlier_token():
    """The hand-over's gain (`relu.hand_over_gain`) weighs every token's relative error once. Known answer: 1,023
    tokens whose reconstruction is x / 1.25 (gain 1.25) and one token at 25x their norm reconstructed at 2x (gain 0.5),
    as on Gemma 3 270M, where one or two such tokens carry 55-90% of sum |r|^2 in one batch in five: the plain
    least-squares sums give 0.66, the per-token weights 1.245. Then on a ReluSae: adding that outlier to a batch moves
    the gain applied at the hand-over by under 1% (the plain sums moved it to 0.52-0.70 from 1.25 on Gemma)."""
    from saekit.saes.relu import hand_over_gain

    g = torch.Generator().manual_seed(0)
    x_BD = torch.randn(1024, D, generator=g)
    x_BD = x_BD / x_BD.norm(dim=-1, keepdim=True)
    x_BD[0] *= 25.0
    r_BD = x_BD / 1.25
    r_BD[0] = 2.0 * x_BD[0]
    num, den = hand_over_gain(x_BD, r_BD)
    plain = float((x_BD * r_BD).sum() / r_BD.pow(2).sum())
    assert plain < 0.7  # the old estimate on this batch
    assert float(num / den) == pytest.approx((1023 / 1.25 + 2) / (1023 / 1.25**2 + 4), rel=1e-5)
    zero = hand_over_gain(torch.zeros(3, D), torch.ones(3, D))
    assert float(zero[0]) == float(zero[1]) == 0.0  # a token at x = 0 carries no weight (the gain then stays 1)

    def gain_applied(batch_BD):
        sae = Sae(SaeConfig(d_in=D, n_latents=64, architecture="relu", target_l0=TARGET, topk_warmup=0.9))
        with torch.no_grad():
            sae.b_enc.fill_(-0.2)
        before = sae.W_enc.detach().clone()
        sae._hand_over(batch_BD)
        return float(sae.W_enc.detach().norm() / before.norm())

    typical_BD = torch.randn(1023, D, generator=g)
    outlier_BD = 25.0 * torch.randn(1, D, generator=g)
    alone, with_outlier = gain_applied(typical_BD), gain_applied(torch.cat([typical_BD, outlier_BD]))
    assert with_outlier == pytest.approx(alone, rel=0.01), (alone, with_outlier)


@pytest.mark.parametrize("arch, warmup, gain", [
    ("batchtopk", 0.9, 3.0), ("batchtopk-relative", 0.5, 1.5), ("matryoshka", 0.9, 3.0), ("matryoshka-relative", 0.5, 1.5),
    ("jumprelu", 0.9, 3.0), ("gated", 0.9, 1.4), ("relu", 0.9, 3.0),
])
def test_topk_warmup_recovers_more_than_the_papers_code_from_the_first_step(arch, warmup, gain, data):
    """Known answer: a TopK warm-up (`topk_warmup`: per-token TopK first, then the architecture's own code) recovers
    more true features at cosine > 0.9 than the paper's code from the first step (0), at the same held-out L0. Each at
    its default warm-up (ReLU/L1's is opt-in, at 0.9); the encoder's starting scale follows the warm-up (`Sae.initial_encoder_scale`). Measured at
    this budget: BatchTopK 6.4% -> 33.6%, relative 17.6% -> 36.3%, Matryoshka 1.0% -> 27.9%, relative Matryoshka
    14.5% -> 27.1%, JumpReLU 2.3% -> 33.2% (at 1M samples 19.5% -> 95.7%, `benchmarks/bench_synthetic.py`), Gated
    20.1% -> 32.6% (at 1M samples 47.1% -> 91.8%), ReLU/L1 4.9% -> 33.0% (at 1M samples 36.7% -> 91.4%)."""
    name, extra = variant(arch)
    got = {w: recovered_at_target(data, architecture=name, topk_warmup=w, **extra) for w in (0.0, warmup)}
    print(f"{arch} recovered: the paper's code from the first step {got[0.0]:.3f}, after a TopK warm-up {got[warmup]:.3f}")
    assert got[warmup] > gain * got[0.0] and got[warmup] > 0.1, got


def test_the_controller_waits_for_the_topk_warmup():
    """While a TopK warm-up fixes the L0 the controller has nothing to steer: lambda moves only after it."""
    sae = Sae(SaeConfig(d_in=8, n_latents=32, architecture="gated", target_l0=2, topk_warmup=0.9))
    start = float(sae.log_coefficient)
    too_dense = torch.tensor(6.0)
    sae.update_sparsity(too_dense, progress=0.5)
    assert float(sae.log_coefficient) == start
    sae.update_sparsity(too_dense, progress=0.95)
    assert float(sae.log_coefficient) > start


def test_batchtopk_threshold_is_calibrated_not_the_lagging_average(data):
    """The moving average of per-batch minima lags; `calibrate` sets theta from the final weights."""
    _, x, held = data
    sae = Sae(SaeConfig(d_in=D, n_latents=N_LATENTS, architecture="batchtopk", k=4))
    tr = Trainer(sae, TrainConfig(tokens=TOKENS // 4, batch_size=BATCH, seed=0))
    tr.fit(x, progress=False)
    calibrated = float(sae.threshold)
    scale = tr.scale
    # the same weights with the pre-calibration estimate: re-run only the moving average over the data
    sae.calibrate(x[:8192].float() * scale)
    assert float(sae.threshold) == pytest.approx(calibrated)  # deterministic in its sample
    with torch.no_grad():
        pre = torch.addmm(sae.b_enc, x[:8192] * scale - sae.b_dec, sae.W_enc.t()).relu()
        assert float((pre > sae.threshold).sum(-1).float().mean()) == pytest.approx(4.0, abs=1e-3)


def test_controller_moves_the_coefficient_and_survives_save_load(data, tmp_path):
    _, x, held = data
    sae = Sae(SaeConfig(d_in=D, n_latents=N_LATENTS, architecture="relu", target_l0=TARGET))
    start = float(sae.log_coefficient)
    Trainer(sae, TrainConfig(tokens=TOKENS // 4, batch_size=BATCH, seed=0)).fit(x, progress=False).fold()
    assert float(sae.log_coefficient) != start
    loaded = Sae.load(sae.save(tmp_path / "sae"))
    assert float(loaded.log_coefficient) == float(sae.log_coefficient)
    torch.testing.assert_close(loaded.encode(held[:64]), sae.encode(held[:64]))


def test_folders_saved_before_the_damping_term_still_load(tmp_path):
    """`last_log_error` came after the first release: a folder whose saekit_state lacks it loads, undamped."""
    from safetensors.torch import load_file, save_file

    sae = Sae(SaeConfig(d_in=8, n_latents=32, architecture="gated", target_l0=2))
    path = sae.save(tmp_path / "sae")
    state = load_file(path / "saekit_state.safetensors")
    del state["last_log_error"]
    save_file(state, path / "saekit_state.safetensors")
    loaded = Sae.load(path)
    assert float(loaded.last_log_error) == float(sae.last_log_error)  # the "no error yet" value
    torch.testing.assert_close(loaded.log_coefficient, sae.log_coefficient)


def test_fixed_coefficient_without_a_target(data):
    _, x, _ = data
    sae = Sae(SaeConfig(d_in=D, n_latents=N_LATENTS, architecture="gated", l1_coefficient=2.0))
    start = float(sae.log_coefficient)
    Trainer(sae, TrainConfig(tokens=TOKENS // 8, batch_size=BATCH, seed=0)).fit(x, progress=False)
    assert float(sae.log_coefficient) == start


def test_target_l0_sets_k_for_topk_style_codes_and_a_zero_start_is_refused():
    assert SaeConfig(d_in=8, n_latents=64, architecture="batchtopk", target_l0=7.6).k == 8
    assert SaeConfig(d_in=8, n_latents=64, architecture="relu", target_l0=7.6).k == 32  # k unused there
    with pytest.raises(ConfigError, match="cannot start at 0"):
        Sae(SaeConfig(d_in=8, n_latents=64, architecture="relu", target_l0=4, l1_coefficient=0.0))
    with pytest.raises(ConfigError, match="target_l0"):
        SaeConfig(d_in=8, n_latents=64, architecture="relu", target_l0=float("nan"))


def test_synthetic_dictionary_is_deterministic_and_heavy_tailed():
    gen = SyntheticDictionary(d=16, n_features=256, mean_active=3)
    torch.testing.assert_close(gen.sample(100, seed=2), gen.sample(100, seed=2))
    assert not torch.equal(gen.sample(100, seed=2), gen.sample(100, seed=3))
    f = gen.frequencies()
    assert float(f.sum()) == pytest.approx(3.0, rel=1e-5)
    assert float(f[0] / f[-1]) > 8  # power law (exponent 0.7, offset 10): (265 / 10)^0.7 = 9.9 here
    x, codes = gen.sample_with_codes(20_000, seed=4)
    assert float((codes > 0).sum(-1).float().mean()) == pytest.approx(3.0, rel=0.05)
    frac, cos = recovery(gen.directions(), gen.directions())
    assert frac == 1.0 and cos == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="probability > 1"):
        SyntheticDictionary(d=16, n_features=32, mean_active=20, zipf_offset=1)


def test_jumprelu_pre_act_loss_keeps_latents_alive(data):
    """Anthropic's pre-activation loss (`pre_act_coefficient`) gives latents below their threshold a gradient, so
    fewer die (the Gemma Scope recipe, without the TopK warm-up; measured here at 3.0: 63% -> 28% dead on held-out),
    while the controller still lands on the target L0."""
    _, x, held = data
    dead = {}
    for c in (0.0, 3.0):
        sae = Sae(SaeConfig(d_in=D, n_latents=N_LATENTS, architecture="jumprelu", target_l0=TARGET, pre_act_coefficient=c,
                            topk_warmup=0.0))
        tr = Trainer(sae, TrainConfig(tokens=TOKENS, batch_size=BATCH, seed=0))
        tr.fit(x, progress=False)
        tr.fold()
        with torch.no_grad():
            z = sae.encode(held)
        dead[c] = float(((z > 0).sum(0) == 0).float().mean())
        assert abs(held_out_l0(sae, held) - TARGET) <= 0.1 * TARGET
    print(dead)
    assert dead[3.0] < 0.6 * dead[0.0], dead


def test_pre_act_penalty_reaches_latents_that_never_fire():
    from saekit.saes.pre_act import pre_act_penalty

    sae = Sae(SaeConfig(d_in=8, n_latents=16, k=4, architecture="jumprelu", pre_act_coefficient=0.2))
    with torch.no_grad():
        sae.threshold.fill_(1e3)  # nothing fires: no reconstruction or L0 gradient reaches the encoder
    x = torch.randn(64, 8)
    out = sae(x)
    assert float((out.acts > 0).sum()) == 0
    out.loss.backward()
    assert float(sae.W_enc.grad.abs().sum()) > 0 and float(sae.b_enc.grad.min()) < 0  # pre-activations pushed up
    # and not the thresholds: nothing sits in the step's kernel, so only the loss could reach them, and it must not
    # (lowering every threshold would shrink the loss too; under Adam that tiny gradient moved them a full step each
    # time and left 63% of a synthetic JumpReLU's latents dead after its TopK warm-up, against 19% without it)
    assert sae.threshold.grad is None or float(sae.threshold.grad.abs().sum()) == 0
    pre = torch.randn(4, 3)
    theta = torch.zeros(3)
    # the mean over tokens and latents, in units of `scale`; optionally weighted per latent
    assert torch.isclose(pre_act_penalty(pre, theta, torch.tensor(2.0)), (-pre).clamp_min(0).sum() / (4 * 3 * 2))
    w = torch.tensor([1.0, 2.0, 0.5])
    assert torch.isclose(pre_act_penalty(pre, 0.0, torch.tensor(2.0), w), ((-pre).clamp_min(0) * w).sum() / (4 * 3 * 2))


def test_penalty_scale_is_d_in_times_the_per_coordinate_std():
    from saekit.metrics import total_variance
    from saekit.saes.pre_act import penalty_scale

    x = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0)) * 3.0 + 100.0
    torch.testing.assert_close(penalty_scale(total_variance(x), *x.shape), 16 * x.std(0).pow(2).mean().sqrt(), rtol=1e-3, atol=0)


def test_pre_act_penalty_means_the_same_at_every_width():
    """The same per-latent gaps give the same penalty at 16 and at 64 latents (Anthropic's sum would give 4x)."""
    from saekit.saes.pre_act import pre_act_penalty

    pre_BF = torch.randn(32, 16, generator=torch.Generator().manual_seed(3))
    wide_BF = pre_BF.repeat(1, 4)  # [32, 64]: every latent's column four times
    tv = torch.tensor(5.0)
    torch.testing.assert_close(pre_act_penalty(wide_BF, 0.5, tv), pre_act_penalty(pre_BF, 0.5, tv))


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka", "jumprelu", "gated", "relu"])
def test_whole_objective_is_unchanged_when_the_data_is_rescaled(arch):
    """Scaling the data's spread by a (and the SAE with it: biases and thresholds by a) scales every pre-activation
    and gap by a and the total variance by a^2: FVU and the pre-activation loss (a length over a length) are unchanged,
    so a coefficient means the same whatever the data's spread, or its offset, which sets the spread once the
    trainer normalises E||x||^2 to d_in. Dividing the gaps by the total variance instead made the loss 1/a.
    (ReLU/L1's and Gated's L1 terms are still divided by the total variance: their `target_l0` controller sets
    the coefficient.)"""
    extra = {"matryoshka_prefixes": (8,)} if arch == "matryoshka" else {}
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(1)) + 5.0
    losses = []
    for a in (1.0, 10.0):
        # (selection in float32: a bfloat16 product's rounding is not scale-free, so near-ties could swap)
        sae = Sae(SaeConfig(d_in=8, n_latents=32, k=4, architecture=arch, target_l0=4, pre_act_coefficient=0.5,
                            selection_dtype="float32", **extra))
        with torch.no_grad():
            sae.b_dec.copy_(x.median(0).values * a)
            for name in ("b_enc", "b_gate", "b_mag", "threshold"):
                if hasattr(sae, name) and isinstance(getattr(sae, name), torch.Tensor):
                    getattr(sae, name).mul_(a)
            if arch == "jumprelu":
                sae.threshold.fill_(0.3 * a)
        out = sae(x * a, progress=1.0)
        sae.cfg.pre_act_coefficient = 0.0  # the same SAE without the loss: the difference is the loss alone
        off = sae(x * a, progress=1.0)
        losses.append((float(out.fvu), float(out.aux_loss - off.aux_loss)))
    (fvu1, aux1), (fvu10, aux10) = losses
    assert fvu1 == pytest.approx(fvu10, rel=1e-4)
    assert aux1 > 0 and aux1 == pytest.approx(aux10, rel=1e-3)


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), True])
def test_pre_act_coefficient_is_checked(bad):
    with pytest.raises(ConfigError, match="pre_act_coefficient"):
        SaeConfig(d_in=8, architecture="jumprelu", pre_act_coefficient=bad)


def test_pre_act_coefficient_defaults_by_architecture_and_is_refused_where_there_is_no_such_loss():
    k = {"k": 4}
    # the TopK family's defaults (tuned at k 16) scale by k / 16 below it: tests/test_sae_topk.py checks the scaling
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="batchtopk", k=16)).pre_act_coefficient == 3.0
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="matryoshka", matryoshka_prefixes=(4,), k=16)).pre_act_coefficient == 3.0
    # JumpReLU's default (2.0, after its TopK warm-up) scales with the target L0 the same way
    assert Sae(SaeConfig(d_in=8, n_latents=64, architecture="jumprelu", target_l0=16)).pre_act_coefficient == 2.0
    assert Sae(SaeConfig(d_in=8, n_latents=64, architecture="jumprelu", target_l0=4)).pre_act_coefficient == 0.5
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="topk", k=16)).pre_act_coefficient == 0.75
    # Gated's: 6.0 after its TopK warm-up (the default), 3.0 with the paper's code from the first step
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="gated", **k)).pre_act_coefficient == 6.0
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="gated", topk_warmup=0, **k)).pre_act_coefficient == 3.0
    # ReLU/L1's (4.0 from L0 16) scales with its L0 (target_l0, else k) as JumpReLU's does
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="relu", **k)).pre_act_coefficient == 1.0
    assert Sae(SaeConfig(d_in=8, n_latents=64, architecture="relu", target_l0=32)).pre_act_coefficient == 4.0
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="topk", pre_act_coefficient=1e-3, **k)).pre_act_coefficient == 1e-3
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="batchtopk", pre_act_coefficient=0, **k)).pre_act_coefficient == 0.0
    assert SaeConfig(d_in=8, n_latents=16, architecture="relu", pre_act_coefficient=0, **k).pre_act_coefficient == 0
    assert Sae(SaeConfig(d_in=8, n_latents=16, architecture="gated", pre_act_coefficient=0.5, **k)).pre_act_coefficient == 0.5
    tc = {"hookpoint": "mlp_in.1", "target_hookpoint": "mlp_out.1"}
    for arch, extra in (("transcoder", tc), ("skip_transcoder", tc)):
        with pytest.raises(ConfigError, match="has no pre-activation loss"):
            SaeConfig(d_in=8, n_latents=16, architecture=arch, pre_act_coefficient=1e-3, **k, **extra)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
def test_topk_style_pre_act_loss_reaches_latents_the_selection_never_picks(arch):
    """The TopK-style pre-activation loss pulls toward the code's threshold (each token's k-th activation, or
    the batch's smallest kept one): a latent the selection never picks gets no reconstruction gradient, and
    without this loss (or AuxK) none at all."""
    extra = {"matryoshka_prefixes": (4,)} if arch == "matryoshka" else {}
    grads = {}
    for c in (0.0, 0.2):
        sae = Sae(SaeConfig(d_in=8, n_latents=16, k=2, architecture=arch, pre_act_coefficient=c, **extra))
        with torch.no_grad():
            sae.b_enc[8:] = -1e3  # latents 8..15 never reach the batch's top k * B
        x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        out = sae(x)
        assert int((out.indices[out.acts > 0] >= 8).sum()) == 0
        out.loss.backward()
        grads[c] = (sae.W_enc.grad[8:].abs().sum(), sae.b_enc.grad[8:])
    assert float(grads[0.0][0]) == 0 and float(grads[0.0][1].abs().sum()) == 0
    assert float(grads[0.2][0]) > 0 and bool((grads[0.2][1] < 0).all())  # every pre-activation pushed up


@pytest.mark.parametrize("arch", ["gated", "relu"])
def test_gate_and_relu_pre_act_loss_reaches_latents_that_never_open(arch):
    """Gated (its gate) and ReLU/L1 (its pre-activation) take the loss with threshold 0: a latent whose
    pre-activation is negative on every token gets no reconstruction or L1 gradient, and with the loss one that
    raises it (b_enc pushed up). The loss itself is sum_b mean_i relu(-pre) (x ||W_dec_i|| for ReLU) / total var."""
    grads = {}
    for c in (0.0, 0.2):
        sae = Sae(SaeConfig(d_in=8, n_latents=16, k=2, architecture=arch, target_l0=2, pre_act_coefficient=c))
        with torch.no_grad():
            sae.b_enc[8:] = -1e3  # latents 8..15 closed on every token
        x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        out = sae(x)
        assert int((out.acts[:, 8:] > 0).sum()) == 0
        out.loss.backward()
        grads[c] = sae.b_enc.grad[8:].clone()
    assert float(grads[0.0].abs().sum()) == 0
    assert bool((grads[0.2] < 0).all())


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka"])
def test_batchtopk_pre_act_loss_keeps_latents_alive(arch, data):
    """The pre-activation loss cuts the latents that never fire on held-out data while held-out L0 stays at k;
    a moderate coefficient (0.75 for BatchTopK, 0.375 for Matryoshka) does it at no FVU cost, and the default
    (6.0 and 1.5, tuned at 4096 latents and k 16 on Gemma) cuts at least as many.

    256 latents for the 512 true features: every latent has a feature to learn, so a dead one is a training
    failure. Measured here: BatchTopK dead 44% -> 13% (moderate) -> 0% (default), FVU 0.352 -> 0.354 -> 0.568;
    Matryoshka 34% -> 14% -> 0%, FVU 0.383 -> 0.381 -> 0.439. At this small k (4) the defaults cost a lot of FVU
    (`SaeConfig.pre_act_coefficient`: the pull grows as k falls); the test does not hide the trade-off.

    Run under the batch's selection from the first step (`topk_warmup=0`), where these numbers were
    measured and where the loss matters most. With the default per-token start the same three coefficients left
    BatchTopK 37% / 35% / 18% dead at FVU 0.347 / 0.348 / 0.358: more dead latents at the default, far less FVU."""
    _, x, held = data
    n_latents = 256
    extra = {"matryoshka_prefixes": (n_latents // 16,)} if arch == "matryoshka" else {}
    dead, fvu = {}, {}
    quarter = {"batchtopk": 0.75, "matryoshka": 0.375}[arch]  # moderate
    for c in (0.0, quarter, None):
        sae = Sae(SaeConfig(d_in=D, n_latents=n_latents, architecture=arch, target_l0=TARGET, pre_act_coefficient=c,
                            topk_warmup=0.0, **extra))
        tr = Trainer(sae, TrainConfig(tokens=TOKENS, batch_size=BATCH, seed=0))
        tr.fit(x, progress=False)
        tr.fold()
        with torch.no_grad():
            z = sae.encode(held)
            fvu[c] = float((held - sae.decode(z)).pow(2).sum() / (held - held.mean(0)).pow(2).sum())
        dead[c] = float(((z > 0).sum(0) == 0).float().mean())
        assert abs(held_out_l0(sae, held) - TARGET) <= 0.1 * TARGET
    print(arch, "dead", dead, "fvu", fvu)
    assert dead[quarter] < 0.6 * dead[0.0], dead
    assert fvu[quarter] < fvu[0.0] + 0.01, fvu
    assert dead[None] <= dead[quarter], dead
