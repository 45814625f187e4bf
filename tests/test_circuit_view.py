"""CircuitView: its plain graph data, live ablation through the kernel, dashboards on click, bad input, and
the exported page in a real browser (offline: nodes drawn, slider hides nodes, hover shows top tokens as
text, click selects)."""

from __future__ import annotations

import pytest
import torch

import saekit
from saekit.circuits import ERROR, attribute, logit_diff
from saekit.errors import WidgetError
from saekit.features import feature_stats
from saekit.widgets import CircuitView, FeatureDashboard
from test_features import HOSTILE, TEXTS, make_tiny

HPS = ["resid_post.0", "resid_post.1"]
PAIRS = [("hello world", "hallo world"), ("abcdefghijk", "abcdefgxijk")]


def circuit_setup():
    """(model, saes, stats, metric, circuit) on a tiny random model: two SAEs, hover statistics, edges."""
    model, _ = make_tiny()
    saes = {h: saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=32, k=4, hookpoint=h), seed=i + 1) for i, h in enumerate(HPS)}
    stats = {h: feature_stats(model, saes[h], [*TEXTS[:3], HOSTILE], context_len=24, top_k=3, n_samples=2, progress=False) for h in HPS}
    metric = logit_diff(model, "a", "b")
    torch.manual_seed(0)
    c = attribute(model, saes, PAIRS, metric, method="atp", node_threshold=0.0, edges=False, progress=False)
    top = max(float(s.abs().max()) for s in c.scores.values())
    c = attribute(model, saes, PAIRS, metric, method="atp", node_threshold=top / 20, progress=False)
    return model, saes, stats, metric, c


@pytest.fixture(scope="module")
def setup():
    return circuit_setup()


def test_graph_data_and_live_ablation(setup):
    model, saes, stats, metric, c = setup
    texts = [a for a, _ in PAIRS]
    view = CircuitView(c, stats, model=model, saes=saes, prompts=texts, metric=metric)
    g = view._graph
    assert g["rows"] == HPS and len(g["cols"]) == len(c.tokens)
    assert g["nodes"] and all(n["row"] in (0, 1) for n in g["nodes"])
    scores = [abs(n["score"]) for n in g["nodes"]]
    assert max(scores) == pytest.approx(g["max_score"])
    assert any(n["tokens"] for n in g["nodes"] if n["feature"] != ERROR)  # hover tokens from FeatureStats
    assert g["edges"] and all(0 <= u < len(g["nodes"]) and 0 <= d < len(g["nodes"]) for u, d, _ in g["edges"])
    feat = next(n for n in g["nodes"] if n["feature"] != ERROR)
    view.ablation = [[feat["hookpoint"], feat["feature"]]]  # what a click does
    r = view.ablation_result
    direct = saekit.circuits.ablate(model, saes, texts, metric, {feat["hookpoint"]: [feat["feature"]]})
    assert r["metric_ablated"] == pytest.approx(float(direct.metric_ablated.mean()))
    assert view.error == ""
    view.selected = [feat["hookpoint"], feat["position"], feat["feature"]]  # a click opens the dashboard
    d = view.feature_dashboard  # a click opens the clicked feature's dashboard, on the same statistics
    assert isinstance(d, FeatureDashboard) and d.feature == feat["feature"] and d.stats is stats[feat["hookpoint"]]
    assert "CircuitView(" in repr(view)


def test_bad_input(setup):
    model, saes, stats, metric, c = setup
    with pytest.raises(WidgetError, match="Circuit"):
        CircuitView({"not": "a circuit"})
    with pytest.raises(WidgetError, match="all of model"):
        CircuitView(c, stats, model=model)
    with pytest.raises(WidgetError, match="nothing to evaluate"):
        CircuitView(c).evaluate()
    view = CircuitView(c, stats, model=model, saes=saes, prompts=["hello", "hello world"], metric=metric)
    view.ablation = [[HPS[0], 1]]
    assert "different lengths" in view.error


@pytest.mark.browser
def test_exported_html_in_browser(setup, tmp_path):
    from browser_harness import chromium_browser, screenshot, watch_errors

    model, saes, stats, metric, c = setup
    view = CircuitView(c, stats)
    path = view.to_html(tmp_path / "circuit.html")
    with chromium_browser() as browser:
        context = browser.new_context(offline=True, viewport={"width": 1400, "height": 900})
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        errors = watch_errors(page)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
        n_all = page.locator(".sk-node").count()
        assert n_all == sum(1 for n in view._graph["nodes"] if abs(n["score"]) >= view.threshold) > 0
        assert page.locator(".sk-edge").count() > 0
        assert page.evaluate("() => window.__pwned === undefined") and page.locator("body img").count() == 0
        # hover: the feature's top tokens, as text
        feat_idx = next(i for i, n in enumerate(view._graph["nodes"]) if n["feature"] != ERROR and n["tokens"] and abs(n["score"]) >= view.threshold)
        page.locator(f'.sk-node[data-node="{feat_idx}"]').hover()
        tip = page.locator(".sk-tip")
        assert tip.is_visible()
        assert view._graph["nodes"][feat_idx]["tokens"][0].strip() in tip.inner_text()
        # click selects
        page.locator(f'.sk-node[data-node="{feat_idx}"]').click()
        assert "selected:" in page.locator(".sk-info").inner_text()
        # the slider at its top hides all but the largest nodes
        page.locator(".sk-threshold").fill("1000")
        assert 0 < page.locator(".sk-node").count() < n_all
        screenshot(page, "export_circuit_view")
        assert errors == [], errors
        assert all(u.startswith(("file:", "blob:", "data:")) for u in requests), requests
        context.close()
