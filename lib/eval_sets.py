"""The evaluation sets shipped in `data/` (sources and licences in data/README.md): one place names them.

Usage: ``problems = eval_problems("math500")``  (every problem's text, in file order)

The data stage decontaminates training rows against them; the recipe schema checks the names it is given.
"""
from __future__ import annotations

from lib.jsonl import read_jsonl
from lib.paths import project_path

# name -> (file, the field holding the problem text)
EVAL_SETS = {
    "gsm8k_test": ("data/gsm8k/test.jsonl.gz", "question"),
    "math500": ("data/eval/math500.jsonl.gz", "problem"),
    "aime24": ("data/eval/aime24.jsonl.gz", "problem"),
}


def eval_problems(name: str) -> list[str]:
    """The problem texts of evaluation set `name`; a ValueError lists the known names."""
    if name not in EVAL_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; known: {', '.join(EVAL_SETS)}")
    path, field = EVAL_SETS[name]
    return [row[field] for row in read_jsonl(project_path(path))]
