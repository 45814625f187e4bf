"""mkdocs hooks: the build fails (strict) when a public name has no docstring, and notebooks' widgets render
as their static snapshot.

Widgets: a saved widget output carries `application/vnd.jupyter.widget-view+json` (the live view, which needs
a kernel or a widget manager from a CDN) beside a static fallback: the `text/html` snapshot the widget's
`to_html` makes, an image, or at least `text/plain`. nbconvert prefers the live view, which shows nothing on
a static page offline, so `StaticWidgets` (added to mkdocs-jupyter's preprocessors) drops the live view
wherever a fallback exists, and the notebook's saved widget state with it.

"Public" is every name in `saekit.__all__` and in each subpackage's `__all__` that is a module, class or
function (constants carry attribute docstrings in their modules); a class counts only with a docstring of
its own (not an inherited one, nor a dataclass's generated signature). tests/test_docs.py runs the same check
without mkdocs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path


def public_packages() -> list[str]:
    """saekit and its subpackages."""
    import saekit

    return ["saekit"] + sorted(f"saekit.{m.name}" for m in pkgutil.iter_modules(saekit.__path__) if m.ispkg)


def _own_doc(obj) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    doc = (doc or "").strip()
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):  # a dataclass's generated signature
        return ""
    return doc


def missing_docstrings() -> list[str]:
    """Dotted names of public modules, classes and functions without a docstring of their own."""
    missing = []
    for pkg in public_packages():
        module = importlib.import_module(pkg)
        if not (module.__doc__ or "").strip():
            missing.append(pkg)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)) and not _own_doc(obj):
                missing.append(f"{pkg}.{name}")
    return missing


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")
"""tqdm's text form of a progress-bar widget ("Loading weights:  0%|   | 0/236 [00:00<?, ?it/s]")."""


def static_widgets(nb) -> int:
    """Drop each output's live widget view where it has a static fallback, and progress-bar widgets (a frozen
    bar says nothing on a static page); returns how many kept a `text/html` or image snapshot (the rest fall
    back to their text)."""
    snapshots = 0
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                text = data.get("text/plain", "")
                if PROGRESS_BAR.search("".join(text) if isinstance(text, list) else text):
                    continue
                if len(data) > 1:
                    del data[WIDGET_VIEW]
                    snapshots += any(k == "text/html" or k.startswith("image/") for k in data)
            kept.append(out)
        if "outputs" in cell:
            cell["outputs"] = kept
    nb.metadata.pop("widgets", None)
    return snapshots


def _patch_mkdocs_jupyter() -> None:
    import mkdocs_jupyter.nbconvert2 as nbc

    if getattr(nbc.SubCell, "saekit_static_widgets", False):
        return

    class StaticWidgets(nbc.SubCell):
        saekit_static_widgets = True

        def preprocess(self, nb, resources):
            nb, resources = super().preprocess(nb, resources)
            static_widgets(nb)
            return nb, resources

    nbc.SubCell = StaticWidgets  # nb2html builds its preprocessor list from this name at each call


ROOT = Path(__file__).resolve().parents[1]


def notebook_title(path: Path) -> str:
    """The notebook's first Markdown heading (without its '#'s), else its file name."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for line in src.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def tutorial_nav(root: Path = ROOT) -> dict[str, list]:
    """{section: [{title: docs path}]}: the tutorials and the course solutions, in file-name order."""
    tutorials = [{notebook_title(p): f"tutorials/{p.name}"} for p in sorted((root / "notebooks").glob("*.ipynb"))]
    course = [{"Teacher's guide": "tutorials/course/README.md"}] + [
        {notebook_title(p): f"tutorials/course/solutions/{p.name}"}
        for p in sorted((root / "notebooks" / "course" / "solutions").glob("*.ipynb"))
    ]
    return {"Tutorials": tutorials, "Course (solutions)": course}


def on_config(config, **kwargs):
    from mkdocs.exceptions import PluginError

    _patch_mkdocs_jupyter()
    sections = tutorial_nav()
    for item in config["nav"] or []:
        if isinstance(item, dict):
            for key in item:
                if key in sections:
                    item[key] = sections[key]

    missing = missing_docstrings()
    if missing:
        raise PluginError("public names without a docstring: " + ", ".join(missing))
    return config
