"""Intervention widgets (SteeringPanel, AblationPanel), Python side: state in and out, the buttons' traits,
errors shown instead of raised, strict kwargs, stable reprs, safe standalone HTML."""

from __future__ import annotations

import json
import math
import re

import pytest

import saekit
from saekit.interventions import Ablate, Clamp, InterventionError, Steer, measure
from saekit.widgets import AblationPanel, FeatureBrowser, FeatureTable, SteeringPanel
from saekit.widgets.base import asset_dir
from test_features import HOSTILE, TEXTS
from tiny import tiny_model

ALLOWED_URLS = {"http://www.w3.org/2000/svg"}
BIG = 60.0  # a steering strength that changes the tiny model's greedy continuation


def make_model_sae():
    model = tiny_model("gemma3")
    sae = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=64, k=4, hookpoint="resid_post.1"))
    return model, sae


def firing_features(model, sae, text: str, n: int = 2) -> list[int]:
    """The `n` features that fire on most positions of `text` (BOS left out)."""
    acts = sae.encode(model.capture(model.encode_prompt(text), ["resid_post.1"])["resid_post.1"][0])
    return [int(f) for f in (acts[1:] > 0).sum(0).topk(n).indices]


@pytest.fixture(scope="module")
def tiny():
    return make_model_sae()


def press(widget, trait):
    """What the front end's button does: increment the click counter trait (through the comm's set_state)."""
    widget.set_state({trait: getattr(widget, trait) + 1})


def test_assets_follow_house_rules():
    for name in ("steering_panel", "ablation_panel"):
        js = (asset_dir() / f"{name}.js").read_text()
        assert (asset_dir() / f"{name}.css").read_text().strip()
        assert "export default { render }" in js and "innerHTML" not in js and "outerHTML" not in js
        assert not re.search(r"""\bimport\b[^;]*["']https?:""", js) and "fetch(" not in js, "no CDN imports, no network"
        assert re.search(r"return \(\) => \{ handlers\.forEach", js), "render returns a cleanup function"
    assert {"SteeringPanel", "AblationPanel"} <= set(saekit.widgets.__all__)


# -- SteeringPanel --------------------------------------------------------------------------------


def test_steering_generate_fills_outputs(tiny):
    """Pressing Generate runs saekit.generate with the panel's settings; outputs and settings are readable."""
    model, sae = tiny
    p = SteeringPanel(model, sae, [3, 5], prompt="The cat", strengths=[BIG, 0.0], max_new_tokens=6)
    assert (p.features, p.strengths, p.mode, p.do_sample) == ([3, 5], [BIG, 0.0], "steer", False)
    assert p.default_text == p.steered_text == "" and p.last_settings == {}
    press(p, "_generate_clicks")
    want = saekit.generate(model, "The cat", [Steer(None, (sae, 3), BIG), Steer(None, (sae, 5), 0.0)], max_new_tokens=6)
    assert (p.default_text, p.steered_text) == (want.default, want.steered)
    assert p.generation == want and p.error == "" and not p._busy
    assert p.steered_text != p.default_text, "a large strength changes the continuation"
    assert p.last_settings == {
        "prompt": "The cat", "mode": "steer", "unit": "raw", "where": "all", "features": [3, 5], "strengths": [BIG, 0.0],
        "max_new_tokens": 6, "do_sample": False, "seed": 0, "edits": want.edits,
    }
    # zero strength: steered equals default (greedy is deterministic)
    p.strengths = [0.0, 0.0]
    g = p.generate()
    assert g.steered == g.default == want.default
    assert p.last_settings["strengths"] == [0.0, 0.0]


