"""Interventions: edits as data, applied in one trace; effects; generation; bad input caught early."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_model

import saekit
from saekit import Ablate, Clamp, SaeConfig, Sae, Splice, Steer
from saekit.interventions import InterventionError

HP = "resid_post.1"
TEXT = "hello world, this is a small test of edits"


@pytest.fixture(scope="module")
def model():
    return tiny_model("gemma3")


@pytest.fixture(scope="module")
def sae():
    return Sae(SaeConfig(d_in=32, n_latents=64, k=4, hookpoint=HP))


@pytest.fixture(scope="module")
def setup(model, sae):
    """Prompt ids, clean acts at HP, latents, a feature active on most positions, the non-BOS mask."""
    ids = model.encode_prompt(TEXT)
    acts = model.capture(ids, [HP])[HP]
    lat = sae.encode(acts).detach()
    f = int((lat[0, 1:] > 0).sum(0).argmax())
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, 0] = False
    return ids, acts, lat, f, keep


def manual(keep, new):
    """A callable edit putting `new` [1, T, D] on non-BOS positions."""
    return {HP: lambda x: torch.where(keep[..., None], new.to(x.dtype), x)}


class _NoRun:
    """Stands in for the nnsight model: any run fails the test (bad input must be caught before)."""

    def __init__(self, nn_model):
        self._module = nn_model._module

    def __getattr__(self, name):
        raise AssertionError(f"the model ran ({name}) although the input was bad")


def test_splice_with_error_term_is_the_exact_model(model, sae, setup):
    ids = setup[0]
    assert torch.equal(model.token_nll(ids, edits=Splice(sae, error_term=True)), model.token_nll(ids))


def test_splice_without_error_term_runs_on_the_reconstruction(model, sae, setup):
    ids, acts, _, _, keep = setup
    spliced = model.token_nll(ids, edits=Splice(sae, error_term=False))
    want = model.token_nll(ids, edits=manual(keep, sae.reconstruct(acts).detach()))
    torch.testing.assert_close(spliced, want)
    assert not torch.allclose(spliced, model.token_nll(ids))


def test_ablate_and_clamp_change_exactly_the_chosen_feature(model, sae, setup):
    ids, acts, lat, f, keep = setup
    row = sae.W_dec[f].detach()
    ablated = model.token_nll(ids, edits=Ablate(sae, [f]))
    torch.testing.assert_close(ablated, model.token_nll(ids, edits=manual(keep, acts - lat[..., f : f + 1] * row)))
    clamped = model.token_nll(ids, edits=Clamp(sae, {f: 7.5}))
    torch.testing.assert_close(clamped, model.token_nll(ids, edits=manual(keep, acts + (7.5 - lat[..., f : f + 1]) * row)))
    assert not torch.allclose(ablated, model.token_nll(ids))


def test_mean_ablation_uses_the_means(model, sae, setup):
    ids, acts, lat, f, keep = setup
    means = saekit.feature_means(model, sae, [TEXT, "another text for the means"], n_tokens=200)
    assert means.shape == (sae.n_latents,) and float(means[f]) > 0
    got = model.token_nll(ids, edits=Ablate(sae, [f], mode="mean", means=means))
    want = model.token_nll(ids, edits=manual(keep, acts + (float(means[f]) - lat[..., f : f + 1]) * sae.W_dec[f].detach()))
    torch.testing.assert_close(got, want)


def test_splice_and_ablate_of_one_sae_ablate_within_the_reconstruction(model, sae, setup):
    ids, acts, lat, f, keep = setup
    edited = lat.clone()
    edited[..., f] = 0
    want = model.token_nll(ids, edits=manual(keep, sae.decode(edited).detach()))
    got = model.token_nll(ids, edits=[Splice(sae, error_term=False), Ablate(sae, [f], error_term=False)])
    torch.testing.assert_close(got, want)


def test_steering_by_feature_equals_steering_by_its_vector(model, sae, setup):
    ids, f = setup[0], setup[3]
    a = model.token_nll(ids, edits=Steer(None, (sae, f), 6.0))
    b = model.token_nll(ids, edits=Steer(HP, 6.0 * sae.W_dec[f].detach()))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, model.token_nll(ids))


def test_measure_reports_the_changes_it_claims(model, sae, setup):
    ids, f = setup[0], setup[3]
    edit = Steer(None, (sae, f), 10.0)
    e = saekit.measure(model, TEXT, edit, tokens=["a", "e"], top=3)
    lc = torch.log_softmax(model.logits(ids)[0], -1)
    le = torch.log_softmax(model.logits(ids, edits=edit)[0], -1)
    tok = [model.tokenizer.convert_tokens_to_ids(t) for t in ["a", "e"]]
    torch.testing.assert_close(e.logprob_change, (le - lc)[:, tok], atol=1e-5, rtol=1e-4)
    assert len(e.tokens) == ids.shape[1] and len(e.top_up) == ids.shape[1]
    for ups, downs in zip(e.top_up, e.top_down):
        assert all(pe >= pc for _, pc, pe in ups) and all(pe <= pc for _, pc, pe in downs)
    assert e.loss_edited != e.loss_clean
    assert math.isclose(e.loss_clean, float(model.token_nll(ids).mean()), rel_tol=1e-5)


def test_loss_change_matches_token_nll(model, sae, setup):
    f = setup[3]
    texts = [f"{TEXT} number {i}" for i in range(6)]
    lc = saekit.loss_change(model, texts, Ablate(sae, [f]), batch_size=4)
    ctx = saekit.contexts(model, texts, context_len=64, n_tokens=2048)
    score = ctx.attention_mask[:, 1:].bool()
    clean = model.token_nll(ctx.input_ids, ctx.attention_mask)[score].mean()
    assert lc.n_tokens == int(score.sum())
    assert math.isclose(lc.loss_clean, float(clean), rel_tol=1e-5)
    assert lc.delta != 0


def test_generate_greedy_sampled_seeded_and_side_by_side(model, sae, setup):
    f = setup[3]
    steer = Steer(None, (sae, f), 40.0)
    rng = torch.get_rng_state()
    g = saekit.generate(model, "hello", steer, max_new_tokens=8)
    plain = saekit.generate(model, "hello", None, max_new_tokens=8)
    assert g.default == plain.default == plain.steered  # the default run is the unedited model
    assert g.steered != g.default  # steering changes the output
    s1 = saekit.generate(model, "hello", steer, max_new_tokens=8, do_sample=True, seed=1)
    s2 = saekit.generate(model, "hello", steer, max_new_tokens=8, do_sample=True, seed=1)
    s3 = saekit.generate(model, "hello", steer, max_new_tokens=8, do_sample=True, seed=2)
    assert s1 == s2 and repr(s1) == repr(s2)
    assert (s1.default, s1.steered) != (s3.default, s3.steered)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    assert repr(g).startswith("Generation(prompt='hello'") and "\n" not in repr(g)


def test_reprs_are_short_and_deterministic(sae):
    edits = [Ablate(sae, [3, 1]), Clamp(sae, {2: 1.5}), Splice(sae), Steer(HP, torch.ones(32), 2.0)]
    text = [repr(e) for e in edits]
    assert text == [repr(e) for e in edits]
    assert all(len(t) < 100 and "\n" not in t for t in text)
    assert text[0] == "Ablate(<topk F=64 @ resid_post.1>, features=[3, 1], mode='zero')"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda s: Ablate(s, [64]), r"feature 64 is out of range.*0\.\.63"),
        (lambda s: Ablate(s, [-1]), "out of range"),
        (lambda s: Clamp(s, {1: float("nan")}), "finite"),
        (lambda s: Steer(None, (s, 3), float("nan")), "finite"),
        (lambda s: Steer(HP, torch.tensor([1.0, float("inf")])), "NaN or inf"),
        (lambda s: Ablate(s, [1], mode="mean"), "needs means="),
        (lambda s: Ablate(s, []), "no features"),
    ],
)
def test_bad_edits_are_refused_on_construction(sae, make, match):
    with pytest.raises(InterventionError, match=match):
        make(sae)


def test_edits_that_do_not_fit_the_model_fail_before_it_runs(model, sae, monkeypatch):
    ids = model.encode_prompt(TEXT)
    monkeypatch.setattr(model, "_nn", _NoRun(model._nn))
    wrong_layer = Sae(SaeConfig(d_in=32, n_latents=8, k=2, hookpoint="resid_post.9"))
    with pytest.raises(InterventionError, match="out of range"):
        model.token_nll(ids, edits=Ablate(wrong_layer, [1]))
    wrong_width = Sae(SaeConfig(d_in=48, n_latents=8, k=2, hookpoint=HP))
    with pytest.raises(InterventionError, match="d_model 32"):
        saekit.measure(model, TEXT, Clamp(wrong_width, {1: 2.0}))
    with pytest.raises(InterventionError, match="d_model"):
        model.token_nll(ids, edits=Steer(HP, torch.ones(31)))
    with pytest.raises(InterventionError, match="positive int"):
        saekit.generate(model, "hello", Steer(None, (sae, 1), 2.0), max_new_tokens=0)
    with pytest.raises(InterventionError, match="single tokens"):
        saekit.measure(model, TEXT, Steer(None, (sae, 1), 2.0), tokens=["ab"])


# -- the demonstration on the real model ----------------------------------------------------------------

PY_TOKENS = [" def", " import", " return", " self", " None", " if", " for", " class"]
"""The concept 'Python code', as next tokens (one token each for Gemma 3)."""


def concept_features(model, sae, top: int = 4) -> list[int]:
    """Features firing far more often on Python source than on English prose (built-in corpus, test split)."""
    from saekit.data import source_documents

    def firing(source):
        docs = [d.text[:600] for d in source_documents(source, "test")[:8]]
        ctx = saekit.contexts(model, docs, context_len=64, n_tokens=800)
        acts = model.capture(ctx.input_ids, [sae.cfg.hookpoint], attention_mask=ctx.attention_mask)[sae.cfg.hookpoint]
        keep = ctx.attention_mask.bool().clone()
        keep[:, 0] = False
        with torch.no_grad():
            return (sae.encode(acts[keep]) > 0).float().mean(0)

    return (firing("python") - 3 * firing("wiki_en")).topk(top).indices.tolist()


def concept_gain(effects) -> float:
    """Change of log P(next token is one of the concept's tokens) at the prompt's last position."""
    return float(torch.logsumexp(effects.logp_edited[-1], -1) - torch.logsumexp(effects.logp_clean[-1], -1))


@pytest.mark.real_model
def test_concept_feature_steers_towards_and_ablation_away_from_the_concept(real_model, real_sae):
    from saekit.data import source_documents

    m, sae = real_model, real_sae
    prompt = "The weather today is"
    gains = {f: concept_gain(saekit.measure(m, prompt, Steer(None, (sae, f), 300.0), tokens=PY_TOKENS, top=0))
             for f in concept_features(m, sae)}
    f = max(gains, key=gains.get)
    assert gains[f] > 0.5, gains  # steering makes Python's tokens measurably more likely
    code = [d.text[:300] for d in source_documents("python", "test")[8:12]]
    ablated = saekit.loss_change(m, code, Ablate(sae, [f]), n_tokens=300, batch_size=4)
    assert ablated.delta > 0, ablated  # ablating it makes Python code less likely
    g = saekit.generate(m, prompt, Steer(None, (sae, f), 300.0), max_new_tokens=6)
    assert g.default != g.steered


def test_loss_change_batches_are_independent(model, sae, setup):
    """Each batch of a session compares its own clean and edited runs (no value leaks across batches)."""
    f = setup[3]
    texts = [f"{TEXT} number {i}" + " more" * (i % 3) for i in range(7)]
    ctx = saekit.contexts(model, texts, context_len=64, n_tokens=4096)
    batches = [(ctx.input_ids[s : s + 3], ctx.attention_mask[s : s + 3]) for s in range(0, len(ctx), 3)]
    for (ids, mask), r in zip(batches, model.compare_batches(batches, Ablate(sae, [f]))):
        torch.testing.assert_close(r["nll_clean"], model.token_nll(ids, mask))
        torch.testing.assert_close(r["nll_edited"], model.token_nll(ids, mask, edits=Ablate(sae, [f])))


# -- every architecture's encoder, inside the trace ------------------------------------------------------


def _sae_of(arch: str) -> Sae:
    """An SAE of `arch` at HP whose biases, thresholds and gates are off their initial values."""
    extra = {"jumprelu": {"target_l0": 4}, "matryoshka": {"matryoshka_prefixes": (16,)}}.get(arch, {})
    sae = Sae(SaeConfig(d_in=32, n_latents=64, k=4, hookpoint=HP, architecture=arch, **extra), seed=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_dec.copy_(0.1 * torch.randn(32, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(64, generator=g))
        if arch in ("batchtopk", "matryoshka"):
            sae.threshold.fill_(0.05)
        if arch == "jumprelu":
            sae.threshold.copy_(0.1 * torch.rand(64, generator=g))
        if arch == "gated":
            sae.r_mag.copy_(0.2 * torch.randn(64, generator=g))
            sae.b_mag.copy_(0.1 * torch.randn(64, generator=g))
    return sae


@pytest.mark.parametrize("arch", [a for a in saekit.saes.architectures() if not Sae.class_for(a).predicts_target])
def test_feature_edits_are_exact_for_every_architecture(model, arch):
    """Ablate and Clamp act through each architecture's own encoder (its plain-tensor description)."""
    sae = _sae_of(arch)
    ids = model.encode_prompt(TEXT)
    acts = model.capture(ids, [HP])[HP]
    lat = sae.encode(acts).detach()
    f = int((lat[0, 1:] > 0).sum(0).argmax())
    assert (lat[0, 1:, f] > 0).any()
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, 0] = False
    row = sae.W_dec[f].detach()
    ablated = model.token_nll(ids, edits=Ablate(sae, [f]))
    torch.testing.assert_close(ablated, model.token_nll(ids, edits=manual(keep, acts - lat[..., f : f + 1] * row)))
    clamped = model.token_nll(ids, edits=Clamp(sae, {f: 2.5}, error_term=False))
    edited = lat.clone()
    edited[..., f] = 2.5
    torch.testing.assert_close(clamped, model.token_nll(ids, edits=manual(keep, sae.decode(edited).detach())))


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_transcoder_edits_read_mlp_in_and_write_mlp_out(model, arch):
    """A transcoder spliced in replaces the MLP's output by its prediction from the MLP's input (skip term
    included); with the error term kept it is the exact model, and an ablation removes one latent's share."""
    torch.manual_seed(0)
    tc = Sae(SaeConfig(d_in=32, n_latents=64, k=4, architecture=arch, hookpoint="mlp_in.1", target_hookpoint="mlp_out.1"))
    with torch.no_grad():
        for p in tc.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a skip term and biases that are not zero
    ids = model.encode_prompt(TEXT)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, 0] = False
    acts = model.capture(ids, ["mlp_in.1", "mlp_out.1"])
    x_in, y = acts["mlp_in.1"], acts["mlp_out.1"]  # the splice changes nothing upstream of mlp_out.1
    with torch.no_grad():
        y_hat = tc.reconstruct(x_in)
        lat = tc.encode(x_in)

    def at_out(new):
        return {"mlp_out.1": lambda v: torch.where(keep[..., None], new.to(v.dtype), v)}

    clean = model.token_nll(ids)
    spliced = model.token_nll(ids, edits=Splice(tc, error_term=False))
    torch.testing.assert_close(spliced, model.token_nll(ids, edits=at_out(y_hat)))
    assert not torch.allclose(spliced, clean), "the prediction differs from the MLP's output"
    assert torch.equal(model.token_nll(ids, edits=Splice(tc, error_term=True)), clean)
    f = int((lat[0, 1:] > 0).sum(0).argmax())
    assert (lat[0, 1:, f] > 0).any()
    ablated = model.token_nll(ids, edits=Ablate(tc, [f]))
    torch.testing.assert_close(ablated, model.token_nll(ids, edits=at_out(y - lat[..., f : f + 1] * tc.W_dec[f].detach())))


