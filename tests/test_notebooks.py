"""The tutorials as files: numbered in one sequence, every reference to a notebook names one that exists, each is
committed executed (no errors) with a "what you will learn" opening and a "what to try next" ending, and every
saekit widget in a saved output carries its static snapshot (text/html) for readers without a kernel.

nbval (`pytest --nbval-lax notebooks`) re-executes the notebooks and checks their asserts; this file checks what
nbval does not: the saved files a reader opens on GitHub, nbviewer or the documentation site.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PENDING: dict[str, str] = {}
"""A notebook whose contents another issue is reworking -> why its own text is not checked here yet (none now)."""
WIDGETS = ("FeatureDashboard(", "FeatureTable(", "FeatureBrowser(", "PromptInspector(", "SteeringPanel(", "AblationPanel(",
           "TrainingMonitor(", "CircuitView(", "SplitTree(", "FeatureMap(")
"""text/plain of saekit's widgets (their reprs); tqdm bars and ipywidgets containers are not ours."""
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def text(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def test_numbered_in_one_sequence():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)), [p.name for p in NOTEBOOKS]
    assert len(NOTEBOOKS) >= 11


def test_every_reference_names_an_existing_notebook():
    """README, ARCHITECTURE, BENCHMARKS, the tests, the library's docstrings and the notebooks themselves."""
    names = {p.stem for p in NOTEBOOKS}
    files = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "tests").glob("*.py")),
             *sorted((ROOT / "saekit").rglob("*.py")), *NOTEBOOKS]
    seen = 0
    for f in files:
        for ref in re.findall(r"notebooks/(\d\d_[a-z_]+)", f.read_text(encoding="utf-8")):
            seen += 1
            assert ref in names, f"{f.relative_to(ROOT)} names notebooks/{ref}, which does not exist"
    assert seen >= 5


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for p in NOTEBOOKS:
        assert f"`{p.stem}`" in readme, f"README's notebook list misses {p.stem}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_executed_without_errors(path):
    nb = load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "commit the notebook executed, with its outputs"
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), "executed top to bottom in one kernel"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, [e["ename"] + ": " + e["evalue"] for e in errors]


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in PENDING], ids=lambda p: p.name)
def test_opens_with_its_number_and_ends_with_what_next(path):
    cells = load(path)["cells"]
    first, last_md = text(cells[0]), text([c for c in cells if c["cell_type"] == "markdown"][-1])
    number = int(path.name[:2])
    assert cells[0]["cell_type"] == "markdown" and re.match(rf"# {number}\. \S", first), first[:80]
    assert re.search(r"learn|you will|we\b", first, re.I), "the opening says what the reader will learn"
    assert re.search(r"^## (What to try next|Next|Where next)", last_md, re.M), "the last text cell says what to try next"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in PENDING], ids=lambda p: p.name)
def test_saved_widgets_carry_a_static_snapshot(path):
    found = 0
    for cell in load(path)["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            plain = "".join(data.get("text/plain", ""))
            if WIDGET_MIME in data and plain.startswith(WIDGETS):
                found += 1
                snap = "".join(data.get("text/html", ""))
                assert snap.startswith('<iframe class="saekit-snapshot"') and "srcdoc=" in snap, (
                    f"{plain[:60]} in {path.name} was saved without its static snapshot: re-execute the notebook"
                )
                assert "&quot;_static&quot;:true" in snap, "the snapshot is the widget's static page"
    if path.name in ("01_quickstart.ipynb", "02_harvest_and_train.ipynb", "04_inspect_features.ipynb", "07_toy_models.ipynb",
                     "08_architectures.ipynb"):
        assert found, f"{path.name} shows widgets; none was found in its saved outputs"
