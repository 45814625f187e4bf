"""SteeringPanel and AblationPanel in a real browser: JupyterLab in headless Chromium, and their exported HTML.

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

STRENGTH = 60  # the slider value the test moves to (a multiple of the slider's step, max_strength / 200)

CELLS = [
    """\
import json, saekit
from test_features import HOSTILE
from test_widgets_interventions import firing_features, make_model_sae
from saekit.widgets import SteeringPanel, AblationPanel
model, sae = make_model_sae()
fired = firing_features(model, sae, "The quick brown fox")
print("ready", sae.n_latents)""",
    "steer = SteeringPanel(model, sae, [5, 7], prompt=HOSTILE, max_new_tokens=8)\nsteer",
    "abl = AblationPanel(model, sae, fired, prompt='The quick brown fox', top=3)\nabl",
    """\
print("STATE", json.dumps({"strengths": steer.strengths, "last": steer.last_settings, "default": steer.default_text,
    "steered": steer.steered_text, "error": steer.error, "abl_last": abl.last_settings,
    "abl_tokens": abl.results.get("tokens"), "abl_loss": abl.results.get("loss_edited"), "fired": fired}))""",
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


def shown_text(locator) -> str:
    return locator.evaluate("el => el.textContent")


def test_panels_in_jupyterlab(browser, tmp_path):
    """Move a slider, press Generate / Run: new text appears, Python sees the slider and the outputs, no JS errors."""
    from test_features import HOSTILE

    write_notebook(tmp_path / "interventions.ipynb", CELLS)
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    errors = watch_errors(page)
    with JupyterLab(tmp_path) as lab:
        open_notebook(page, lab, "interventions.ipynb")
        run_all(page)
        assert "ready 64" in cell_output(page, 0)
        steer, abl = cell(page, 1), cell(page, 2)
        steer.locator(".saekit-steering .sk-feature").nth(1).wait_for(timeout=30_000)
        abl.locator(".saekit-ablation .sk-chip").nth(1).wait_for(timeout=30_000)
        assert steer.locator(".sk-prompt").input_value() == HOSTILE

        # SteeringPanel: slider of feature 5 to STRENGTH, then Generate
        slider = steer.locator('.sk-feature[data-feature="5"] input.sk-slider')
        slider.fill(str(STRENGTH))
        steered = steer.locator(".sk-steered .sk-c")
        steer.locator("button.sk-generate").click()
        steered.wait_for(timeout=30_000)
        page.wait_for_function("el => el.textContent.length > 0", arg=steered.element_handle(), timeout=30_000)
        assert steer.locator('.sk-feature[data-feature="5"] input.sk-value').input_value() == str(STRENGTH)
        # the hostile prompt is shown, as text, above both continuations
        assert shown_text(steer.locator(".sk-default .sk-p")) == HOSTILE
        assert "<img src=x onerror=" in steer.locator(".sk-steered").inner_text()

        # AblationPanel: Run
        abl.locator("button.sk-run").click()
        abl.locator('.sk-results .sk-row[data-position="4"]').wait_for(timeout=30_000)
        n_rows = abl.locator(".sk-results .sk-row[data-position]").count()
        assert abl.locator(".sk-move").count() > 0 and "loss" in abl.locator(".sk-summary").inner_text()
        # an invalid feature typed into the add box shows the kernel's message, not a traceback
        abl.locator("input.sk-add").fill("64")
        abl.locator("button.sk-add-btn").click()
        err = abl.locator(".sk-error")
        page.wait_for_function("el => el.textContent.includes('out of range')", arg=err.element_handle(), timeout=30_000)
        assert abl.locator('.sk-chip.sk-bad[data-feature="64"]').count() == 1
        screenshot(page, "jupyterlab_interventions")

        assert page.locator(".jp-OutputArea img").count() == 0
        assert page.evaluate("() => window.__pwned === undefined")
        page.wait_for_timeout(300)  # let the last comm messages reach the kernel
        rerun_cell(page, 3)
        state = state_of(cell_output(page, 3))
        default_shown = shown_text(steer.locator(".sk-default .sk-c"))
        steered_shown = shown_text(steered)
    assert state["strengths"] == [STRENGTH, 0.0] and state["last"]["strengths"] == [STRENGTH, 0.0]
    assert state["last"]["prompt"] == HOSTILE and state["error"] == ""
    assert (state["default"], state["steered"]) == (default_shown, steered_shown)
    assert state["steered"] != state["default"], "the moved slider steered the continuation"
    assert state["abl_last"]["features"] == state["fired"] and len(state["abl_tokens"]) == n_rows
    assert errors == [], errors


def test_exported_html_renders_offline(browser, tmp_path):
    """Both exports render from file:// with no network, show the last run and hostile text as text."""
    from saekit.widgets import AblationPanel, SteeringPanel
    from test_features import HOSTILE
    from test_widgets_interventions import firing_features, make_model_sae

    model, sae = make_model_sae()
    steer = SteeringPanel(model, sae, [5, 7], prompt=HOSTILE, strengths=[STRENGTH, -10.0], max_new_tokens=8)
    steer.generate()
    abl = AblationPanel(model, sae, firing_features(model, sae, HOSTILE), prompt=HOSTILE, top=3)
    abl.run()
    files = {"steering": steer.to_html(tmp_path / "steering.html"), "ablation": abl.to_html(tmp_path / "ablation.html")}
    context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    for name, path in files.items():
        page = context.new_page()
        errors = watch_errors(page)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-saekit-ready]", timeout=15_000)
        assert page.locator("body img").count() == 0 and page.evaluate("() => window.__pwned === undefined")
        assert page.locator(".sk-prompt").input_value() == HOSTILE
        if name == "steering":
            assert page.locator("button.sk-generate").is_disabled()
            assert shown_text(page.locator(".sk-steered .sk-c")) == steer.steered_text != steer.default_text
            assert shown_text(page.locator(".sk-default .sk-p")) == HOSTILE
            assert page.locator("input.sk-slider").first.input_value() == str(STRENGTH)
        else:
            assert page.locator("button.sk-run").is_disabled()
            assert page.locator(".sk-results .sk-row[data-position]").count() == len(abl.results["tokens"])
            assert "<" in page.locator(".sk-results").inner_text() and page.locator(".sk-move").count() > 0
        screenshot(page, f"export_{name}_panel")
        assert errors == [], (name, errors)
        page.close()
    assert all(u.startswith(("file:", "blob:", "data:")) for u in requests), requests
    context.close()
