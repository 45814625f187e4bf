"""The documentation site: every public name has a docstring, and `mkdocs build --strict` succeeds offline
(API reference from the docstrings, tutorials and course solutions rendered from their saved outputs, widgets
as their static fallback). The build runs where the docs tools are installed (the `test` and `docs` extras)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hooks():
    spec = importlib.util.spec_from_file_location("saekit_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_has_a_docstring():
    hooks = _hooks()
    assert "saekit.course" in hooks.public_packages() and "saekit.circuits" in hooks.public_packages()
    assert hooks.missing_docstrings() == []


def test_the_docstring_check_sees_a_missing_docstring(monkeypatch):
    import saekit.course

    def undocumented():
        pass

    monkeypatch.setattr(saekit.course, "undocumented", undocumented, raising=False)
    monkeypatch.setattr(saekit.course, "__all__", [*saekit.course.__all__, "undocumented"])
    assert _hooks().missing_docstrings() == ["saekit.course.undocumented"]


def test_widgets_render_as_their_static_fallback():
    nbformat = pytest.importorskip("nbformat")
    hooks = _hooks()
    nb = nbformat.v4.new_notebook()
    view = {"model_id": "x", "version_major": 2, "version_minor": 0}
    cell = nbformat.v4.new_code_cell("w")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={hooks.WIDGET_VIEW: view, "text/html": "<div>snapshot</div>", "text/plain": "W()"}),
        nbformat.v4.new_output("display_data", data={hooks.WIDGET_VIEW: view, "text/plain": "W()"}),
        nbformat.v4.new_output("display_data", data={hooks.WIDGET_VIEW: view}),
        nbformat.v4.new_output("display_data", data={hooks.WIDGET_VIEW: view, "text/plain": "Loading weights:   0%|          | 0/236 [00:00<?, ?it/s]"}),
    ]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    assert hooks.static_widgets(nb) == 1
    assert [sorted(o["data"]) for o in cell.outputs] == [["text/html", "text/plain"], ["text/plain"], [hooks.WIDGET_VIEW]]
    assert "widgets" not in nb.metadata


def test_nav_lists_every_tutorial_by_its_title():
    nav = _hooks().tutorial_nav()
    tutorials = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert [list(e.values())[0] for e in nav["Tutorials"]] == [f"tutorials/{p.name}" for p in tutorials]
    solutions = sorted((ROOT / "notebooks" / "course" / "solutions").glob("*.ipynb"))
    assert [list(e.values())[0] for e in nav["Course (solutions)"]][1:] == [f"tutorials/course/solutions/{p.name}" for p in solutions]
    assert list(nav["Course (solutions)"][1]) == ["Course 1: the SAE forward pass and the TopK activation"]
    assert all(list(e)[0] and not list(e)[0].startswith("#") for e in nav["Tutorials"])


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    """`mkdocs build --strict` into a temporary folder: a broken reference, a page missing from the nav's files
    or a public name without a docstring fails it. Takes about 30 s on 2 cores."""
    for tool in ("mkdocs", "mkdocs_jupyter", "mkdocstrings_handlers.python", "material"):
        pytest.importorskip(tool)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # nbconvert's templates live under the interpreter's prefix (a venv made with --system-site-packages has none)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in [os.environ.get("JUPYTER_PATH"), str(Path(sys.base_prefix) / "share" / "jupyter")] if p)
    site = tmp_path / "site"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    print(f"mkdocs build --strict: {time.perf_counter() - start:.1f} s")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-8000:]
    assert not (ROOT / ".cache").exists() or not any((ROOT / ".cache").rglob("*.json")), "mkdocs-jupyter cached pages"
    api = (site / "api" / "saekit" / "index.html").read_text()
    for name in ("load_model", "TopKSae", "evaluate"):
        assert name in api
    page = (site / "tutorials" / "04_inspect_features" / "index.html").read_text()
    assert 'type="application/vnd.jupyter.widget-view+json"' not in page
    course = (site / "tutorials" / "course" / "solutions" / "01_sae_forward" / "index.html").read_text()
    assert "is right on all" in course  # saved outputs rendered, not re-executed
    assert not (site / "tutorials" / "course" / "01_sae_forward").exists()  # exercises are not pages
    shutil.rmtree(site)


@pytest.mark.slow
@pytest.mark.parametrize("page,complaint", [
    ("See [the guide](missing.md).", "missing.md"),                                  # a broken link
    ("See [saekit.not_there][] and [load](#no-such-anchor).", "saekit.not_there"),  # a cross-reference to nothing
])
def test_strict_build_fails_on_a_broken_reference(tmp_path, page, complaint):
    """Our mkdocs.yml (its plugins, validation and hooks) on a one-page site with a broken reference fails."""
    for tool in ("mkdocs", "mkdocs_jupyter", "mkdocstrings_handlers.python", "material", "yaml"):
        pytest.importorskip(tool)
    import yaml

    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Home\n\n{page}\n")
    cfg.update(docs_dir=str(docs), site_dir=str(tmp_path / "site"), nav=[{"Home": "index.md"}],
               hooks=[str(ROOT / "docs" / "hooks.py")], exclude_docs="")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml")], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0, r.stderr[-3000:]
    assert complaint in r.stdout + r.stderr, r.stderr[-3000:]

