"""The evaluation sets shipped in `data/` (sources and licences in data/README.md): one place names them.

Usage: ``problems = eval_problems("math500")``  (every problem's text, in file order)
``rows = eval_rows("gsm8k_test")``  ([{"id", "problem", "answer"}, …]: what a benchmark judges against)

The data stage decontaminates training rows against them; 05 and ``python -m lib eval`` judge models on them;
the recipe schema checks the names it is given.
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


# prompts files shipped as benchmarks (lib.evaluate.benchmarks reads them like a user's): "general" is the non-maths
# check — plain questions and simple instructions with answers judged by rules (lib.evaluate.checks), written for
# this project — that distillation on maths did not break the model's everyday answers. Not a decontamination set.
PROMPT_SETS = {"general": "data/eval/general.jsonl"}

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# the benchmarks 05 and `python -m lib eval` judge: name -> (evaluation set, instruction appended to the problem).
# GSM8K is asked as training asked it (the question alone: the recipes learn "The answer is N."); MATH-500 and
# AIME24 add DeepSeek-R1's instruction for maths, as R1's and open-r1's evaluations do, so the answer has one place
# to be found. "heldout" (05 only) is 01's held-out rows, asked as training asked.
BENCHMARKS = {
    "gsm8k": ("gsm8k_test", ""),
    "math500": ("math500", BOXED_INSTRUCTION),
    "aime24": ("aime24", BOXED_INSTRUCTION),
    "general": ("general", ""),  # the non-maths check (PROMPT_SETS)
}
HELDOUT = "heldout"


def eval_problems(name: str) -> list[str]:
    """The problem texts of evaluation set `name`; a ValueError lists the known names."""
    return [row["problem"] for row in eval_rows(name)]


def eval_rows(name: str) -> list[dict]:
    """Every problem of evaluation set `name` with its id and bare reference answer, in file order.

    Ids: MATH-500's `unique_id`, AIME24's `id` (prefixed), GSM8K's line number (`test-000001`, as 01_data names
    held-out rows); GSM8K's answer is what follows its `####`, thousands separators removed.
    """
    if name not in EVAL_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; known: {', '.join(EVAL_SETS)}")
    path, field = EVAL_SETS[name]
    rows = []
    for number, row in enumerate(read_jsonl(project_path(path)), start=1):
        if name == "gsm8k_test":
            rows.append({"id": f"test-{number:06d}", "problem": row[field],
                         "answer": row["answer"].rsplit("####", 1)[1].strip().replace(",", "")})
        else:
            ident = row.get("unique_id") or f"{name}-{row['id']}"
            rows.append({"id": ident, "problem": row[field], "answer": str(row["answer"])})
    return rows
