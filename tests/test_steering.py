"""Steering in units people can reason about (max activation, activation norm), clamping only where a feature
fires, and `steering_eval` (concept and fluency, against the difference-of-means baseline), on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

import saekit
from saekit.features import feature_stats
from saekit.interventions import Clamp, InterventionError, Steer, activation_norm, compile_edits
from saekit.lm.in_trace import sae_edit
from saekit.steering_eval import diff_of_means, output_scores, steering_eval
from saekit.widgets import SteeringPanel
from test_features import TEXTS
from test_widgets_interventions import make_model_sae


@pytest.fixture(scope="module")
def setup():
    model, sae = make_model_sae()
    stats = feature_stats(model, sae, TEXTS, context_len=32, top_k=4, n_samples=4, progress=False)
    fired = [int(f) for f in torch.nonzero(stats.max_act > 0).squeeze(-1)]
    silent = [int(f) for f in torch.nonzero(stats.max_act == 0).squeeze(-1)]
    assert fired, "the tiny SAE fires on the test texts"
    return model, sae, stats, fired, silent


def test_steer_in_max_activation_units(setup):
    model, sae, stats, fired, _ = setup
    f = fired[0]
    edit = Steer(None, (sae, f), 3.0, unit="max_act", stats=stats)
    assert edit.scale == pytest.approx(float(stats.max_act[f]))
    assert edit.raw_strength == pytest.approx(3.0 * float(stats.max_act[f]))
    torch.testing.assert_close(edit.vector(), 3.0 * float(stats.max_act[f]) * sae.W_dec[f].detach().float())
    assert edit.stats is None, "only the scale travels with the edit"
    assert "max_act" in repr(edit)


def test_steer_vector_in_norm_units_is_normalised(setup):
    model, sae, *_ = setup
    v = torch.randn(model.d_model) * 7
    edit = Steer("resid_post.1", v, 2.0, unit="resid_norm", scale=5.0)
    assert float(edit.vector().norm()) == pytest.approx(10.0, rel=1e-5)
    norm = activation_norm(model, "resid_post.1", TEXTS, n_tokens=256)
    x = model.capture(model.encode_prompt(TEXTS[0]), ["resid_post.1"])["resid_post.1"][0, 1:]
    assert norm == pytest.approx(float(x.norm(dim=-1).mean()), rel=0.5), "the mean norm is the size of typical activations"


@pytest.mark.parametrize("kwargs, message", [
    (dict(unit="max_act"), "needs the size of one unit"),
    (dict(unit="resid_norm"), "activation_norm"),
    (dict(unit="furlongs"), "Steer.unit must be one of"),
    (dict(unit="raw", scale=2.0), "drop them for unit='raw'"),
    (dict(unit="resid_norm", scale=float("nan")), "must be finite"),
    (dict(unit="resid_norm", scale=-1.0), "must be positive"),
])
def test_steer_unit_errors(setup, kwargs, message):
    _, sae, *_ = setup
    with pytest.raises(InterventionError, match=message):
        Steer(None, (sae, 0), 1.0, **kwargs)


def test_max_act_unit_refuses_unknown_maxima(setup):
    model, sae, stats, _, silent = setup
    if silent:
        with pytest.raises(InterventionError, match="never fired"):
            Steer(None, (sae, silent[0]), 1.0, unit="max_act", stats=stats)
    other = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=32, k=4, hookpoint="resid_post.1"))
    with pytest.raises(InterventionError, match="describe 64 features but the SAE has 32"):
        Steer(None, (other, 0), 1.0, unit="max_act", stats=stats)
    with pytest.raises(InterventionError, match="must be finite"):
        Steer(None, (sae, 0), float("inf"))
    with pytest.raises(InterventionError, match="plain vector has no maximum"):
        Steer("resid_post.1", torch.ones(model.d_model), 1.0, unit="max_act", stats=stats)


def _plan(model, edit):
    [(hp, spec)] = compile_edits(model, [edit])
    return spec


def test_clamp_where_active_leaves_silent_positions_alone(setup):
    """where='active' edits a position only where the feature fires; where='all' edits every position."""
    model, sae, stats, fired, _ = setup
    f = fired[0]
    x_BTD = model.capture(model.encode_prompt(" ".join(TEXTS[:3])), ["resid_post.1"])["resid_post.1"].float()
    a_N = sae.encode(x_BTD[0])[:, f].detach()
    assert (a_N > 0).any() and (a_N == 0).any(), "the test needs positions where the feature fires and where it does not"
    target = 2.0 * float(stats.max_act[f])
    active = sae_edit(_plan(model, Clamp(sae, {f: 2.0}, unit="max_act", stats=stats, where="active")), x_BTD)[0]
    every = sae_edit(_plan(model, Clamp(sae, {f: target})), x_BTD)[0]
    silent, firing = a_N == 0, a_N > 0
    torch.testing.assert_close(active[silent], x_BTD[0][silent])
    assert (every[silent] - x_BTD[0][silent]).norm(dim=-1).min() > 0, "where='all' moves every position"
    torch.testing.assert_close(active[firing], every[firing])


def test_clamp_unit_errors(setup):
    _, sae, stats, fired, _ = setup
    with pytest.raises(InterventionError, match="needs the features' maximum activations"):
        Clamp(sae, {fired[0]: 1.0}, unit="max_act")
    with pytest.raises(InterventionError, match="Clamp.where must be one of"):
        Clamp(sae, {fired[0]: 1.0}, where="sometimes")
    with pytest.raises(InterventionError, match="must be finite"):
        Clamp(sae, {fired[0]: float("nan")})
    c = Clamp(sae, {fired[0]: 2.0}, unit="max_act", stats=stats)
    assert c.targets() == {fired[0]: pytest.approx(2.0 * float(stats.max_act[fired[0]]))}


def test_panel_units_follow_stats(setup):
    model, sae, stats, fired, _ = setup
    p = SteeringPanel(model, sae, fired[:1], stats=stats, strengths=[2.0])
    assert (p.unit, p.max_strength) == ("max_act", 10.0)
    [edit] = p.edits()
    assert edit.raw_strength == pytest.approx(2.0 * float(stats.max_act[fired[0]]))
    p.unit = "raw"
    assert p.max_strength == 100.0, "the slider range follows the unit"
    p.max_strength = 40.0
    p.unit = "max_act"
    assert p.max_strength == 40.0, "a range set by hand stays"
    plain = SteeringPanel(model, sae, fired[:1])
    assert (plain.unit, plain.max_strength) == ("raw", 100.0)
    with pytest.raises(saekit.SaekitError, match="needs the features' maximum activations"):
        SteeringPanel(model, sae, fired[:1], unit="max_act")


def test_diff_of_means_is_the_mean_difference(setup):
    model, *_ = setup
    a, b = ["The cat sat on the mat.", "A dog ran home"], ["x = y + 1", "Numbers: 1, 2, 3."]  # one context each
    v = diff_of_means(model, "resid_post.1", a, b)

    def mean(texts):
        rows = [model.capture(model.encode_prompt(t), ["resid_post.1"])["resid_post.1"][0, 1:] for t in texts]
        return torch.cat(rows).float().mean(0)

    torch.testing.assert_close(v, mean(a) - mean(b), rtol=1e-4, atol=1e-4)
    assert float(diff_of_means(model, "resid_post.1", a, a).norm()) < 1e-4
    with pytest.raises(InterventionError, match="non-empty list"):
        diff_of_means(model, "resid_post.1", [], b)


def test_steering_eval_measures_both_methods(setup):
    model, sae, stats, fired, _ = setup
    f = max(fired, key=lambda i: float(stats.density[i]))
    ev = steering_eval(model, sae, f, ["The cat", "A dog"], stats=stats, strengths=(1.0, 8.0), n_samples=2,
                       max_new_tokens=5, other_texts=TEXTS[3:6], progress=False)
    assert [(p.method, p.strength) for p in ev.points] == [
        ("none", 0.0), ("sae", 1.0), ("sae", 8.0), ("diff_means", 1.0), ("diff_means", 8.0)]
    for p in ev.points:
        assert math.isfinite(p.nll) and p.nll > 0 and p.concept >= 0 and 0 <= p.concept_tokens <= 1
        assert len(p.samples) == 4
        assert 0 <= p.concept_hits <= 1 and (p.concept_hits > 0) == (p.concept > 0)
        assert p.concept_hits * len(p.samples) == pytest.approx(round(p.concept_hits * len(p.samples)))
    assert ev.points[2].raw_strength == pytest.approx(8.0 * float(stats.max_act[f]))
    # strong steering on a random tiny model changes the text, so the scores move away from the reference
    strong = ev.method("sae")[-1]
    assert strong.samples != ev.reference.samples
    assert ev.best("sae", max_nll_increase=1e9).concept == max(p.concept for p in ev.method("sae"))
    assert ev.best("sae", max_nll_increase=-1e9) is ev.reference, "nothing is more fluent than -inf: the reference"
    assert list(ev.table().columns)[:3] == ["method", "strength", "raw_strength"]
    import matplotlib

    matplotlib.use("Agg")
    assert ev.plot().get_xlabel().startswith("fluency")


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[]), "prompts must be a non-empty list"),
    (dict(prompts=["  "]), "prompts must be a non-empty list"),
    (dict(strengths=(float("nan"),)), "positive and finite"),
    (dict(strengths=(0.0,)), "positive and finite"),
    (dict(methods=("telepathy",)), "methods must be a non-empty subset"),
    (dict(n_samples=0), "n_samples must be a positive int"),
])
def test_steering_eval_bad_input(setup, kwargs, message):
    model, sae, stats, fired, _ = setup
    args = dict(prompts=["The cat"], stats=stats)
    args.update(kwargs)
    prompts = args.pop("prompts")
    with pytest.raises(InterventionError, match=message):
        steering_eval(model, sae, fired[0], prompts, progress=False, **args)


def test_steering_eval_refuses_a_feature_without_statistics(setup):
    model, sae, stats, _, silent = setup
    if not silent:
        pytest.skip("every latent of the tiny SAE fired on the test texts")
    with pytest.raises(InterventionError, match="never fired"):
        steering_eval(model, sae, silent[0], ["The cat"], stats=stats, progress=False)


def test_output_scores_measure_the_rise_of_each_features_own_peak_tokens(setup):
    model, sae, stats, fired, silent = setup
    feats = fired[:4]
    df = output_scores(model, sae, feats, stats, prompts=["The cat", "A dog"], n_tokens=3, progress=False)
    assert sorted(df.index.tolist()) == sorted(feats)
    assert (df["output_score"].diff().dropna() <= 1e-9).all(), "highest first"
    f = int(df.index[0])
    # the score is the mean over prompts of the change of log P(next token is a peak token)
    from saekit.steering_eval import concept_token_ids

    ids = concept_token_ids(stats, f, 3)
    assert df.loc[f, "peak_tokens"] == " | ".join(stats.token_str(i) for i in ids)
    edit = Steer(None, (sae, f), 1.0, unit="max_act", stats=stats)
    direct = []
    for p in ("The cat", "A dog"):
        e = saekit.measure(model, p, edit, tokens=ids, top=0)
        direct.append(float(torch.logsumexp(e.logp_edited[-1], -1) - torch.logsumexp(e.logp_clean[-1], -1)))
    assert df.loc[f, "output_score"] == pytest.approx(sum(direct) / 2, abs=1e-5)
    # a vanishing strength moves nothing; the default strength moves the tiny model's predictions
    tiny = output_scores(model, sae, feats, stats, strength=1e-6, progress=False)
    assert tiny["output_score"].abs().max() < 1e-3
    assert df["output_score"].abs().max() > 1e-3
    with pytest.raises(InterventionError, match="features is empty"):
        output_scores(model, sae, [], stats, progress=False)
    with pytest.raises(InterventionError, match="positive and finite"):
        output_scores(model, sae, feats, stats, strength=float("nan"), progress=False)
    if silent:
        with pytest.raises(InterventionError, match="never fired"):
            output_scores(model, sae, [silent[0]], stats, progress=False)
