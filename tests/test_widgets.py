"""Widgets, Python side: state in, state out, strict kwargs, stable reprs, safe standalone HTML."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import numpy as np
import pytest

from saekit.errors import WidgetError
from saekit.features import DENSE_DENSITY, features_for_tokens
from saekit.widgets import FeatureBrowser, FeatureDashboard, PromptInspector
from saekit.widgets.browser import NUMERIC
from saekit.widgets.base import asset_dir, embed_json
from test_features import HOSTILE, make_tiny_stats

ALLOWED_URLS = {"http://www.w3.org/2000/svg"}  # the SVG namespace name, never fetched


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_stats()


def hostile_feature(stats) -> int:
    """A feature with the hostile document among its top contexts."""
    for f in range(stats.n_features):
        if any(e["doc"] and "<script>" in "".join(e["tokens"]) for e in stats.examples(f)):
            return f
    for f in range(stats.n_features):
        if any("<" in "".join(e["tokens"]) for e in stats.examples(f)):
            return f
    raise AssertionError("no feature fires on the hostile text")


def test_no_import_side_effects():
    """`import saekit.widgets` does not import anywidget until a widget is asked for."""
    import subprocess
    import sys

    code = "import sys, saekit, saekit.widgets; print('anywidget' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_assets_exist():
    for name in ("feature_dashboard", "feature_table", "prompt_inspector"):
        js = (asset_dir() / f"{name}.js").read_text()
        assert (asset_dir() / f"{name}.css").exists()
        assert "export default" in js and "innerHTML" not in js, "data goes in with textContent only"
        assert not re.search(r"""import\s.*from\s+["']https?:""", js), "no CDN imports"


def test_dashboard_state_in_and_out(tiny):
    """Setting `feature` loads its view; a label typed in the widget lands in the statistics."""
    *_, stats = tiny
    d = FeatureDashboard(stats, feature=2)
    assert list(d._views) == ["2"] and d._views["2"]["feature"] == 2
    d.feature = 5
    assert list(d._views) == ["5"] and d._views["5"] == json.loads(json.dumps(stats.view(5)))
    d.label = "my label"  # what the front end does when the label box changes
    assert stats.labels[5] == "my label" and d._views["5"]["label"] == "my label"
    d.feature = 2
    assert d.label == ""
    d.feature = 5
    assert d.label == "my label"
    stats.set_label(5, "")
    with pytest.raises(Exception, match="out of range"):
        d.feature = stats.n_features


def test_dashboard_token_click_navigates(tiny):
    *_, stats = tiny
    d = FeatureDashboard(stats, feature=0)
    found = features_for_tokens(stats, ["e"], top=5)
    d.clicked_token = "e"
    assert d.feature in set(found.index) | {0}
    assert d.feature != 0 or list(found.index) == [0]


def test_unknown_kwargs_rejected(tiny):
    model, sae, _, stats = tiny
    with pytest.raises(TypeError, match="unknown keyword.*'colour'.*accepts: clicked_token, feature, label"):
        FeatureDashboard(stats, colour="red")
    with pytest.raises(TypeError, match="unexpected keyword"):
        FeatureBrowser(stats, colour="red")
    with pytest.raises(TypeError, match="unknown keyword.*'txt'"):
        PromptInspector(model, sae, "hi", txt="typo")
    with pytest.raises(TypeError, match="takes FeatureStats"):
        FeatureDashboard({"not": "stats"})


def test_reprs_are_short_and_deterministic(tiny):
    model, sae, _, stats = tiny
    a, b = FeatureDashboard(stats, feature=1), FeatureDashboard(stats, feature=1)
    assert repr(a) == repr(b) == f"FeatureDashboard(feature=1, n_features={stats.n_features})"
    assert "0x" not in repr(FeatureBrowser(stats)) and len(repr(FeatureBrowser(stats))) < 80
    p = PromptInspector(model, sae, "abc", feature=3)
    assert repr(p) == "PromptInspector(n_tokens=3, feature=3, selected_token=-1)"


