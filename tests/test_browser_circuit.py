"""CircuitView in a real browser: JupyterLab in headless Chromium (a tiny random model, live ablation through
the kernel), and its exported HTML offline.

Needs Debian's chromium (apt-get install -y chromium) and Python Playwright; skipped cleanly otherwise.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
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

SLIDER = 700  # a slider position (0..1000, logarithmic) that hides some but not all nodes

CELLS = [
    """\
import json
from IPython.display import display
from saekit.widgets import CircuitView
from test_circuit_view import PAIRS, circuit_setup
model, saes, stats, metric, circuit = circuit_setup()
texts = [a for a, _ in PAIRS]
view = CircuitView(circuit, stats, model=model, saes=saes, prompts=texts, metric=metric)
print("ready", len(view._graph["nodes"]))""",
    "display(view, view.dashboard)",
    """\
print("STATE", json.dumps({"threshold": view.threshold, "selected": view.selected, "ablation": view.ablation,
    "result": view.ablation_result, "error": view.error, "graph": view._graph,
    "dashboard": None if view.feature_dashboard is None else [view.feature_dashboard.feature, view.selected[0]]}))""",
]


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with chromium_browser() as b:
        yield b


def state_of(text: str) -> dict:
    m = re.search(r"STATE (\{.*\})", text, re.S)
    assert m, text
    return json.loads(m.group(1))


def drawn(graph: dict, threshold: float) -> tuple[int, int]:
    """(nodes, edges) the view should draw at `threshold`: nodes with |score| >= it, edges between them."""
    shown = [abs(n["score"]) >= threshold for n in graph["nodes"]]
    return sum(shown), sum(1 for u, d, _ in graph["edges"] if shown[u] and shown[d])


def js_fmt(x: float) -> str:
    """The view's number format (circuit_view.js fmt): 3 decimals, or 3 significant digits when tiny."""
    if abs(x) >= 0.01 or x == 0:
        return f"{x:.3f}"
    m, e = f"{x:.2e}".split("e")
    return f"{m}e{int(e):+d}"


def dismiss_dialogs(page) -> list[str]:
    """Close any JupyterLab dialog (e.g. a kernel notice) that would intercept clicks; returns their texts."""
    seen = []
    for _ in range(3):
        if not page.locator(".jp-Dialog").count():
            return seen
        seen += page.locator(".jp-Dialog").all_inner_texts()
        page.keyboard.press("Escape")
        page.wait_for_timeout(200)


def result_text(view_cell) -> str:
    return view_cell.locator(".sk-result").inner_text()


