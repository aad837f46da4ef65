"""Reasoning data in one canonical form, from the schemas the recipes use.

Usage: ``rows, rejects = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k")``

The canonical example (one place that defines it)::

    {"id": "gsm8k-train-00017",
     "messages": [{"role": "system", "content": "..."},            # optional
                  {"role": "user", "content": "question"},
                  {"role": "assistant", "think": "step by step ...", "answer": "The answer is 72."}],
     "answer": "72",           # reference final answer when the source has one
     "source": "gsm8k", "domain": "math"}

Rows that cannot become that form are never dropped silently: they come back as `Reject(line, id, reason)`
so the notebook can print counts per reason.
"""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")  # GSM8K's "<<48/2=24>>" annotations for its calculator tool
_THINK_BLOCK = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Reject:
    """A source row that could not be used, and why (line is 1-based in the source file)."""

    line: int
    id: str
    reason: str


class DataFormatError(ValueError):
    """A row does not match its declared format; the message is the reject reason."""


def open_text(path: Path):
    """Open a .jsonl or .jsonl.gz file for reading text."""
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_jsonl(path: Path):
    """Yield (line_number, parsed_object_or_error_string) for each non-blank line."""
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, f"malformed JSON: {err.msg} at column {err.colno}"
                continue
            yield line_no, obj if isinstance(obj, dict) else f"not a JSON object but a {type(obj).__name__}"


def iter_source(path_or_name: str, split: str = "train", config: str = ""):
    """Yield (row_number, object) from a local JSONL(.gz) file, or from a Hugging Face dataset by name.

    Hub names go through `datasets.load_dataset` (streaming, so large sets never sit in memory); row
    numbers then count from 1 like file lines.
    """
    from lib.paths import project_path

    local = project_path(path_or_name)
    if local.exists():
        yield from iter_jsonl(local)
        return
    if str(path_or_name).startswith((".", "/")) or str(path_or_name).endswith((".jsonl", ".gz", ".json")):
        raise FileNotFoundError(f"dataset file not found: {local}")
    import datasets  # only hub sources need it; importing it costs seconds

    for row_no, row in enumerate(datasets.load_dataset(path_or_name, config or None, split=split,
                                                                     streaming=True), start=1):
        yield row_no, dict(row)


def assistant_text(think: str, answer: str) -> str:
    """The trained assistant content in the DeepSeek-R1 convention: think block, blank line, answer."""
    return f"{THINK_OPEN}\n{think.strip()}\n{THINK_CLOSE}\n\n{answer.strip()}"


def from_gsm8k(row: dict, row_id: str) -> dict:
    """GSM8K `{question, answer: "rationale ... #### N"}` -> canonical; the rationale becomes the think.

    Calculator notes are removed so the model reasons in plain text, not in a tool syntax it cannot run.
    """
    question, answer = _required_str(row, "question"), _required_str(row, "answer")
    if "####" not in answer:
        raise DataFormatError("gsm8k answer has no '#### N' final answer")
    rationale, final = answer.rsplit("####", 1)
    rationale, final = _CALCULATOR_NOTE.sub("", rationale).strip(), final.strip().replace(",", "")
    if not rationale or not final:
        raise DataFormatError("gsm8k row with empty rationale or empty final answer")
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": question.strip()},
                     {"role": "assistant", "think": rationale, "answer": f"The answer is {final}."}],
        "answer": final, "source": "gsm8k", "domain": "math",
    }


def from_triplet(row: dict, row_id: str) -> dict:
    """`{problem, thinking, solution}` (cold-start SFT sets) -> canonical."""
    problem, thinking, solution = (_required_str(row, k) for k in ("problem", "thinking", "solution"))
    if not thinking.strip():
        raise DataFormatError("empty thinking")
    if not solution.strip():
        raise DataFormatError("empty solution")
    return {
        "id": row_id,
        "messages": [{"role": "user", "content": problem.strip()},
                     {"role": "assistant", "think": thinking.strip(), "answer": solution.strip()}],
        "answer": row.get("answer"), "source": row.get("source", "triplets"), "domain": row.get("domain", "math"),
    }


