"""SplitTree and FeatureMap: Python-side state, and the exported HTML in headless Chromium (hover, click,
lasso, navigation, hostile text kept as text, no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saekit
from saekit.errors import WidgetError
from saekit.features import feature_stats, split_tree
from saekit.widgets import FeatureMap, SplitTree
from test_features import HOSTILE, TEXTS
from tiny import tiny_model


@pytest.fixture(scope="module")
def family():
    """A tiny model, three SAEs of widths 24/48/96 where the larger ones contain perturbed copies and splits of
    the smaller one's directions, their stats, and a token sample."""
    torch.manual_seed(0)
    model = tiny_model("gemma3")
    ctx = saekit.contexts(model, TEXTS, context_len=24)
    base = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=24, k=4, hookpoint="resid_post.1"), seed=1)
    saes = [base]
    for width in (48, 96):
        prev = saes[-1].W_dec.detach()
        W = torch.cat([prev + 0.3 * torch.randn_like(prev), prev + 0.3 * torch.randn_like(prev)])
        W = W / W.norm(dim=1, keepdim=True)
        s = saekit.Sae(saekit.SaeConfig(d_in=model.d_model, n_latents=width, k=4, hookpoint="resid_post.1"), seed=1)
        with torch.no_grad():
            s.W_dec.copy_(W)
            s.W_enc.copy_(W)
            s.b_dec.copy_(base.b_dec)
        saes.append(s)
    stats = [feature_stats(model, s, ctx, top_k=4, n_samples=4, window=(6, 2), batch_size=8, progress=False) for s in saes]
    acts = model.capture(ctx.input_ids, ["resid_post.1"], ctx.attention_mask)["resid_post.1"][ctx.attention_mask.bool()]
    return model, saes, stats, acts


def test_split_tree_widget_state(family):
    _, saes, stats, acts = family
    splits = split_tree(saes, acts, by="decoder", threshold=0.5)
    w = SplitTree(splits, stats)
    assert w._widths == [24, 48, 96] and w.root == w._roots[0]
    node = w._forest[str(w.root)]
    assert len(node["children"]) >= 2, "the most-split root comes first"
    assert all(f"{lvl}:{f}" in w._tokens for lvl, f in [(0, w.root), (1, node["children"][0]["feature"])])
    box = w.with_dashboard()
    child = node["children"][0]
    w.opened = [1, child["feature"]]
    dash = box.children[1]
    assert dash.feature == child["feature"] and dash.stats is stats[1]
    other = [f for f in range(24) if str(f) not in w._forest][0]
    w.root = other
    assert str(other) in w._forest
    with pytest.raises(WidgetError, match="each level"):
        SplitTree(splits, stats[:2])
    assert "widths=[24, 48, 96]" in repr(w)


def test_feature_map_widget_state(family):
    _, saes, stats, _ = family
    m = FeatureMap.of(saes[2], stats[2])
    assert m.n_features == 96 and m.color_by == "log10 density"
    np.testing.assert_array_equal(m.coordinates(), saekit.features.map_coordinates(saes[2]).numpy())
    assert len(m._tokens) == 96
    lab = FeatureMap.of(saes[2], stats[2], color=torch.arange(96) % 3, categories=["en", "es", "fr"], color_by="language")
    assert lab._categories == ["en", "es", "fr"]
    with pytest.raises(WidgetError, match="category indices"):
        FeatureMap(np.zeros((3, 2)), color=[0, 5, 1], categories=["a", "b"])
    with pytest.raises(WidgetError, match=r"\[F, 2\]"):
        FeatureMap(np.zeros((3, 3)))
    with pytest.raises(WidgetError, match="needs the SAE's FeatureStats"):
        FeatureMap.of(saes[2])


def test_feature_map_selection_reaches_a_browser(family):
    from saekit.widgets import FeatureBrowser

    _, saes, stats, _ = family
    b = FeatureBrowser(stats[2])
    m = FeatureMap.of(saes[2], stats[2]).link_browser(b)
    m.selected = [5, 7]
    assert b.table.selected == 7 and b.dashboard.feature == 7
    m.selected = [5, 7, 11]
    assert b.table.selected == 11


# -- in a browser -----------------------------------------------------------------------------------