def test_browser_binary_columns_and_selection(tiny):
    """The table ships density/mean/max/score/rank/dense as packed float32, in FeatureStats.order() by
    default (dense features last); selecting a row opens it in the dashboard."""
    *_, stats = tiny
    br = FeatureBrowser(stats)
    cols = np.frombuffer(br.table._numeric, dtype="<f4").reshape(len(NUMERIC), stats.n_features)
    col = dict(zip(NUMERIC, cols))
    np.testing.assert_allclose(col["density"], stats.density.numpy())
    np.testing.assert_allclose(col["max_act"], stats.max_act.numpy())
    np.testing.assert_allclose(col["score"], stats.score().numpy(), rtol=1e-6)
    assert (col["dense"] == stats.is_dense().numpy()).all() and col["dense"].any() and not col["dense"].all()
    assert [int(f) for f in np.argsort(col["rank"])] == stats.order(), "rank is the position in the default order"
    assert len(br.table._text) == stats.n_features
    order = br.table.order()
    assert br.table.sort_by == "score" and order == stats.order()
    assert order[0] == br.table.selected == br.dashboard.feature
    dense = stats.is_dense()
    first_dense = next(i for i, f in enumerate(order) if dense[f])
    assert not any(dense[f] for f in order[:first_dense]) and all(dense[f] or stats.density[f] == 0 for f in order[first_dense:])
    br.table.descending = False
    assert br.table.order() == order[::-1]
    br.table.descending = True
    br.table.selected = order[3]
    assert br.dashboard.feature == order[3]
    br.dashboard.feature = order[1]  # a neighbour click in the dashboard moves the table selection too
    assert br.table.selected == order[1]
    br.dashboard.label = "seen in browser"
    assert br.table.labels == {str(order[1]): "seen in browser"}
    stats.set_label(order[1], "")
    br.table.query = f"#{order[2]}"
    assert br.table.order() == [order[2]]
    by_max = FeatureBrowser(stats, sort_by="max_act").table.order()
    assert [stats.max_act[f] for f in by_max] == sorted((stats.max_act[f] for f in by_max), reverse=True)
    with pytest.raises(WidgetError, match="unknown sort_by 'loudest'.*'score'"):
        FeatureBrowser(stats, sort_by="loudest")


def test_dashboard_view_carries_trust_signals(tiny):
    """The dashboard's view has the dense flag, the score and its terms, the hook point for the logit
    caveat, and its front end labels the histogram's axes and shows the caveat."""
    *_, stats = tiny
    f = int(stats.density.argmax())
    v = FeatureDashboard(stats, feature=f)._views[str(f)]
    assert v["dense"] is bool(stats.density[f] > DENSE_DENSITY) and v["dense_threshold"] == DENSE_DENSITY
    assert v["score"] == pytest.approx(float(stats.score()[f]), abs=1e-4)
    assert set(v["score_terms"]) == {"n_examples", "peak_share", "n_documents", "doc_share", "fill"}
    assert v["hookpoint"] == stats.meta["hookpoint"]
    js = (asset_dir() / "feature_dashboard.js").read_text()
    assert "activation (log₂ bins)" in js and '"tokens"' in js and "sk-ytick" in js and "sk-xtick" in js
    assert "weakly meaningful" in js and "sk-badge-dense" in js
    table_js = (asset_dir() / "feature_table.js").read_text()
    assert 'key: "score"' in table_js and "sk-badge-dense" in table_js


def test_prompt_inspector_two_way(tiny):
    """Setting text reruns the model; feature and selected_token are plain observable traits."""
    model, sae, _, stats = tiny
    p = PromptInspector(model, sae, "Paris", stats=stats)
    assert p._tokens == list("Paris") and p.feature >= 0
    seen = []
    p.observe(lambda c: seen.append((c["name"], c["new"])), ["selected_token", "feature"])
    p.selected_token = 2
    p.feature = p._features[2][0]
    assert ("selected_token", 2) in seen and seen[-1][0] == "feature"
    p.text = "Madrid!"
    assert p._tokens == list("Madrid!") and p.activations.text == "Madrid!"
    assert set(p._info) == {str(f) for fs in p._features for f in fs}


