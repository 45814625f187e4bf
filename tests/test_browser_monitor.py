"""TrainingMonitor in a real browser: live in JupyterLab (curves grow while the cell runs; Stop ends the run with
a checkpoint written), and its exported HTML offline (hostile token text stays text).

Needs Debian's chromium and Python Playwright; skipped cleanly otherwise. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import time

import pytest

from browser_harness import (
    JupyterLab,
    cell,
    cell_output,
    chromium_browser,
    notebook_state,
    open_notebook,
    require_chromium,
    screenshot,
    wait_kernel_idle,
    watch_errors,
    write_notebook,
)

pytestmark = pytest.mark.browser

CELLS = [
    """\
import torch, saekit
from saekit import TrainConfig
from saekit.widgets import TrainingMonitor
torch.set_num_threads(1)
x = torch.randn(4096, 16) @ torch.randn(16, 16)
print("ready")""",
    # a budget far too long to finish during the test: only Stop ends it
    """\
mon = TrainingMonitor(every_s=0.2)
sae = saekit.train(x, n_latents=64, k=4, cfg=TrainConfig(tokens=10**9, batch_size=128, log_every=4), monitor=mon,
                   checkpoint_dir="ckpt")""",
    """\
import json, pathlib
state = json.loads(pathlib.Path("ckpt/trainer_state.json").read_text())
print(f"STATE status={mon.status} history={sae.training_history.status} ckpt_step={state['step']} "
      f"last_logged={sae.training_history.entries[-1]['step']}")""",
]


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with chromium_browser() as b:
        yield b


def points(page) -> int:
    """Points of SAE 0's FVU curve as drawn now (0 before the first entry)."""
    return page.evaluate(
        """() => {
            const l = document.querySelector('.saekit-monitor svg[data-metric=fvu] polyline');
            return l ? Number(l.getAttribute('data-points')) : 0;
        }"""
    )


def start_run_all(page, tries: int = 5, settle_s: float = 8.0) -> None:
    """Run > Run All Cells without waiting for the cells to finish; pressed again while JupyterLab drops it
    (it can while the kernel is still connecting): until some cell has started."""
    for _ in range(tries):
        for _dialog in page.locator(".jp-Dialog").all_inner_texts():
            page.keyboard.press("Escape")
        page.keyboard.press("Escape")
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            if any(re.search(r"\[(\*|\d+)\]", p) for p in notebook_state(page)["prompts"]):
                return
            time.sleep(0.3)
    raise AssertionError(f"Run All never started a cell: {notebook_state(page)}")


def test_training_monitor_live_in_jupyterlab_and_stop(browser, tmp_path):
    write_notebook(tmp_path / "train.ipynb", CELLS)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors = watch_errors(page)
    with JupyterLab(tmp_path) as lab:
        open_notebook(page, lab, "train.ipynb")
        start_run_all(page)
        try:
            page.wait_for_selector(".saekit-monitor svg[data-metric=fvu] polyline", timeout=120_000)
        except Exception:
            screenshot(page, "monitor_never_drew")
            raise AssertionError(f"no curve drawn: {notebook_state(page)}; {[cell_output(page, i) for i in range(2)]}") from None
        # the curves grow while the training cell is still running
        first = points(page)
        deadline = time.monotonic() + 120  # generous: CI machines may be busy
        while points(page) <= first + 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        grown = points(page)
        if grown <= first + 2:
            screenshot(page, "monitor_did_not_grow")
        assert grown > first + 2, (first, grown, notebook_state(page))
        assert "*" in notebook_state(page)["prompts"][1], "the training cell is still running"
        assert page.locator(".saekit-monitor .sk-status").inner_text() == "running"
        assert re.search(r"ETA \d+:\d\d", page.locator(".saekit-monitor .sk-stats").inner_text())
        assert page.locator(".saekit-monitor .sk-dense-region").count() == 1
        screenshot(page, "monitor_live")

        stop = page.locator(".saekit-monitor button.sk-stop")
        page.wait_for_function("() => { const b = document.querySelector('.saekit-monitor .sk-stop'); return b && !b.disabled; }", timeout=30_000)
        stop.click()
        wait_kernel_idle(page, timeout=120_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')].some(o => o.textContent.includes('STATE'))",
            timeout=60_000,
        )
        out = cell_output(page, 2)
        m = dict(kv.split("=") for kv in re.search(r"STATE (.*)", out).group(1).split())
        assert m["status"] == "stopped" and m["history"] == "stopped"
        assert int(m["ckpt_step"]) >= int(m["last_logged"]) > 0  # the checkpoint holds the run up to where it stopped
        assert cell(page, 1).locator(".saekit-monitor .sk-status").inner_text() == "stopped"
        assert "ckpt" in cell(page, 1).locator(".saekit-monitor .sk-message").inner_text()
        screenshot(page, "monitor_stopped")
    assert errors == [], errors


def test_training_monitor_exported_html(browser, tmp_path):
    """from_run -> to_html renders offline: four curves, the histogram's regions, hostile context as text."""
    from saekit.train import TrainingHistory
    from saekit.widgets import TrainingMonitor
    from test_features import HOSTILE
    from test_monitor import cfg, data

    import saekit

    saekit.train(data(), [saekit.SaeConfig(d_in=16, n_latents=64, k=k) for k in (2, 4)], cfg(), progress=False, out=tmp_path / "run")
    h = TrainingHistory.load(tmp_path / "run")
    h.newly_alive = [{"sae": 1, "latent": 7, "step": 4, "tokens": 512, "density": 0.01, "act": 1.5, "token": HOSTILE[:30], "context": ["a", HOSTILE[:30]]}]
    path = TrainingMonitor.from_history(h).to_html(tmp_path / "mon.html")
    context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors = watch_errors(page)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
    assert page.locator(".saekit-monitor svg.sk-chart").count() == 4
    assert page.locator(".saekit-monitor svg[data-metric=loss] polyline").count() == 2, "one line per SAE"
    assert page.locator(".saekit-monitor .sk-dead-region, .saekit-monitor .sk-sparse-region, .saekit-monitor .sk-dense-region").count() == 3
    assert page.locator(".saekit-monitor .sk-stop").is_hidden()
    assert "<script>" in page.locator(".saekit-monitor .sk-alive").inner_text()
    assert page.evaluate("() => window.__pwned === undefined") and page.locator("body img").count() == 0
    assert page.locator(".saekit-monitor .sk-status").inner_text() == "done"
    screenshot(page, "export_monitor")
    assert errors == [], errors
    assert all(u.startswith(("file:", "blob:", "data:")) for u in requests), requests
    context.close()
