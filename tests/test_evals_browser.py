"""Autointerp explanations and scores in the FeatureBrowser: Python state, and the exported HTML in Chromium
(search by explanation text, the 'autointerp' column and its sort)."""

from __future__ import annotations

import pytest

from saekit.evals import autointerp
from saekit.widgets import FeatureBrowser
from saekit.widgets.browser import FeatureTable
from test_features import make_tiny_stats


@pytest.fixture(scope="module")
def scored():
    model, sae, _, stats = make_tiny_stats()
    res = autointerp(stats, model=model, sae=sae, n_features=stats.n_features, n_non=3, progress=False)
    return stats, res.table()


def test_table_carries_scores_and_sorts_by_them(scored):
    stats, df = scored
    assert len(df) >= 2
    t = FeatureTable(stats, sort_by="autointerp")
    assert set(t.eval_scores) == {str(f) for f in df.index}
    best = max(df.index, key=lambda f: (df.loc[f, "detection_random"], -f))
    assert t.eval_scores[str(best)]["detection"] == round(df.loc[best, "detection_random"], 3)
    first = t.order()[0]
    assert df.loc[first, "detection_random"] == df["detection_random"].max()
    f = int(df.index[0])
    t.query = stats.labels[f].split("'")[1] if "'" in stats.labels[f] else stats.labels[f]
    assert f in t.order()  # search by explanation text


@pytest.mark.browser
def test_exported_browser_shows_autointerp_column(scored, tmp_path):
    from browser_harness import chromium_browser, require_chromium, watch_errors

    require_chromium()
    stats, df = scored
    path = FeatureBrowser(stats).to_html(tmp_path / "browser.html")
    with chromium_browser() as browser:
        context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
        page = context.new_page()
        errors = watch_errors(page)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
        page.locator(".sk-head [data-key=autointerp]").click()
        first = page.locator(".sk-spacer .sk-row").first
        f = int(first.get_attribute("data-feature"))
        assert df.loc[f, "detection_random"] == df["detection_random"].max()
        cell = first.locator(".sk-autointerp").inner_text()
        assert cell.startswith(f"{df.loc[f, 'detection_random']:.2f}")
        g = int(df.index[0])
        word = stats.labels[g].split("'")[1]
        page.locator("input.sk-search").fill(word)
        shown = [int(r.get_attribute("data-feature")) for r in page.locator(".sk-spacer .sk-row").all()]
        assert g in shown
        assert errors == []
        context.close()
