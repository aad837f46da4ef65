"""The problems a benchmark run judges: a shipped benchmark or a prompts file, any subset by size and seed.

Usage: ``problems = load_benchmark("math500", n=50, seed=0)``  → ``[{"id", "messages", "answer"}, …]``
``load_benchmark("my_prompts.jsonl")``  (lines of ``{"id"?, "prompt" | "messages", "answer"?}``)

The benchmarks and how each is asked are named in `lib.eval_sets.BENCHMARKS` (the recipe schema checks names there).
"""
from __future__ import annotations

import random
from pathlib import Path

from lib.eval_sets import BENCHMARKS, PROMPT_SETS, eval_rows
from lib.evaluate.checks import check_error
from lib.paths import project_path
from lib.jsonl import SourceError, jsonl_records


class BenchmarkError(ValueError):
    """A benchmark name that does not exist or a prompts file that cannot be read; the message says where."""


def load_benchmark(name: str, n: int | None = None, seed: int = 0, system_prompt: str = "") -> list[dict]:
    """Problems of benchmark `name` (a name of BENCHMARKS, or a .jsonl file), a seeded subset of `n` of them.

    Each problem: ``{"id", "messages": [system?, user], "answer": str | None}``; a file's problems without an
    answer are generated and measured but not judged.
    """
    if name in BENCHMARKS and BENCHMARKS[name][0] in PROMPT_SETS:
        problems = read_prompts_file(project_path(PROMPT_SETS[BENCHMARKS[name][0]]), system_prompt)
    elif name in BENCHMARKS:
        eval_set, instruction = BENCHMARKS[name]
        problems = [{"id": row["id"], "messages": _messages(_with_instruction(row["problem"], instruction),
                                                            system_prompt),
                     "answer": row["answer"]} for row in eval_rows(eval_set)]
    elif name.endswith((".jsonl", ".jsonl.gz")) or Path(name).is_file():
        problems = read_prompts_file(Path(name), system_prompt)
    else:
        raise BenchmarkError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)} or a prompts .jsonl "
                             f"file")
    return subset(problems, n, seed)


def subset(problems: list[dict], n: int | None, seed: int) -> list[dict]:
    """`n` problems drawn without replacement with `seed`, kept in file order (all of them when n is None)."""
    if n is None or n >= len(problems):
        return problems
    if n < 1:
        raise BenchmarkError(f"--n must be at least 1, not {n}")
    keep = sorted(random.Random(seed).sample(range(len(problems)), n))
    return [problems[i] for i in keep]


def read_prompts_file(path: Path, system_prompt: str = "") -> list[dict]:
    """A prompts file: one JSON object per line with "prompt" (text) or "messages" (chat turns ending with a user
    turn), optional "id" (default: the line number), "answer" (judged by math-verify) or "checks" (judged by rules,
    `lib.evaluate.checks`). Raises BenchmarkError naming FILE:LINE."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such prompts file")
    problems, ids = [], set()
    for number, row in jsonl_records(path):
        where = f"{path}:{number}"
        if isinstance(row, SourceError):
            raise BenchmarkError(f"{where}: {row}")
        problem = {"id": str(row.get("id", f"line-{number}")), "messages": _file_messages(row, where, system_prompt),
                   "answer": None if row.get("answer") is None else str(row["answer"])}
        if "checks" in row:
            if error := check_error(row["checks"]):
                raise BenchmarkError(f"{where}: {error}")
            if row.get("answer") is not None:
                raise BenchmarkError(f'{where}: give "answer" (judged by math-verify) or "checks" (judged by rules), '
                                     "not both")
            problem["checks"] = row["checks"]
        if problem["id"] in ids:
            raise BenchmarkError(f"{where}: id {problem['id']!r} appears twice")
        ids.add(problem["id"])
        problems.append(problem)
    if not problems:
        raise BenchmarkError(f"{path}: no prompts in the file")
    return problems


def _file_messages(row: dict, where: str, system_prompt: str) -> list[dict]:
    if isinstance(row.get("prompt"), str) and row["prompt"].strip():
        return _messages(row["prompt"], system_prompt)
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BenchmarkError(f'{where}: needs "prompt" (non-empty text) or "messages" (a list of chat turns)')
    for turn in messages:
        if not (isinstance(turn, dict) and turn.get("role") in ("system", "user", "assistant")
                and isinstance(turn.get("content"), str)):
            raise BenchmarkError(f'{where}: each turn of "messages" needs "role" (system, user or assistant) and '
                                 f'"content" (text)')
    if messages[-1]["role"] != "user":
        raise BenchmarkError(f'{where}: "messages" must end with a user turn (the model answers it)')
    if system_prompt and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _with_instruction(problem: str, instruction: str) -> str:
    return f"{problem}\n{instruction}" if instruction else problem


def _messages(user: str, system_prompt: str) -> list[dict]:
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}]