def test_transcoder_must_predict_a_later_hook_point(model):
    tc = Sae(SaeConfig(d_in=32, n_latents=64, k=4, architecture="transcoder", hookpoint="mlp_out.1", target_hookpoint="mlp_in.1"))
    with pytest.raises(InterventionError, match="does not run first"):
        model.token_nll(model.encode_prompt(TEXT), edits=Splice(tc))

@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu", "gated"])
def test_bfloat16_saes_can_be_edited(model, arch, tmp_path):
    """A bfloat16 SAE (`SaeConfig(dtype='bfloat16')`, as saved and loaded) compiles into edits and splices in: its
    plain-tensor encoder is checked against its own code in float32, since in bfloat16 the inputs' rounding alone
    moved latents past the check's tolerance (before: InterventionError for all four architectures here)."""
    extra = {"jumprelu": {"target_l0": 4}}.get(arch, {})
    cfg = SaeConfig(d_in=model.d_model, n_latents=64, k=4, architecture=arch, hookpoint="resid_post.1", dtype="bfloat16", **extra)
    sae = Sae.load(Sae(cfg, seed=0).save(tmp_path / arch))
    assert sae.W_enc.dtype == torch.bfloat16
    ids = saekit.contexts(model, ["The cat sat on the mat and looked at the door."], context_len=12, n_tokens=12).input_ids[:1]
    spliced = model.logits(ids, edits=Splice(sae, error_term=False))
    clean = model.logits(ids)
    assert torch.isfinite(spliced).all() and not torch.allclose(spliced, clean)
