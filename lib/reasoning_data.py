"""Reasoning data in one canonical form, from the schemas the recipes use.

Usage: ``rows, rejects = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k")``

The canonical example (one place that defines it)::

    {"id": "gsm8k-train-00017",
     "messages": [{"role": "system", "content": "..."},            # optional
                  {"role": "user", "content": "question"},
                  {"role": "assistant", "think": "step by step ...", "answer": "The answer is 72."}],
     "answer": "72",           # reference final answer when the source has one, else None
     "source": "gsm8k", "domain": "math"}

Chat sources may hold several user/assistant turns; the last turn is always an assistant turn after a user turn.
Reading sources is `lib.data_sources`; the schemas that become this form are `lib.data_schemas`.

Rows that cannot become that form are never dropped silently: they come back as `Reject(line, id, reason, detail)`
so the notebook can print counts per reason.
"""
from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lib.data_sources import NOT_AN_OBJECT, SourceError, iter_records, jsonl_lines, parse_json_object

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Reject:
    """A source row that could not be used: `line` (1-based row number in the source), `id`, a stable `reason`
    to count, and a `detail` saying where and what."""

    line: int
    id: str
    reason: str
    detail: str = ""


def open_text(path: Path):
    """Open a .jsonl or .jsonl.gz file for reading text."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_jsonl(path: Path):
    """Yield (line_number, parsed_object_or_error_string) for each non-blank line of a JSONL(.gz) file.

    Kept for `lib.mask_check`, which stops at the first bad line: errors are one string (the wording it prints),
    and a line that is not UTF-8 raises UnicodeDecodeError. `lib.data_sources.iter_records` rejects such lines
    one by one instead.
    """
    for line_no, _, raw in jsonl_lines(Path(path)):
        obj = parse_json_object(raw.decode("utf-8"))
        yield line_no, _error_text(obj) if isinstance(obj, SourceError) else obj


def _error_text(error: SourceError) -> str:
    """"malformed JSON: <msg> at column N", "not a JSON object but a list": the one-string form of an error."""
    return f"{error.reason} but {error.detail}" if error.reason == NOT_AN_OBJECT else str(error)


def assistant_text(think: str, answer: str) -> str:
    """The trained assistant content in the DeepSeek-R1 convention: think block, blank line, answer."""
    return f"{THINK_OPEN}\n{think.strip()}\n{THINK_CLOSE}\n\n{answer.strip()}"


def source_id_prefix(path_or_name: str | Path) -> str:
    """Ids of rows without their own: `<file or dataset name before its first dot>-<row number>` (train-000017)."""
    return Path(str(path_or_name)).name.split(".")[0]


def read_reasoning_rows(path: str | Path, dataset_format: str, limit: int = 0, id_prefix: str = "",
                        split: str = "train", config: str = "", field_mapping: dict | None = None) -> tuple[list, list]:
    """Read any source `lib.data_sources` reads, in `dataset_format` (a `lib.data_schemas` schema or "auto");
    return (canonical rows, rejects).

    `limit` > 0 stops after that many *kept* rows. Every row read is either kept or rejected with a reason.
    Row ids default to `<file name before its first dot>-<row number>`.
    """
    from lib.data_schemas import check_schema, convert_rows  # data_schemas imports this module

    check_schema(dataset_format, field_mapping)
    prefix = id_prefix or source_id_prefix(path)
    rows, rejects = [], []
    for _, item in convert_rows(iter_records(str(path), split, config), dataset_format, field_mapping, prefix):
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        rows.extend(example for example in item if not isinstance(example, Reject))
        rejects.extend(example for example in item if isinstance(example, Reject))
        if limit and len(rows) >= limit:
            return rows[:limit], rejects
    return rows, rejects


def reject_counts(rejects: list[Reject]) -> dict[str, int]:
    """Counts per reason, most frequent first."""
    return dict(Counter(r.reason for r in rejects).most_common())


def to_chat_messages(example: dict, system_prompt: str = "") -> list[dict]:
    """Canonical example -> plain `{"role", "content"}` messages for a chat template."""
    messages = []
    if system_prompt and example["messages"][0]["role"] != "system":
        messages.append({"role": "system", "content": system_prompt})
    for turn in example["messages"]:
        if turn["role"] == "assistant":
            messages.append({"role": "assistant", "content": assistant_text(turn["think"], turn["answer"])})
        else:
            messages.append({"role": turn["role"], "content": turn["content"]})
    return messages


def prompt_messages(example: dict, system_prompt: str = "") -> list[dict]:
    """Everything before the last assistant turn: what a model is asked at evaluation time."""
    return to_chat_messages(example, system_prompt)[:-1]


def write_jsonl(path: Path, rows) -> int:
    """Write rows as JSON lines; return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[dict]:
    """Read JSON lines written by `write_jsonl` (errors here are bugs, not data problems)."""
    with open_text(Path(path)) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def prompt_key(example: dict) -> str:
    """The last user prompt, whitespace-normalised and lower-cased: what "the same question" means here."""
    return " ".join(example["messages"][-2]["content"].split()).lower()


def overlap_report(train: list[dict], heldout: list[dict]) -> int:
    """How many held-out prompts appear verbatim (whitespace-normalised) among training prompts."""
    seen = {prompt_key(e) for e in train}
    return sum(prompt_key(e) in seen for e in heldout)
