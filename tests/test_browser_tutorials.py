"""Two tutorials in a real browser, and every saved widget snapshot with no kernel at all.

- JupyterLab runs `notebooks/04_inspect_features.ipynb` and `notebooks/07_toy_models.ipynb` as a reader would
  (Run All, outputs cleared first so everything checked was drawn by this run): their widgets render, a click in the
  FeatureBrowser's table reaches the kernel and opens that feature in the dashboard, a neighbour button in the
  FeatureDashboard navigates, and the TrainingMonitor draws both SAEs' curves and the density histogram.
- Each saekit widget in every committed notebook carries a static snapshot (`text/html`: its `to_html` page in a
  sandboxed iframe). Opened offline in Chromium, each one draws its widget, fetches nothing and throws nothing.

Needs Debian's chromium and Python Playwright; skipped cleanly otherwise. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from browser_harness import (
    REPO,
    JupyterLab,
    chromium_browser,
    open_notebook,
    require_chromium,
    run_all,
    screenshot,
    watch_errors,
)

pytestmark = pytest.mark.browser

NOTEBOOKS = REPO / "notebooks"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
ROOT_CLASS = {  # a saekit widget's repr -> the root element its ES module draws
    "FeatureDashboard(": ".saekit-dashboard",
    "FeatureBrowser(": ".saekit-table",
    "PromptInspector(": ".saekit-prompt",
    "TrainingMonitor(": ".saekit-monitor",
    "CircuitView(": ".saekit-circuit",
    "SplitTree(": ".saekit-splits",
    "FeatureMap(": ".saekit-map",
}


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with chromium_browser() as b:
        yield b


def copy_cleared(name: str, dest: Path) -> None:
    """The tutorial without its saved outputs and widget state, so what renders comes from this run."""
    nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            c["outputs"], c["execution_count"] = [], None
    nb["metadata"].pop("widgets", None)
    (dest / name).write_text(json.dumps(nb), encoding="utf-8")


def cell_with(page, selector: str):
    return page.locator(".jp-Notebook .jp-Cell", has=page.locator(selector)).first


def test_inspect_features_tutorial_in_jupyterlab(browser, tmp_path):
    name = "04_inspect_features.ipynb"
    copy_cleared(name, tmp_path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = watch_errors(page)
    with JupyterLab(tmp_path) as lab:
        open_notebook(page, lab, name)
        run_all(page, timeout=600_000)
        for sel in (".saekit-table .sk-spacer .sk-row", ".saekit-dashboard .sk-title", ".saekit-prompt .sk-tok"):
            page.wait_for_selector(sel, timeout=60_000)
        screenshot(page, "tutorial_04_rendered")

        # a row of the FeatureBrowser's table opens in the dashboard under it (a round trip through the kernel)
        browser_cell = cell_with(page, ".saekit-table")
        browser_cell.scroll_into_view_if_needed()
        row = browser_cell.locator(".sk-spacer .sk-row").nth(3)
        picked = int(row.get_attribute("data-feature"))
        row.click()
        try:
            browser_cell.locator(".saekit-dashboard .sk-title", has_text=re.compile(rf"^Feature {picked}$")).wait_for(timeout=60_000)
        except Exception:
            screenshot(page, "tutorial_04_row_click_failed")
            raise
        # a neighbour button of a FeatureDashboard navigates it
        dash_cell = page.locator(".jp-Notebook .jp-Cell", has=page.locator(".saekit-dashboard button.sk-nav")).first
        nav = dash_cell.locator("button.sk-nav").first
        target = int(nav.get_attribute("data-feature"))
        nav.click()
        dash_cell.locator(".saekit-dashboard .sk-title", has_text=re.compile(rf"^Feature {target}$")).first.wait_for(timeout=60_000)
        screenshot(page, "tutorial_04_after_clicks")
    assert errors == [], errors


def test_toy_models_tutorial_in_jupyterlab(browser, tmp_path):
    name = "07_toy_models.ipynb"
    copy_cleared(name, tmp_path)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = watch_errors(page)
    with JupyterLab(tmp_path) as lab:
        open_notebook(page, lab, name)
        run_all(page, timeout=600_000)
        monitor = cell_with(page, ".saekit-monitor").locator(".saekit-monitor")
        monitor.locator(".sk-status", has_text="done").wait_for(timeout=60_000)
        lines = monitor.locator("svg[data-metric=fvu] polyline")
        assert lines.count() == 2, "one FVU curve per SAE (64 and 256 latents)"
        assert all(int(lines.nth(i).get_attribute("data-points")) >= 2 for i in range(2))
        assert monitor.locator(".sk-hist .sk-bar").count() > 0
        assert page.locator(".jp-OutputArea-output img").count() == 2, "both matplotlib figures are drawn"
        screenshot(page, "tutorial_07_rendered")
    assert errors == [], errors


def saved_snapshots() -> list[tuple[str, str, str]]:
    """(notebook, widget repr, snapshot html) of every saekit widget output saved in the committed notebooks."""
    out = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        for c in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for o in c.get("outputs", []):
                data = o.get("data", {})
                plain = "".join(data.get("text/plain", ""))
                if WIDGET_MIME in data and "text/html" in data and plain.startswith(tuple(ROOT_CLASS)):
                    out.append((path.name, plain, "".join(data["text/html"])))
    return out


def test_saved_snapshots_render_without_a_kernel(browser, tmp_path):
    snaps = saved_snapshots()
    assert {n for n, _, _ in snaps} >= {"01_quickstart.ipynb", "02_harvest_and_train.ipynb", "04_inspect_features.ipynb",
                                         "07_toy_models.ipynb"}
    context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    for i, (name, plain, frame_html) in enumerate(snaps):
        page = context.new_page()
        errors = watch_errors(page)
        host = tmp_path / f"snapshot_{i}.html"
        host.write_text(f"<!doctype html><html><body>{frame_html}</body></html>", encoding="utf-8")
        page.goto(host.as_uri())
        frame = page.frame_locator("iframe.saekit-snapshot")
        root = next(sel for prefix, sel in ROOT_CLASS.items() if plain.startswith(prefix))
        try:
            frame.locator("body[data-saekit-ready]").wait_for(timeout=20_000)
            frame.locator(root).first.wait_for(timeout=5_000)
        except Exception:
            screenshot(page, f"snapshot_failed_{Path(name).stem}_{i}")
            raise AssertionError(f"{plain[:60]} in {name}: its snapshot did not draw {root}") from None
        assert errors == [], (name, plain, errors)
        if i < 6:
            screenshot(page, f"snapshot_{Path(name).stem}_{i}")
        page.close()
    local = ("file://", "blob:", "data:")  # the host page, the widgets' modules (blob URLs made in the frame)
    assert all(u.startswith(local) for u in requests), [u for u in requests if not u.startswith(local)]