def from_messages(row: dict, row_id: str) -> dict:
    """Chat `messages` -> canonical. The assistant's reasoning comes from `<think>…</think>` inside a string
    content, a `reasoning_content` field, or typed content parts (`{"type": "reasoning"|"text", "value"}`)."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataFormatError("missing or empty 'messages' list")
    out = []
    for turn in messages:
        if not isinstance(turn, dict):
            raise DataFormatError(f"a message is a {type(turn).__name__}, not an object")
        role = turn.get("role")
        if role not in ("system", "user", "assistant"):
            raise DataFormatError(f"unsupported role {role!r} (tool turns are not trained yet)")
        if role == "assistant":
            out.append({"role": "assistant", **_split_assistant(turn)})
        else:
            out.append({"role": role, "content": _plain_content(turn)})
    if out[-1]["role"] != "assistant":
        raise DataFormatError("conversation does not end with an assistant turn")
    if len(out) < 2 or out[-2]["role"] != "user":
        raise DataFormatError("the final assistant turn does not follow a user turn")
    return {"id": row_id, "messages": out, "answer": row.get("answer"),
            "source": row.get("source", "messages"), "domain": row.get("domain", "general")}


def _split_assistant(turn: dict) -> dict:
    content = turn.get("content")
    if isinstance(content, list):
        _check_parts(content, "assistant")
        kinds = Counter(part.get("type") for part in content)
        unknown = set(kinds) - {"reasoning", "text"}
        if unknown:
            raise DataFormatError(f"assistant content part of type {sorted(unknown)[0]!r} is not supported")
        if kinds["reasoning"] != 1:
            raise DataFormatError(f"assistant turn has {kinds['reasoning']} reasoning parts, expected 1")
        think = next(p["value"] for p in content if p["type"] == "reasoning")
        answer = "".join(p["value"] for p in content if p["type"] == "text")
    elif isinstance(turn.get("reasoning_content"), str):
        think, answer = turn["reasoning_content"], content if isinstance(content, str) else ""
    elif isinstance(content, str):
        if content.count(THINK_OPEN) != 1 or content.count(THINK_CLOSE) != 1:
            raise DataFormatError("assistant content needs exactly one <think>…</think> block")
        match = _THINK_BLOCK.match(content)
        if not match:
            raise DataFormatError("assistant content must start with its <think>…</think> block")
        think, answer = match.group(1), match.group(2)
    else:
        raise DataFormatError("assistant turn without string or list content")
    if not think.strip():
        raise DataFormatError("empty think")
    if not answer.strip():
        raise DataFormatError("empty answer after </think>")
    if any(tag in text for tag in (THINK_OPEN, THINK_CLOSE) for text in (think, answer)):
        raise DataFormatError("assistant turn has a <think> or </think> tag inside its reasoning or answer")
    return {"think": think.strip(), "answer": answer.strip()}


def _plain_content(turn: dict) -> str:
    content = turn.get("content")
    if isinstance(content, list):
        _check_parts(content, turn.get("role"))
        if any(part.get("type") != "text" for part in content):
            raise DataFormatError(f"{turn.get('role')} turn has non-text content parts")
        return "".join(part["value"] for part in content)
    if not isinstance(content, str):
        raise DataFormatError(f"{turn.get('role')} turn content is not a string")
    return content


def _check_parts(parts: list, role) -> None:
    """Typed content parts must be objects; reasoning/text parts need a string `value`."""
    for part in parts:
        if not isinstance(part, dict):
            raise DataFormatError(f"{role} content part is a {type(part).__name__}, not an object")
        if part.get("type") in ("reasoning", "text") and not isinstance(part.get("value"), str):
            raise DataFormatError(f"{role} content part of type {part.get('type')!r} without a string 'value'")


def _required_str(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise DataFormatError(f"missing or non-string field {key!r}")
    return value


CONVERTERS = {"gsm8k": from_gsm8k, "triplets": from_triplet, "messages": from_messages}


def read_reasoning_rows(path: str | Path, dataset_format: str, limit: int = 0, id_prefix: str = "",
                        split: str = "train", config: str = "") -> tuple[list, list]:
    """Read a local JSONL(.gz) file or hub dataset in `dataset_format`; return (canonical rows, rejects).

    `limit` > 0 stops after that many *kept* rows. Every row read is either kept or rejected with a reason.
    """
    if dataset_format not in CONVERTERS:
        raise ValueError(f"unknown dataset_format {dataset_format!r}; expected one of {', '.join(CONVERTERS)}")
    convert, prefix = CONVERTERS[dataset_format], id_prefix or Path(path).name.split(".")[0]
    rows, rejects = [], []
    for line_no, obj in iter_source(str(path), split, config):
        row_id = f"{prefix}-{line_no:06d}"
        if isinstance(obj, str):
            rejects.append(Reject(line_no, row_id, obj))
            continue
        try:
            rows.append(convert(obj, str(obj.get("id", row_id))))
        except DataFormatError as err:
            rejects.append(Reject(line_no, row_id, str(err)))
        if limit and len(rows) >= limit:
            break
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