def test_embed_json_cannot_close_script():
    s = embed_json({"t": "</script><script>alert(1)</script>", "b": b"\x00\xff"})
    assert "</" not in s and "<" not in s
    assert json.loads(s)["t"] == "</script><script>alert(1)</script>"
    assert json.loads(s)["b"] == {"$bytes": "AP8="}


@pytest.mark.parametrize("which", ["dashboard", "browser", "prompt"])
def test_to_html_is_standalone_and_escaped(tiny, tmp_path, which):
    """Exported pages fetch nothing (CSP default-src 'none', no URLs) and carry hostile text only as data."""
    model, sae, _, stats = tiny
    f = hostile_feature(stats)
    w = {
        "dashboard": lambda: FeatureDashboard(stats, feature=f),
        "browser": lambda: FeatureBrowser(stats, selected=f),
        "prompt": lambda: PromptInspector(model, sae, HOSTILE),
    }[which]()
    path = w.to_html(tmp_path / f"{which}.html")
    page = path.read_text(encoding="utf-8")
    assert "default-src 'none'" in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    script_src = re.search(r"script-src ([^;]+)", csp).group(1).split()
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert "base-uri 'none'" in csp and "form-action 'none'" in csp
    # the one executable inline script is allowed by its hash, and only it
    (runtime,) = re.findall(r'<script type="module">(.*?)</script>', page, re.S)
    digest = base64.b64encode(hashlib.sha256(runtime.encode("utf-8")).digest()).decode()
    assert [s for s in script_src if s.startswith("'sha256-")] == [f"'sha256-{digest}'"]
    urls = set(re.findall(r"""https?://[^\s"'\\)<>]+""", page))
    assert urls <= ALLOWED_URLS, urls
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(https?:)?//""", page)
    # the only markup is ours: one JSON state script and one module script
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<img" not in page and "window.__pwned" not in page.split('id="saekit-state">')[0]
    state = json.loads(re.search(r'id="saekit-state">(.*?)</script>', page, re.S).group(1))
    text = json.dumps(state, ensure_ascii=False)
    assert "<img" in text or "<" in text, "the hostile text travels as data"


@pytest.mark.parametrize("which", ["dashboard", "browser", "prompt"])
def test_display_bundle_carries_static_snapshot(tiny, tmp_path, which):
    """A widget's display bundle holds the live view and, as text/html, its to_html page in a sandboxed iframe,
    so a notebook saved with outputs shows the widget where no kernel runs; hostile text stays escaped."""
    import html as html_lib

    model, sae, _, stats = tiny
    f = hostile_feature(stats)
    w = {
        "dashboard": lambda: FeatureDashboard(stats, feature=f),
        "browser": lambda: FeatureBrowser(stats, selected=f),
        "prompt": lambda: PromptInspector(model, sae, HOSTILE),
    }[which]()
    bundle = w._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    assert data["text/plain"] == repr(w)
    frame = data["text/html"]
    m = re.fullmatch(r'<iframe class="saekit-snapshot" [^>]*sandbox="allow-scripts" [^>]*srcdoc="([^"]*)"></iframe>', frame)
    assert m, frame[:300]
    assert "allow-same-origin" not in frame  # an opaque origin: the page cannot reach the notebook
    page = html_lib.unescape(m.group(1))
    assert page.startswith("<!doctype html>") and "default-src 'none'" in page
    state = json.loads(re.search(r'id="saekit-state">(.*?)</script>', page, re.S).group(1))
    first = state["widgets"][0]["state"]
    assert first["_static"] is True
    if which == "dashboard":
        assert first["feature"] == f and str(f) in first["_views"]
    if which == "browser":
        assert len(state["widgets"]) == 2 and str(f) in state["widgets"][1]["state"]["_views"]
        assert len(page) < len(w.to_html(tmp_path / "full.html").read_text()), "the snapshot keeps fewer dashboards"


def test_a_failing_snapshot_never_breaks_the_display(tiny, monkeypatch):
    """The snapshot is an extra: when the static page cannot be built the live view still displays (with a warning)."""
    _, _, _, stats = tiny
    w = FeatureDashboard(stats, feature=0)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(w, "to_html", broken)
    with pytest.warns(UserWarning, match="no static snapshot.*disk full"):
        bundle = w._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data and "text/html" not in data
