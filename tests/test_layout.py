"""The package's shape: every module imports on its own, saekit's imports form no cycle, only `saekit/lm/`
imports nnsight, and no module reaches into another's private (`_name`) names.

The import graph is read from the source (`ast`): module-level and function-level imports alike (a
function-level import closes a cycle as surely, only later), but not `if TYPE_CHECKING:` blocks, which
never run.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "saekit"
DOOR = "saekit.lm"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}
PACKAGES = {_module_name(p) for p in PKG.rglob("__init__.py")}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
        or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, skip_type_checking: bool = True):
    """Every node under `node`, leaving out the bodies of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if skip_type_checking and _is_type_checking(child):
            yield from (n for orelse in child.orelse for n in [orelse, *_walk(orelse)])
            continue
        yield child
        yield from _walk(child, skip_type_checking)


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against `module`)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if module in PACKAGES else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def saekit_imports(module: str):
    """(target module, imported name or None, line) for each import of a saekit module in `module`."""
    for node in _walk(_tree(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "saekit":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != "saekit":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, None, node.lineno  # `from pkg import submodule`
                else:
                    yield target, alias.name, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """{module: {imported module: line}}, with the packages an import runs on the way (their __init__)."""
    graph: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for m in MODULES:
        ancestors = {".".join(m.split(".")[:i]) for i in range(1, len(m.split(".")))}
        for target, _, line in saekit_imports(m):
            parts = target.split(".")
            # importing a.b.c runs a and a.b first, unless they are already being imported (m's own packages)
            ran = [".".join(parts[:i]) for i in range(1, len(parts))]
            for t in [p for p in ran if p not in ancestors] + [target]:
                if t in MODULES and t != m:
                    graph[m].setdefault(t, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_imports_on_its_own():
    """Each saekit module imports first in a fresh interpreter (so no module depends on another having been
    imported before it), and importing it does not import nnsight (the door opens only when asked).

    One subprocess; torch is imported once, then a child forked per module imports only that module."""
    script = textwrap.dedent(
        """
        import importlib, os, sys, traceback
        import torch  # noqa: F401  (shared by the children: the slow part of every import)

        failed = []
        for name in sys.argv[1:]:
            assert not any(m == "saekit" or m.startswith("saekit.") for m in sys.modules)
            pid = os.fork() if hasattr(os, "fork") else None
            if pid == 0:
                try:
                    importlib.import_module(name)
                    if "nnsight" in sys.modules:
                        raise AssertionError(f"importing {name} imported nnsight")
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            if pid is None:  # no fork here: one interpreter per module
                import subprocess
                code = subprocess.call([sys.executable, "-c", f"import {name}, sys; assert 'nnsight' not in sys.modules"])
            else:
                code = os.waitpid(pid, 0)[1]
            if code:
                failed.append(name)
        print("FAILED:", " ".join(failed))
        sys.exit(1 if failed else 0)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", script, *sorted(MODULES)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-6000:]


def test_saekit_has_no_import_cycle():
    """saekit's imports (module- and function-level) form no cycle: data flows one way."""
    graph = import_graph()
    found = cycles(graph)
    detail = [
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:] + c[:1]) if b in graph[a]) or ", ".join(c)
        for c in found
    ]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_the_cycle_check_sees_a_cycle():
    """The checker itself: a two-module loop and a loop through a package's __init__ are found."""
    assert cycles({"a": {"b": 1}, "b": {"a": 2}}) == [["a", "b"]]
    assert cycles({"p": {"p.x": 1}, "p.x": {"q": 3}, "q": {"p": 5}}) == [["p", "p.x", "q"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_only_the_door_imports_nnsight():
    """No file outside saekit/lm/ imports nnsight (at any level, TYPE_CHECKING blocks included)."""
    offenders = []
    for m, path in MODULES.items():
        if m == DOOR or m.startswith(DOOR + "."):
            continue
        for node in _walk(_tree(m), skip_type_checking=False):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n.split(".")[0] == "nnsight" for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        if re.search(r"""(import_module|__import__)\(\s*["']nnsight""", path.read_text()):
            offenders.append(f"{path.relative_to(ROOT)} (dynamic import)")
    assert not offenders, f"nnsight imported outside {DOOR}: {offenders}"


# Known crossings of private names (none left). This set may only shrink: a new entry is a new violation
# (fix it by promoting the name to a public, documented one, or moving it).
KNOWN_PRIVATE_CROSSINGS: set[str] = set()


def private_crossings() -> set[str]:
    """'M imports N._name' / 'M uses N._name' for every private name module M takes from another module N:
    imported by name, or read as an attribute of a name M imported from saekit (a module or a class)."""
    found = set()
    for m in MODULES:
        tree = _tree(m)
        bound: dict[str, str] = {}  # local name -> the saekit object it stands for
        for node in _walk(tree, skip_type_checking=False):
            if isinstance(node, ast.ImportFrom) and _resolve(m, node).split(".")[0] == "saekit":
                target = _resolve(m, node)
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and f"{target}.{alias.name}" not in MODULES:
                        found.add(f"{m} imports {target}.{alias.name}")
                    bound[alias.asname or alias.name] = f"{target}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "saekit":
                        bound[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or "saekit"
        for node in _walk(tree, skip_type_checking=False):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                owner = ".".join([bound[value.id], *chain])
                if owner != m and not owner.startswith(m + "."):
                    found.add(f"{m} uses {owner}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    """Private names stay private: what modules share is public and documented (known crossings listed above)."""
    found = private_crossings()
    new = sorted(found - KNOWN_PRIVATE_CROSSINGS)
    fixed = sorted(KNOWN_PRIVATE_CROSSINGS - found)
    assert not new, f"modules reach into other modules' private names: {new}"
    assert not fixed, f"these crossings are gone: delete them from KNOWN_PRIVATE_CROSSINGS: {fixed}"
