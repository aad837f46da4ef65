"""The import graph of lib/ from its source (ast): folders, modules, lines, arrows between folders, and what the
layout forbids. Usage: ``python tools/import_graph.py`` (exit 1 when a rule is broken; tests/test_layout.py runs it).
"""
from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent / "lib"
STAGES = ["data", "masking", "train", "export", "evaluate", "grpo"]  # pipeline order: an arrow may only point backwards
# above the stages: what notebooks and the shell call (they wire stages together); everything else at lib/'s top
# level is the shared foundation below every stage
ENTRY = {"lib.__main__", "lib.colab", "lib.train_launch", "lib.modes", "lib.display", "lib.runner", "lib.dryrun_matrix",
         "lib.report", "lib.notebook_sync", "lib.gpu_check", "lib.gpu_check_child"}
SHARED, TOP = "lib (shared)", "lib (entry points)"
BELOW_STAGES = ["plan", "teacher"]  # folders every stage may use; they import only the shared foundation


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(LIB.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted(LIB.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported lib module, inside a function?) for every `lib` import of a file."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:  # `from .x import y`: invisible to this graph
            found.append((f"relative import (level {node.level}) of {node.module or '.'}", False))
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lib":
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "lib"]
        else:
            continue
        nested = any(isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and node in ast.walk(parent)
                     for parent in ast.walk(tree) if parent is not node)
        found += [(name, nested) for name in names]
    return found


def folder(module: str) -> str:
    parts = module.split(".")
    if module in ENTRY:
        return TOP
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (LIB / parts[1]).is_dir()) else SHARED


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {name for name, _ in imports(p) if name in known and name != m} for m, p in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop(); on.discard(w); group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def problems() -> list[str]:
    known, edges = modules(), graph()
    found = [f"circle: {' <-> '.join(c)}" for c in circles(edges)]
    for module, path in known.items():
        found += [f"{module}: imports {name} inside a function" for name, nested in imports(path)
                  if nested and name in known]
        found += [f"{module}: {name}; write the absolute lib.… path" for name, _ in imports(path)
                  if name.startswith("relative import")]
        for target in edges[module]:
            a, b = folder(module), folder(target)
            if a in STAGES and b in STAGES and STAGES.index(b) > STAGES.index(a):
                found.append(f"{module} -> {target}: an earlier stage imports a later one")
            if a == SHARED and b != SHARED:
                found.append(f"{module} -> {target}: a shared module imports a stage or an entry point")
            if a in BELOW_STAGES and b not in (SHARED, a):
                found.append(f"{module} -> {target}: {a}/ sits below the stages and imports only shared modules")
            if a != TOP and b == TOP:
                found.append(f"{module} -> {target}: a stage imports an entry point")
    return found


def main() -> int:
    known, edges = modules(), graph()
    lines = Counter()
    for module, path in known.items():
        lines[folder(module)] += len(path.read_text().splitlines())
    print("folder: modules, lines")
    for name in sorted(lines):
        print(f"  {name}: {sum(folder(m) == name for m in known)}, {lines[name]}")
    arrows = Counter((folder(a), folder(b)) for a, targets in edges.items() for b in targets if folder(a) != folder(b))
    print(f"arrows between folders ({sum(arrows.values())} module imports):")
    for (a, b), n in sorted(arrows.items()):
        print(f"  {a} -> {b}: {n}")
    found = problems()
    print(f"circles: {len(circles(edges))}; rule violations: {len(found)}")
    for problem in found:
        print("  " + problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