def test_circuit_view_in_jupyterlab(browser, tmp_path):
    """Graph by layer, slider hides nodes and edges, hover shows top tokens, click opens the dashboard and
    ablates through the kernel (the shown metric changes), Python sees what the page did; no JS errors."""
    write_notebook(tmp_path / "circuit.ipynb", CELLS)
    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    errors = watch_errors(page)
    with JupyterLab(tmp_path) as lab:
        open_notebook(page, lab, "circuit.ipynb")
        page.wait_for_timeout(1000)
        dismiss_dialogs(page)  # a kernel notice can sit over the Run menu
        run_all(page)
        assert "ready" in cell_output(page, 0)
        state0 = state_of(cell_output(page, 2))
        graph = state0["graph"]
        view = cell(page, 1)
        view.locator(".saekit-circuit svg .sk-node").first.wait_for(timeout=30_000)
        dismiss_dialogs(page)

        # the graph: one row per hook point, nodes and edges as drawn from the kernel's data
        labels = view.locator(".sk-row-label").all_text_contents()
        assert labels == graph["rows"] == ["resid_post.0", "resid_post.1"]
        n0, e0 = drawn(graph, state0["threshold"])
        assert view.locator(".sk-node").count() == n0 > 1
        assert view.locator(".sk-edge").count() == e0 > 0
        # a node sits in its hook point's row: earlier hook points lower on the page
        ys = {r: [] for r in (0, 1)}
        for i in range(view.locator(".sk-node").count()):
            node = view.locator(".sk-node").nth(i)
            idx = int(node.get_attribute("data-node"))
            ys[graph["nodes"][idx]["row"]].append(node.bounding_box()["y"])
        assert ys[0] and ys[1] and min(ys[0]) > max(ys[1])

        # the slider: a higher threshold draws fewer nodes and edges, exactly those above it
        view.locator(".sk-threshold").fill(str(SLIDER))
        page.wait_for_timeout(300)
        rerun_cell(page, 2)
        state1 = state_of(cell_output(page, 2))
        assert state1["threshold"] > state0["threshold"]
        n1, e1 = drawn(graph, state1["threshold"])
        assert view.locator(".sk-node").count() == n1 and 0 < n1 < n0
        assert view.locator(".sk-edge").count() == e1 <= e0
        view.locator(".sk-threshold").fill("0")
        page.wait_for_timeout(300)
        assert view.locator(".sk-node").count() >= n0

        # hover: the feature's top tokens
        feats = [i for i, n in enumerate(graph["nodes"]) if n["feature"] >= 0 and n["tokens"]]
        first = max(feats, key=lambda i: graph["nodes"][i]["col"])  # at the right edge: the tip must flip
        key = lambda i: (graph["nodes"][i]["hookpoint"], graph["nodes"][i]["feature"])  # noqa: E731
        second = next(i for i in feats if key(i) != key(first))
        node = view.locator(f'.sk-node[data-node="{first}"]')
        dismiss_dialogs(page)
        node.hover()
        tip = view.locator(".sk-tip")
        assert tip.is_visible()
        # the tip stays inside the view, even for nodes at its right edge
        box, tbox = view.locator(".saekit-circuit").bounding_box(), tip.bounding_box()
        assert box["x"] <= tbox["x"] and tbox["x"] + tbox["width"] <= box["x"] + box["width"] + 1
        assert graph["nodes"][first]["tokens"][0].strip() in tip.inner_text()

        # click: selected, the dashboard opens under the view, the feature joins the ablation set and the
        # kernel re-evaluates the metric
        node.click()
        view.locator(".sk-result").wait_for(timeout=30_000)
        view.locator(".saekit-dashboard").first.wait_for(timeout=30_000)
        assert "selected:" in view.locator(".sk-info").inner_text()
        one = result_text(view)
        view.locator(f'.sk-node[data-node="{second}"]').click()
        page.wait_for_function(
            "before => { const r = document.querySelector('.saekit-circuit .sk-result'); return r && r.textContent !== before; }",
            arg=one, timeout=30_000)
        two = result_text(view)
        assert view.locator(".saekit-circuit .sk-ablated").count() >= 2 and view.locator(".saekit-circuit .sk-ablation .sk-chip").count() == 2
        screenshot(page, "jupyterlab_circuit_view")
        page.wait_for_timeout(300)  # let the last comm messages reach the kernel
        rerun_cell(page, 2)
        state2 = state_of(cell_output(page, 2))
    a, b = graph["nodes"][first], graph["nodes"][second]
    assert state2["selected"] == [b["hookpoint"], b["position"], b["feature"]]
    assert state2["ablation"] == [[a["hookpoint"], a["feature"]], [b["hookpoint"], b["feature"]]]
    assert state2["dashboard"] == [b["feature"], b["hookpoint"]]
    r = state2["result"]
    assert state2["error"] == "" and r["features"] == state2["ablation"]
    assert r["metric_ablated"] != r["metric_clean"]
    assert one != two  # the shown metric followed the second ablation
    assert js_fmt(r["metric_ablated"]) in two and js_fmt(r["metric_clean"]) in two
    assert errors == [], errors


def test_exported_html_renders_offline(browser, tmp_path):
    """The exported page draws the graph from file:// with no network; the slider and hover work there too."""
    from browser_harness import screenshot as shot
    from saekit.widgets import CircuitView
    from test_circuit_view import circuit_setup

    model, saes, stats, metric, c = circuit_setup()
    view = CircuitView(c, stats)
    path = view.to_html(tmp_path / "circuit.html")
    context = browser.new_context(offline=True, viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors = watch_errors(page)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
    n0, e0 = drawn(view._graph, view.threshold)
    assert page.locator(".sk-node").count() == n0 > 1 and page.locator(".sk-edge").count() == e0 > 0
    page.locator(".sk-threshold").fill(str(SLIDER))
    assert 0 < page.locator(".sk-node").count() < n0
    shot(page, "export_circuit_view_offline")
    assert errors == [], errors
    assert all(u.startswith(("file:", "blob:", "data:")) for u in requests), requests
    context.close()
