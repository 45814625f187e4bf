"""Write the exercise notebooks (notebooks/course/NN_*.ipynb) from the solutions (notebooks/course/solutions/).

The solutions are the source of truth: in every code cell, the lines between `# BEGIN SOLUTION` and
`# END SOLUTION` become one `raise NotImplementedError(...)` line, at the same indent; outputs and execution
counts are dropped (students run the cells themselves). Edit a solution, then run

    python notebooks/course/make_exercises.py

tests/test_course.py fails when the committed exercises differ from what this script writes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOLUTIONS = HERE / "solutions"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
_DEF = re.compile(r"^\s*def (\w+)\(")


def strip_solution(source: str) -> str:
    """`source` with each marked solution block replaced by a not-written-yet line."""
    out: list[str] = []
    inside = False
    func = "this function"
    for line in source.split("\n"):
        m = _DEF.match(line)
        if m and not inside:
            func = m.group(1)
        if line.strip() == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN!r} in:\n{source}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f'{indent}raise NotImplementedError("write {func}")')
            continue
        if line.strip() == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r} in:\n{source}")
            inside = False
            continue
        if not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r} in:\n{source}")
    return "\n".join(out)


def exercise(solution: dict) -> dict:
    """The exercise notebook (as JSON) of a solutions notebook (as JSON)."""
    nb = json.loads(json.dumps(solution))
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = strip_solution(src)
        cell["outputs"] = []
        cell["execution_count"] = None
    nb["metadata"].pop("widgets", None)
    return nb


def render(nb: dict) -> str:
    """The notebook as nbformat writes it (1-space indent, sorted keys, trailing newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def expected() -> dict[Path, str]:
    """{exercise path: its text} for every solutions notebook."""
    return {HERE / p.name: render(exercise(json.loads(p.read_text()))) for p in sorted(SOLUTIONS.glob("*.ipynb"))}


def main() -> int:
    for path, text in expected().items():
        path.write_text(text)
        print("wrote", path.relative_to(HERE.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