def test_steering_front_end_state_and_clamp(tiny):
    """A slider moved in the view arrives as set_state; clamp mode builds one Clamp; sampling is seeded."""
    model, sae = tiny
    p = SteeringPanel(model, sae, [7], prompt="Hello", mode="clamp", strengths={7: 1.0}, max_new_tokens=5)
    p.set_state({"strengths": [BIG], "_generate_clicks": 1})  # what the JS sends: one message, slider + click
    assert p.last_settings["strengths"] == [BIG] and p.last_settings["mode"] == "clamp"
    want = saekit.generate(model, "Hello", Clamp(sae, {7: BIG}), max_new_tokens=5)
    assert p.steered_text == want.steered != p.default_text
    assert repr(p.edits()) == repr([Clamp(sae, {7: BIG})])
    p.set_state({"do_sample": True, "seed": 3})
    a, b = p.generate(), p.generate()
    assert a == b and p.last_settings["seed"] == 3 and p.last_settings["do_sample"] is True
    # features added from Python (or a browser selection) get the default strength
    p.default_strength = 2.5
    p.add_feature(9)
    p.add_feature(9)
    assert p.features == [7, 9] and p.strengths == [BIG, 2.5] and p.error == ""
    p.remove_feature(7)
    assert p.features == [9] and p.strengths == [2.5]


def test_steering_errors_are_shown_not_raised(tiny):
    """Bad settings land in `error` (shown by the view); the last good outputs stay; a fix clears it."""
    model, sae = tiny
    p = SteeringPanel(model, sae, [3], prompt="Hi", strengths=[BIG], max_new_tokens=4)
    good = p.generate()
    p.set_state({"strengths": [None]})  # NaN travels as null
    assert math.isnan(p.strengths[0]) and "must be finite" in p.error
    assert p.get_state()["strengths"] == [None], "NaN never goes into a comm message"
    press(p, "_generate_clicks")
    assert "must be finite" in p.error and p.steered_text == good.steered and p.generation is good
    p.strengths = [1.0]
    assert p.error == ""
    p.features = [64]
    assert "feature 64 is out of range" in p.error and "0..63" in p.error
    assert p.generate() is None and "out of range" in p.error
    p.features = [3]
    p.max_new_tokens = 0
    assert "max_new_tokens must be a positive int" in p.error
    assert p.generate() is None and "max_new_tokens" in p.error
    p.max_new_tokens = 4
    p.prompt = ""
    assert p.generate() is None and "non-empty" in p.error
    p.prompt = "Hi"
    assert p.generate() is not None and p.error == ""
    # constructor misuse raises at once, with the fix named
    with pytest.raises(InterventionError, match="out of range"):
        SteeringPanel(model, sae, [100])
    with pytest.raises(ValueError, match="one per feature"):
        SteeringPanel(model, sae, [1, 2], strengths=[1.0])
    with pytest.raises(TypeError, match="saekit model"):
        SteeringPanel("gpt2", sae)


def test_linked_to_feature_browser(tiny):
    """Selecting a row in a FeatureBrowser (or a FeatureTable) adds that feature to the panels."""
    from saekit.features import feature_stats

    model, sae = tiny
    stats = feature_stats(model, sae, saekit.contexts(model, TEXTS[:5], context_len=24), top_k=2, n_samples=2,
                          window=(4, 1), batch_size=8, progress=False)
    browser = FeatureBrowser(stats)
    first = browser.table.selected
    steer = SteeringPanel(model, sae, browser, default_strength=5.0)
    abl = AblationPanel(model, sae, browser.table)
    assert steer.features == abl.features == [first] and steer.strengths == [5.0]
    other = next(f for f in browser.table.order() if f != first)
    browser.table.selected = other  # a click in the table
    assert steer.features == abl.features == [first, other] and steer.strengths == [5.0, 5.0]
    browser.table.selected = first  # already there: no duplicate
    assert steer.features == [first, other]
    steer.close()  # closing a panel unlinks it from the browser
    browser.dashboard.feature = next(f for f in browser.table.order() if f not in (first, other))
    assert steer.features == [first, other] and len(abl.features) == 3
    small = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=16, k=4, hookpoint="resid_post.1"))
    with pytest.raises(InterventionError, match="shows 64 features but the SAE has 16"):
        SteeringPanel(model, small, FeatureTable(stats))


# -- AblationPanel --------------------------------------------------------------------------------


