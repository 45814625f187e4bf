"""Widgets in a real browser: JupyterLab in headless Chromium, and the exported standalone HTML files.

Needs Debian's chromium (apt-get install -y chromium) and Python Playwright; skipped cleanly otherwise.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re

import pytest

from browser_harness import (
    JupyterLab,
    cell,
    cell_output,
    chromium_browser,
    open_notebook,
    require_chromium,
    rerun_cell,
    run_all,
    screenshot,
    watch_errors,
    write_notebook,
)

pytestmark = pytest.mark.browser

SETUP = """\
from test_features import make_tiny_stats, HOSTILE
from saekit.widgets import FeatureBrowser, FeatureDashboard, PromptInspector
model, sae, ctx, stats = make_tiny_stats()
print("ready", stats.n_features)"""

CELLS = [
    SETUP,
    "browser = FeatureBrowser(stats)\nbrowser",
    "dash = FeatureDashboard(stats, feature=1)\ndash",
    "insp = PromptInspector(model, sae, HOSTILE, stats=stats)\ninsp",
    'print(f"STATE selected={browser.table.selected} dash={dash.feature} token={insp.selected_token} '
    'feature={insp.feature} density={browser.table.min_log_density}")',
]


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with chromium_browser() as b:
        yield b


def state_of(text: str) -> dict[str, str]:
    m = re.search(r"STATE (.*)", text)
    assert m, text
    return dict(kv.split("=") for kv in m.group(1).split())


def test_widgets_in_jupyterlab(browser, tmp_path):
    """All cells run, every widget renders, clicks reach Python, hostile text stays text, no JS errors."""
    write_notebook(tmp_path / "widgets.ipynb", CELLS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = watch_errors(page)
    with JupyterLab(tmp_path) as lab:
        open_notebook(page, lab, "widgets.ipynb")
        run_all(page)
        assert "ready" in cell_output(page, 0)
        page.wait_for_selector(".saekit-table .sk-spacer .sk-row", timeout=30_000)
        page.wait_for_selector(".saekit-dashboard .sk-title", timeout=30_000)
        page.wait_for_selector(".saekit-prompt .sk-tok", timeout=30_000)
        screenshot(page, "jupyterlab_widgets_rendered")

        # a row in the browser's table opens in its dashboard
        row = cell(page, 1).locator(".sk-spacer .sk-row").nth(2)
        picked = int(row.get_attribute("data-feature"))
        row.click()
        try:  # the dashboard redraws (new elements) on every change: look the title up afresh each time
            page.wait_for_function(
                """(f) => {
                    const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[1];
                    const t = c && c.querySelector('.saekit-dashboard .sk-title');
                    return t && t.textContent === `Feature ${f}`;
                }""",
                arg=picked, timeout=60_000,
            )
        except Exception:
            screenshot(page, "jupyterlab_row_click_failed")
            raise
        # the density slider filters rows
        slider = cell(page, 1).locator("input.sk-density")
        slider.fill("-1")
        # a neighbour button in the standalone dashboard navigates
        nav = cell(page, 2).locator("button.sk-nav").first
        target = int(nav.get_attribute("data-feature"))
        nav.click()
        page.wait_for_function(
            "(f) => [...document.querySelectorAll('.saekit-dashboard .sk-title')].some(t => t.textContent === `Feature ${f}`)",
            arg=target,
        )
        # a token in the prompt inspector, then one of its features
        tok = cell(page, 3).locator(".sk-tok").nth(5)
        tok.click()
        cell(page, 3).locator(".sk-feat").nth(1).click()
        chosen = int(cell(page, 3).locator(".sk-feat.sk-current").get_attribute("data-feature"))
        # hostile corpus text is visible as text and never became elements
        tokens_text = cell(page, 3).locator(".sk-tokens").inner_text()
        assert "<img src=x onerror=" in tokens_text and "<script>" in tokens_text
        assert page.locator(".jp-OutputArea img").count() == 0
        assert page.evaluate("() => window.__pwned === undefined")
        page.wait_for_timeout(500)  # let the last comm messages reach the kernel
        rerun_cell(page, 4)
        state = state_of(cell_output(page, 4))
        screenshot(page, "jupyterlab_after_clicks")
    assert state["selected"] == str(picked)
    assert state["dash"] == str(target)
    assert state["token"] == "5" and state["feature"] == str(chosen)
    assert float(state["density"]) == -1.0
    assert errors == [], errors


def test_exported_html_renders_offline(browser, tmp_path):
    """Each widget's to_html page renders from file:// with no network, shows hostile text as text, and clicks work."""
    from saekit.widgets import FeatureBrowser, FeatureDashboard, PromptInspector
    from test_features import HOSTILE, make_tiny_stats
    from test_widgets import hostile_feature

    model, sae, _, stats = make_tiny_stats()
    f = hostile_feature(stats)
    files = {
        "dashboard": FeatureDashboard(stats, feature=f).to_html(tmp_path / "dashboard.html"),
        "browser": FeatureBrowser(stats, selected=f).to_html(tmp_path / "browser.html"),
        "prompt": PromptInspector(model, sae, HOSTILE, stats=stats).to_html(tmp_path / "prompt.html"),
    }
    context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    for name, path in files.items():
        page = context.new_page()
        errors = watch_errors(page)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
        body = page.locator("body").inner_text()
        assert "<" in body and page.locator("body img").count() == 0
        assert page.evaluate("() => window.__pwned === undefined")
        if name == "dashboard":
            assert f"Feature {f}" in body and re.search(r"<(script|img|/script)", body), "hostile text shown as text"
            nav = page.locator("button.sk-nav").first
            g = nav.get_attribute("data-feature")
            nav.click()
            assert page.locator(".sk-title").inner_text() == f"Feature {g}", "neighbours are in the export"
            assert page.locator(".sk-hist .sk-axis-title").count() == 2, "both histogram axes are labelled"
            assert page.locator(".sk-hist .sk-xtick").count() >= 2 and page.locator(".sk-hist .sk-ytick").count() >= 2
            assert "weakly meaningful" in page.locator(".sk-caveat").inner_text()
        if name == "browser":
            assert page.locator(".sk-spacer .sk-row").first.get_attribute("data-dense") == "0", "dense rows sort last"
            page.locator(".sk-head [data-key=density]").click()  # densest first: the dense flags show
            assert page.locator(".sk-spacer .sk-row").first.get_attribute("data-dense") == "1"
            assert page.locator(".sk-spacer .sk-badge-dense").count() > 0
            page.locator(".sk-spacer .sk-row").nth(1).click()
            assert page.locator(".saekit-dashboard .sk-title, .saekit-dashboard .sk-missing").count() == 1
            page.locator("input.sk-search").fill("#0")
            assert page.locator(".sk-spacer .sk-row").count() == 1
        if name == "prompt":
            assert "<img src=x onerror=" in page.locator(".sk-tokens").inner_text()
            page.locator(".sk-tok").nth(3).click()
            assert page.locator(".sk-feat").count() > 0
        screenshot(page, f"export_{name}")
        assert errors == [], (name, errors)
        page.close()
    assert all(u.startswith(("file:", "blob:", "data:")) for u in requests), requests
    context.close()


def test_exported_csp_blocks_markup_that_slipped_into_the_page(browser, tmp_path):
    """The CSP is a backstop: an inline script or handler injected into an exported page never runs,
    while the page's own (hash-allowed) runtime still renders the widget."""
    from saekit.widgets import FeatureDashboard
    from test_features import make_tiny_stats

    _, _, _, stats = make_tiny_stats()
    path = FeatureDashboard(stats, feature=0).to_html(tmp_path / "dash.html")
    page_html = path.read_text(encoding="utf-8")
    injected = '<script>window.__pwned = 1</script><img src="data:," onerror="window.__pwned = 2"><form action="data:,"></form>'
    path.write_text(page_html.replace("</body>", injected + "</body>"), encoding="utf-8")
    context = browser.new_context(offline=True)
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
    assert page.locator(".sk-title").inner_text() == "Feature 0"
    assert page.evaluate("() => window.__pwned === undefined")
    context.close()