@pytest.mark.browser
def test_exported_science_widgets_in_chromium(family, tmp_path):
    from browser_harness import chromium_browser, screenshot, watch_errors

    _, saes, stats, acts = family
    splits = split_tree(saes, acts, by="decoder", threshold=0.5)
    tree = SplitTree(splits, stats)
    n = 16_384  # the map must stay usable at this size
    g = torch.Generator().manual_seed(0)
    xy = torch.randn(n, 2, generator=g)
    xy[0] = torch.tensor([4.5, -4.5])  # alone in a corner, to hover it
    tokens = [f"tok{f}" for f in range(n)]
    tokens[0] = HOSTILE
    big = FeatureMap(xy, color=torch.arange(n) % 3, categories=["en", "es", "<b>fr</b>"], tokens=tokens, color_by="language")
    files = {"tree": tree.to_html(tmp_path / "tree.html"), "map": big.to_html(tmp_path / "map.html")}
    with chromium_browser() as browser:
        context = browser.new_context(offline=True, viewport={"width": 1100, "height": 900})
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        errors = watch_errors(page)
        page.goto(files["tree"].as_uri())
        page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
        root = page.locator(".sk-tree > .sk-branch > .sk-node").first
        assert root.get_attribute("data-level") == "0" and int(root.get_attribute("data-feature")) == tree.root
        kids = page.locator(".sk-tree > .sk-branch > .sk-children > .sk-branch > .sk-node")
        assert kids.count() == len(tree._forest[str(tree.root)]["children"]) >= 2
        assert "cos " in kids.first.inner_text()
        kids.first.click()
        assert "sk-opened" in kids.first.get_attribute("class")
        other = tree._roots[1]
        page.locator("select.sk-root-picker").select_option(str(other))
        assert int(page.locator(".sk-tree > .sk-branch > .sk-node").first.get_attribute("data-feature")) == other
        screenshot(page, "export_split_tree")
        assert errors == []

        page = context.new_page()
        errors = watch_errors(page)
        page.goto(files["map"].as_uri())
        page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
        canvas = page.locator(".saekit-map canvas.sk-canvas")
        assert canvas.get_attribute("data-n") == str(n)
        legend = page.locator(".sk-legend").inner_text()
        assert "<b>fr</b>" in legend and "en (5462)" in legend
        sx, sy, ox, oy = (float(v) for v in canvas.get_attribute("data-view").strip("[]").split(","))
        box = page.locator(".saekit-map .sk-overlay").bounding_box()
        to_page = lambda x, y: (box["x"] + ox + sx * x, box["y"] + oy + sy * y)  # noqa: E731
        # hover feature 0 (hostile tokens): the tip shows them as text
        px0, py0 = to_page(4.5, -4.5)
        page.mouse.move(px0, py0)
        tip = page.locator(".sk-tip")
        assert tip.is_visible() and "<script>" in tip.inner_text() and "feature 0" in tip.inner_text()
        assert page.evaluate("() => window.__pwned === undefined")
        page.mouse.click(px0, py0)
        assert "1 selected" in page.locator(".sk-map-status").inner_text()
        # a lasso around the square [0.5, 1.5]^2 selects exactly the points inside it
        corners = [(0.5, 0.5), (1.5, 0.5), (1.5, 1.5), (0.5, 1.5)]
        page.mouse.move(*to_page(*corners[0]))
        page.mouse.down()
        for c in corners[1:] + corners[:1]:
            page.mouse.move(*to_page(*c), steps=4)
        page.mouse.up()
        inside = int(((xy[:, 0] > 0.5) & (xy[:, 0] < 1.5) & (xy[:, 1] > 0.5) & (xy[:, 1] < 1.5)).sum())
        status = page.locator(".sk-map-status").inner_text()
        got = int(status.split("·")[1].split()[0])
        assert abs(got - inside) <= 3 and inside > 100, (got, inside)
        # smooth: a full redraw of 16k points takes well under a frame budget's few multiples
        ms = page.evaluate("""async () => {
            const c = document.querySelector('.saekit-map .sk-overlay');
            const t0 = performance.now();
            for (let i = 0; i < 10; i++) {
              c.dispatchEvent(new WheelEvent('wheel', {deltaY: -50, clientX: 200, clientY: 200, bubbles: true, cancelable: true}));
              await new Promise(requestAnimationFrame);
            }
            return (performance.now() - t0) / 10;
        }""")
        assert ms < 200, f"{ms:.0f} ms per zoom frame"
        page.locator("button.sk-clear").click()
        assert "0 selected" in page.locator(".sk-map-status").inner_text()
        screenshot(page, "export_feature_map")
        assert errors == []
        assert all(u.startswith(("file:", "blob:", "data:")) for u in requests), requests
        context.close()


def test_science_widget_assets_are_plain_modules():
    import re

    from saekit.widgets.base import asset_dir

    for name in ("split_tree", "feature_map"):
        js = (asset_dir() / f"{name}.js").read_text()
        assert (asset_dir() / f"{name}.css").exists()
        assert "export default" in js and "innerHTML" not in js, "data goes in with textContent only"
        assert not re.search(r"""import\s.*from\s+["']https?:""", js), "no CDN imports"
        assert "return () =>" in js, "render returns a cleanup"
