"""Reusable browser-test harness: headless Debian Chromium through Playwright, and a throwaway JupyterLab.

    from browser_harness import JupyterLab, chromium_browser, watch_errors, write_notebook

- `chromium_browser()` (context manager) launches /usr/bin/chromium; `require_chromium()` skips the test
  with the install line when it (or Playwright) is missing. Playwright's own browser download is not used.
- `watch_errors(page)` collects uncaught page errors; assert the list is empty at the end.
- `JupyterLab(root)` starts `jupyter lab` on 127.0.0.1 (free port, token auth, --no-browser, settings and
  workspaces in temp folders, the repo on PYTHONPATH for kernels); `lab.url("lab/tree/x.ipynb")`.
- `write_notebook(path, sources)` writes a notebook of code cells; `run_all(page)`, `wait_kernel_idle(page)`,
  `rerun_cell(page, i)` and `cell_output(page, i)` drive JupyterLab's UI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("SAEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def require_chromium() -> None:
    """Skip (with the fix) when Debian's chromium or Python Playwright is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get update && apt-get install -y chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Python Playwright is not installed: pip install playwright (no browser download needed)")


@contextlib.contextmanager
def chromium_browser() -> Iterator[object]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watch_errors(page) -> list[str]:
    """Uncaught JS errors on `page` (pageerror events), appended as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# -- notebooks ------------------------------------------------------------------------------------


def write_notebook(path: Path, sources: list[str]) -> Path:
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {}, "outputs": [], "source": src}
            for i, src in enumerate(sources)
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


# -- JupyterLab -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A JupyterLab server for one test: `with JupyterLab(tmp_path) as lab: page.goto(lab.url(...))`."""

    def __init__(self, root: Path, timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "jupyter.log"

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def __enter__(self) -> "JupyterLab":
        settings = self.root / ".lab-settings"
        notify = settings / "@jupyterlab" / "apputils-extension"
        notify.mkdir(parents=True, exist_ok=True)
        (notify / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
        env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
        env["JUPYTERLAB_WORKSPACES_DIR"] = str(self.root / ".lab-workspaces")
        env["JUPYTER_RUNTIME_DIR"] = str(self.root / ".runtime")
        env.setdefault("OMP_NUM_THREADS", "2")
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=", "--ServerApp.allow_remote_access=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.__exit__(None, None, None)
        raise RuntimeError(f"jupyter lab did not answer within {self.timeout}s:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its handle
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._logf.close()
        for d in (".lab-settings", ".lab-workspaces"):
            shutil.rmtree(self.root / d, ignore_errors=True)


# -- driving JupyterLab's UI -----------------------------------------------------------------------


def open_notebook(page, lab: JupyterLab, name: str, timeout: float = 60_000) -> None:
    page.goto(lab.url(f"lab/tree/{name}"))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout)
    wait_kernel_idle(page, timeout)


_HAS_KERNEL_JS = """() => {
    const name = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName');
    return !!name && name.textContent.trim() !== '' && !/No Kernel/i.test(name.textContent);
}"""


def has_kernel(page) -> bool:
    """Whether the notebook toolbar names a kernel (JupyterLab shows "No Kernel" until one is attached)."""
    return bool(page.evaluate(_HAS_KERNEL_JS))


def wait_kernel_idle(page, timeout: float = 120_000) -> None:
    """Wait until a kernel is attached, the toolbar's kernel status says idle and no cell shows [*].

    The status alone is not enough: JupyterLab reports "idle" for a moment while the toolbar still says
    "No Kernel", and a Run All pressed then makes it ask for a kernel while one is starting (CI on 09dc409).
    """
    page.wait_for_function(
        """() => {
            const busy = [...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'));
            const st = document.querySelector('.jp-Notebook-ExecutionIndicator');
            const idle = st && st.getAttribute('data-status') === 'idle';
            return idle && !busy && (""" + _HAS_KERNEL_JS + """)();
        }""",
        timeout=timeout,
    )


_PROMPTS_JS = """() => {
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
    const st = document.querySelector('.jp-Notebook-ExecutionIndicator');
    return {
        status: st ? st.getAttribute('data-status') : null,
        prompts: cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || ''),
        errors: cells.map(c => [...c.querySelectorAll('.jp-OutputArea-output')]
            .filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr')
            .map(o => o.textContent).join('\\n')),
    };
}"""


def notebook_state(page) -> dict:
    """Kernel status, each code cell's prompt ('[3]:', '[*]:', '[ ]:') and its stderr/traceback text."""
    return page.evaluate(_PROMPTS_JS)


_KERNEL_DIED = re.compile(r"kernel (appears to have )?died|Kernel Restarting", re.I)


def _clear_dialogs(page, dialogs: list[str]) -> None:
    """Note and close every JupyterLab dialog on the page; a dead kernel's dialog is a failure, not a nuisance.

    A "Select Kernel" dialog is accepted (its default is the notebook's own kernel) only while the notebook has
    no kernel: accepting it with a kernel attached replaces that kernel, and the shutdown interrupts whatever
    cell is running (a KeyboardInterrupt in cell 0 on CI, 09dc409). Anything else is dismissed.
    """
    for _ in range(5):
        boxes = page.locator(".jp-Dialog")
        if not boxes.count():
            return
        texts = [t.strip() for t in boxes.all_inner_texts()]
        dialogs.extend(texts)
        if any(_KERNEL_DIED.search(t) for t in texts):
            screenshot(page, "run_all_kernel_died")
            raise AssertionError(f"the kernel died while the notebook ran: {texts}")
        accept = boxes.first.locator("button.jp-mod-accept")
        if any("Select Kernel" in t for t in texts) and accept.count() and not has_kernel(page):
            accept.first.click(timeout=5_000)
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def _click_run_all(page, dialogs: list[str], attempts: int = 8) -> None:
    """Open Run > Run All Cells; a JupyterLab dialog in the way (it may open between the check and the click)
    is noted in `dialogs` and closed, and the click is tried again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        _clear_dialogs(page, dialogs)
        page.keyboard.press("Escape")
        try:
            page.get_by_role("menuitem", name="Run", exact=True).click(timeout=5_000)
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click(timeout=5_000)
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                screenshot(page, "run_all_menu_blocked")
                raise AssertionError(f"Run > Run All Cells could not be clicked; dialogs seen: {dialogs}") from None


def run_all(page, timeout: float = 240_000, settle_s: float = 8.0) -> None:
    """Run > Run All Cells and wait until every code cell has an execution count and the kernel is idle.

    JupyterLab can drop a Run All that arrives while the kernel is still connecting, so when the kernel sits
    idle for `settle_s` with cells never run (and no traceback), Run All is pressed again (at most 4 times).
    A traceback stops the wait at once; a timeout reports every cell's prompt and error text.
    """
    deadline = time.monotonic() + timeout / 1000
    presses, idle_since, state, dialogs = 0, None, {}, []
    _click_run_all(page, dialogs)
    presses += 1
    while time.monotonic() < deadline:
        if page.locator(".jp-Dialog").count():
            _clear_dialogs(page, dialogs)
        state = notebook_state(page)
        prompts = state["prompts"]
        done = bool(prompts) and all(re.search(r"\[\d+\]", p) for p in prompts)
        idle = state["status"] == "idle" and not any("*" in p for p in prompts)
        failed = [(i, e) for i, e in enumerate(state["errors"]) if "Traceback" in e]
        if failed and idle:
            screenshot(page, "run_all_cell_failed")
            raise AssertionError(f"cell {failed[0][0]} raised (dialogs seen: {dialogs}):\n{failed[0][1][-3000:]}")
        if done and idle:
            return
        if idle:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > settle_s and presses < 5:
                _click_run_all(page, dialogs)
                presses, idle_since = presses + 1, None
        else:
            idle_since = None
        time.sleep(0.5)
    screenshot(page, "run_all_timeout")
    raise AssertionError(f"Run All did not finish within {timeout / 1000:.0f}s after {presses} presses: {state}; dialogs: {dialogs}")


def cell(page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def rerun_cell(page, index: int, timeout: float = 60_000) -> None:
    """Select cell `index` and run it again (Shift+Enter), waiting for its new execution count."""
    c = cell(page, index)
    before = c.locator(".jp-InputPrompt").inner_text()
    c.locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        """([i, before]) => {
            const p = document.querySelectorAll('.jp-Notebook .jp-Cell')[i].querySelector('.jp-InputPrompt');
            return p && /\\[\\d+\\]/.test(p.textContent) && p.textContent !== before;
        }""",
        arg=[index, before],
        timeout=timeout,
    )


def cell_output(page, index: int) -> str:
    return cell(page, index).locator(".jp-OutputArea").inner_text()
