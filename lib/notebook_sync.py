"""Check that every `notebooks/*.py` (Jupytext percent, the source you edit) matches its paired `.ipynb`.

Usage: ``python -m lib.notebook_sync notebooks``  (exit 1 listing each drifted pair; fix with `make sync`)
"""
from __future__ import annotations

import sys
from pathlib import Path


def cells_of(notebook) -> list[tuple[str, str]]:
    """(cell type, source without trailing whitespace) of each cell: what a reader sees."""
    return [(cell.cell_type, cell.source.rstrip()) for cell in notebook.cells]


def pair_problems(py_path: Path) -> list[str]:
    """What differs between `py_path` and its `.ipynb` (empty list: in sync and clean)."""
    import jupytext
    import nbformat

    ipynb = py_path.with_suffix(".ipynb")
    if not ipynb.is_file():
        return [f"{py_path.name}: no paired {ipynb.name} (run `make sync`)"]
    script, notebook = jupytext.read(py_path), nbformat.read(ipynb, as_version=4)
    problems = []
    if cells_of(script) != cells_of(notebook):
        problems.append(f"{py_path.name} and {ipynb.name} differ (edit the .py, then run `make sync`)")
    if any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
        problems.append(f"{ipynb.name} carries outputs: executed notebooks belong in runs/, not in notebooks/")
    params = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(params) != 1:
        problems.append(f"{ipynb.name}: expected exactly one cell tagged 'parameters' (papermill), found {len(params)}")
    return problems


def main(folder: str) -> int:
    scripts = sorted(Path(folder).glob("[0-9][0-9]_*.py"))
    problems = [p for script in scripts for p in pair_problems(script)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(scripts)} notebook pairs checked, {len(problems)} problem(s)")
    return 1 if problems or not scripts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "notebooks"))