def test_ablation_run_fills_results(tiny):
    """Run measures clean vs ablated; results are plain JSON data equal to saekit.measure's."""
    model, sae = tiny
    text = "The quick brown fox"
    fired = firing_features(model, sae, text)
    p = AblationPanel(model, sae, fired, prompt=text, top=3)
    assert p.results == {} and (p.mode, p.top) == ("zero", 3)
    press(p, "_run_clicks")
    want = measure(model, text, Ablate(sae, fired), top=3)
    r = p.results
    assert json.loads(json.dumps(r)) == r, "plain data"
    assert r["tokens"] == want.tokens and len(r["top_up"]) == len(r["top_down"]) == len(want.tokens)
    assert r["top_up"] == [[list(x) for x in pos] for pos in want.top_up]
    assert r["top_down"][-1] == [list(x) for x in want.top_down[-1]]
    assert r["loss_clean"] == want.loss_clean and r["loss_edited"] == want.loss_edited != want.loss_clean
    assert all(pe >= pc for pos in r["top_up"][1:] for _, pc, pe in pos)
    assert any(pe != pc for pos in r["top_up"] for _, pc, pe in pos), "ablating active features moves probabilities"
    assert p.last_settings == {"prompt": text, "features": fired, "mode": "zero", "top": 3} and p.error == ""
    # two-way: the view's prompt/features/mode arrive as state; mean mode with given means
    means = {f: 0.5 for f in fired}
    q = AblationPanel(model, sae, fired[:1], prompt="x", means=means)
    q.set_state({"prompt": text, "features": fired, "mode": "mean", "_run_clicks": 1})
    want = measure(model, text, Ablate(sae, fired, mode="mean", means=means), top=5)
    assert q.results["loss_edited"] == want.loss_edited and q.last_settings["mode"] == "mean"
    q.set_state({"features": [99]})
    assert "feature 99 is out of range" in q.error
    assert q.run() is None and q.results["loss_edited"] == want.loss_edited, "last good results stay"
    q.set_state({"features": []})
    assert q.run() is None and "no features given" in q.error


# -- both -----------------------------------------------------------------------------------------


def test_unknown_kwargs_and_reprs(tiny):
    model, sae = tiny
    with pytest.raises(TypeError, match="unknown keyword.*'strenght'"):
        SteeringPanel(model, sae, [1], strenght=[2.0])
    with pytest.raises(TypeError, match="unknown keyword.*'modes'"):
        AblationPanel(model, sae, [1], modes="zero")
    with pytest.raises(Exception, match="mode"):
        SteeringPanel(model, sae, [1], mode="ablate")
    a = SteeringPanel(model, sae, [1, 2], prompt="x" * 100)
    b = SteeringPanel(model, sae, [1, 2], prompt="x" * 100)
    assert repr(a) == repr(b) == "SteeringPanel(mode='steer', features=[1, 2], prompt='" + "x" * 31 + "…')"
    assert repr(AblationPanel(model, sae, [4], prompt="Hi")) == "AblationPanel(mode='zero', features=[4], prompt='Hi')"


@pytest.mark.parametrize("which", ["steering", "ablation"])
def test_to_html_is_standalone_and_escaped(tiny, tmp_path, which):
    """Exports show the last run statically, fetch nothing, and carry hostile text only as data."""
    model, sae = tiny
    if which == "steering":
        w = SteeringPanel(model, sae, [3], prompt=HOSTILE, strengths=[BIG], max_new_tokens=4)
        w.generate()
    else:
        w = AblationPanel(model, sae, [3, 5], prompt=HOSTILE, top=2)
        w.run()
    assert w.error == ""
    page = w.to_html(tmp_path / f"{which}.html").read_text(encoding="utf-8")
    assert "default-src 'none'" in page
    assert set(re.findall(r"""https?://[^\s"'\\)<>]+""", page)) <= ALLOWED_URLS
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert page.count("<script") == 2 and page.count("</script>") == 2 and "<img" not in page
    state = json.loads(re.search(r'id="saekit-state">(.*?)</script>', page, re.S).group(1))["widgets"][0]["state"]
    assert state["_static"] is True and state["prompt"] == HOSTILE
    if which == "steering":
        assert state["last_settings"]["prompt"] == HOSTILE and state["steered_text"] == w.steered_text
    else:
        assert state["results"]["prompt"] == HOSTILE and len(state["results"]["tokens"]) == len(w.results["tokens"])
