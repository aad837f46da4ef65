"""Reasoning-trace schemas -> the canonical example of `lib.conversation`: converters, detection, field mapping.

Usage: ``for row_no, item in convert_rows(iter_records("tests/fixtures/data/openr1_math.parquet")): ...``

A converter is ``(row, row_id) -> list of canonical examples`` (a list: one OpenR1 row holds several
generations) and raises ``RejectError(reason, detail)`` for a row it cannot use. Reasons are stable categories
so rejects can be counted: they may name a field, a role, a content-part type or a marker, never a position, a
length or a piece of the text; the detail says where and what.

Schemas, in detection order (the keys each is detected by are `DETECTION_KEYS`, its fields `SCHEMA_FIELDS`):

- `openr1_math`: open-r1/OpenR1-Math-220k, several graded generations per problem
- `r1_distill_sft`: ServiceNow-AI/R1-Distill-SFT, `reannotated_assistant_content` holds `<think>…</think>answer`
- `openthoughts_metadata`: open-thoughts/OpenThoughts-114k, config `metadata` (`deepseek_reasoning`/`_solution`)
- `s1k_1_1`: simplescaling/s1K-1.1, its DeepSeek-R1 columns; `s1k`: simplescaling/s1K, its Gemini trajectory
- `sharegpt`: `{system, conversations: [{from, value}]}`, as Bespoke-Stratos-17k and OpenThoughts-114k ship
- `messages`: chat `messages`, reasoning in `<think>`, in `reasoning_content` or in typed content parts
- `triplets`: cold-start `{problem, thinking, solution}`; `limo`: GAIR/LIMO; `gsm8k`: openai/gsm8k

Detection takes the first schema in that order whose keys are all present, so a more specific layout wins over
a generic one it contains (OpenR1 and R1-Distill-SFT rows also carry `messages`).

Where rows come from a dataset with a per-row source column, the canonical `source` is
``"<schema>/<that source>"`` (``openr1_math/olympiads``), so counts per origin survive the merge into one form.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Iterator

from lib.jsonl import SourceError
from lib.rejects import Reject, RejectError
from lib.think import check_reply, split_think_block

AUTO = "auto"

# Bespoke-Stratos / OpenThoughts write the reasoning between these markers instead of <think>…</think>.
BEGIN_THOUGHT, END_THOUGHT = "<|begin_of_thought|>", "<|end_of_thought|>"
BEGIN_SOLUTION, END_SOLUTION = "<|begin_of_solution|>", "<|end_of_solution|>"
_THOUGHT_MARKERS = (BEGIN_THOUGHT, END_THOUGHT, BEGIN_SOLUTION, END_SOLUTION)

_THOUGHT_SOLUTION = re.compile(r"^\s*<\|begin_of_thought\|>(.*?)<\|end_of_thought\|>\s*"
                               r"<\|begin_of_solution\|>(.*?)<\|end_of_solution\|>\s*$", re.DOTALL)
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")  # GSM8K's "<<48/2=24>>" annotations for its calculator tool
_BOXED = re.compile(r"\\boxed\s*\{")
_SHORT_REFERENCE_CHARS = 40  # a one-line solution this short is the answer itself (AIME's "204"), not a derivation

# --- reject reasons shared by several schemas (schema-specific ones are written where they are raised) ---------
EMPTY_PROMPT = "empty prompt"
UNCLOSED_THOUGHT = f"unclosed {BEGIN_THOUGHT}"
UNCLOSED_SOLUTION = f"unclosed {BEGIN_SOLUTION}"
NOT_ONE_THOUGHT_SOLUTION = "assistant content needs exactly one thought block and one solution block"
THOUGHT_SOLUTION_LAYOUT = "assistant content must be a thought block followed by a solution block"
NO_CORRECT_GENERATION = "no correct complete generation"
GRADED_OUT = "generation graded incorrect or incomplete by the source"
UNEQUAL_LISTS = "OpenR1 list fields of unequal lengths"
UNKNOWN_SCHEMA = "no known schema fits the row's keys"
SCHEMA_MISMATCH = "row of another schema than the source's"
MISSING_MAPPED_COLUMN = "missing column of the field mapping"


# --- shared pieces --------------------------------------------------------------------------------------------

def canonical_example(row_id: str, messages: list[dict], answer, source: str, domain: str) -> dict:
    """The canonical example (defined in `lib.conversation`'s docstring), in its key order; a source or domain
    that is not a non-empty string (null, a number in a sloppy export) becomes "unknown" / "general"."""
    return {"id": row_id, "messages": messages, "answer": answer,
            "source": source if isinstance(source, str) and source.strip() else "unknown",
            "domain": domain if isinstance(domain, str) and domain.strip() else "general"}


def assistant_turn(think: str, answer: str, think_field: str = "", answer_field: str = "") -> dict:
    """The canonical assistant turn, after `lib.think.check_reply`'s checks (field names become the detail)."""
    think, answer = check_reply(think, answer, think_field, answer_field)
    return {"role": "assistant", "think": think, "answer": answer}


def split_reasoning(text: str) -> tuple[str, str]:
    """(think, answer) from one assistant string: `<think>…</think>answer`, or Bespoke-Stratos / OpenThoughts'
    `<|begin_of_thought|>…<|end_of_thought|><|begin_of_solution|>…<|end_of_solution|>` (the solution is the answer).
    """
    if any(marker in text for marker in _THOUGHT_MARKERS):
        return _split_thought_solution(text)
    return split_think_block(text)


def _split_thought_solution(text: str) -> tuple[str, str]:
    counts = dict(zip(_THOUGHT_MARKERS, (text.count(marker) for marker in _THOUGHT_MARKERS)))
    if counts[BEGIN_THOUGHT] == 1 and counts[END_THOUGHT] == 0:
        raise RejectError(UNCLOSED_THOUGHT)
    if counts[BEGIN_SOLUTION] == 1 and counts[END_SOLUTION] == 0:
        raise RejectError(UNCLOSED_SOLUTION)
    if set(counts.values()) != {1}:
        raise RejectError(NOT_ONE_THOUGHT_SOLUTION, ", ".join(f"{n} {m}" for m, n in counts.items()))
    match = _THOUGHT_SOLUTION.match(text)
    if not match:
        raise RejectError(THOUGHT_SOLUTION_LAYOUT)
    return match.group(1), match.group(2)


def last_boxed(text) -> str | None:
    """The content of the last `\\boxed{…}` in `text` (braces balanced, `\\{` `\\}` skipped), or None.

    None too when that last box is never closed: an earlier box may be an intermediate result, not the answer.
    """
    if not isinstance(text, str):
        return None
    starts = [match.end() for match in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, index = 1, starts[-1]
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        depth += (char == "{") - (char == "}")
        if depth == 0:
            content = text[starts[-1]:index].strip()
            return content or None
        index += 1
    return None


def short_reference(solution) -> str | None:
    """The reference answer inside a reference solution: its last `\\boxed{…}`, or the whole solution when it is
    one short line (AIME's "204"); None for a long worked solution without a box (no answer to check against)."""
    boxed = last_boxed(solution)
    if boxed is not None or not isinstance(solution, str):
        return boxed
    text = solution.strip()
    return text if text and "\n" not in text and len(text) <= _SHORT_REFERENCE_CHARS else None


def _required_str(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise RejectError(f"missing or non-string field {key!r}")
    return value


def _required_list(row: dict, key: str) -> list:
    value = row.get(key)
    if not isinstance(value, list):
        raise RejectError(f"missing or non-list field {key!r}")
    return value


def _reference_answer(value) -> str | None:
    """A reference answer as text: numbers (Parquet/JSON ints) become strings, empty or absent ones None."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text or None


def _source(schema: str, row: dict, key: str = "source") -> str:
    origin = row.get(key)
    return f"{schema}/{origin}" if isinstance(origin, str) and origin.strip() else schema


def _text_or(value, default: str) -> str:
    """`value` when it is a non-empty string (an optional column), else `default`."""
    return value if isinstance(value, str) and value.strip() else default


def _user(content: str, field: str) -> dict:
    """The user turn of a single-turn schema; an empty prompt would train an answer to nothing."""
    if not content.strip():
        raise RejectError(EMPTY_PROMPT, field)
    return {"role": "user", "content": content.strip()}


# --- converters -----------------------------------------------------------------------------------------------

def from_gsm8k(row: dict, row_id: str) -> list[dict]:
    """GSM8K `{question, answer: "rationale ... #### N"}` -> canonical; the rationale becomes the think.

    Calculator notes are removed so the model reasons in plain text, not in a tool syntax it cannot run.
    """
    question, answer = _required_str(row, "question"), _required_str(row, "answer")
    if "####" not in answer:
        raise RejectError("gsm8k answer has no '#### N' final answer")
    rationale, final = answer.rsplit("####", 1)
    rationale, final = _CALCULATOR_NOTE.sub("", rationale).strip(), final.strip().replace(",", "")
    if not rationale or not final:
        raise RejectError("gsm8k row with empty rationale or empty final answer")
    prompt = _user(question, "question")
    reply = assistant_turn(rationale, f"The answer is {final}.", "answer", "answer")
    return [canonical_example(row_id, [prompt, reply], final, "gsm8k", "math")]


def from_triplet(row: dict, row_id: str) -> list[dict]:
    """`{problem, thinking, solution}` (cold-start SFT sets) -> canonical; optional answer, source, domain kept."""
    problem, thinking, solution = (_required_str(row, k) for k in ("problem", "thinking", "solution"))
    if not thinking.strip():
        raise RejectError("empty thinking")
    if not solution.strip():
        raise RejectError("empty solution")
    prompt = _user(problem, "problem")
    reply = assistant_turn(thinking, solution, "thinking", "solution")
    return [canonical_example(row_id, [prompt, reply], _reference_answer(row.get("answer")),
                              row.get("source", "triplets"), row.get("domain", "math"))]


def from_messages(row: dict, row_id: str) -> list[dict]:
    """Chat `messages` -> canonical. The assistant's reasoning comes from `<think>…</think>` inside a string
    content, a `reasoning_content` field, or typed content parts (`{"type": "reasoning"|"text", "value"}`)."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RejectError("missing or empty 'messages' list")
    return [canonical_example(row_id, _conversation(messages), _reference_answer(row.get("answer")),
                              row.get("source", "messages"), row.get("domain", "general"))]


def from_sharegpt(row: dict, row_id: str) -> list[dict]:
    """ShareGPT `{system?, conversations: [{from, value}]}` (Bespoke-Stratos-17k, OpenThoughts-114k) -> canonical.

    Speakers human/user, gpt/assistant and system map to chat roles. A `system` prompt that instructs the
    `<|begin_of_thought|>` layout is dropped: the trained reply no longer uses those markers, and a prompt asking
    for them would contradict every target. Any other system prompt is kept.
    """
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RejectError("missing or empty 'conversations' list")
    messages = [_sharegpt_turn(turn) for turn in turns]
    system = row.get("system")
    if (isinstance(system, str) and system.strip() and BEGIN_THOUGHT not in system
            and messages[0].get("role") != "system"):
        messages.insert(0, {"role": "system", "content": system})
    return [canonical_example(row_id, _conversation(messages), None, _source("sharegpt", row),
                              _text_or(row.get("domain"), "general"))]


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _sharegpt_turn(turn) -> dict:
    """`{from, value}` -> `{role, content}`; an unknown speaker keeps its name, for `_conversation` to refuse."""
    if not isinstance(turn, dict):
        return turn  # refused by _conversation with the same reason as a chat message
    speaker = turn.get("from")
    if not isinstance(speaker, str):
        raise RejectError("ShareGPT turn without a string 'from'", f"from is a {type(speaker).__name__}")
    return {"role": _SHAREGPT_ROLES.get(speaker, speaker), "content": turn.get("value")}


def from_openr1_math(row: dict, row_id: str) -> list[dict]:
    """OpenR1-Math-220k -> one canonical example per generation that is correct and complete.

    Correct: Math-Verify or the Llama judge says so (`correctness_math_verify[k]` or `correctness_llama[k]` is
    True), as the dataset card counts a correct generation. Complete: `is_reasoning_complete[k]` is True and the
    generation stopped by itself (`finish_reasons[k]` is "stop" or unknown). Ids are `<uuid>-g<k>`, k the 0-based
    index in `generations`. Every other generation of a row that gave good ones comes back as a `Reject` beside
    them, so all are counted: GRADED_OUT for the ones the dataset grades wrong or unfinished, the format reason for
    a correct, complete one that is not one `<think>` block plus an answer. If nothing is usable the row is
    rejected with that format reason, or NO_CORRECT_GENERATION.
    """
    prompt = _user(_required_str(row, "problem"), "problem")
    generations = _required_list(row, "generations")
    flags = {key: _required_list(row, key) for key in ("is_reasoning_complete", "correctness_math_verify")}
    flags.update({key: row[key] for key in ("correctness_llama", "finish_reasons") if isinstance(row.get(key), list)})
    lengths = {key: len(values) for key, values in {"generations": generations, **flags}.items()}
    if len(set(lengths.values())) != 1:
        raise RejectError(UNEQUAL_LISTS, ", ".join(f"{key} {n}" for key, n in lengths.items()))
    base_id = str(row["uuid"]) if row.get("uuid") else row_id
    reference, source = _reference_answer(row.get("answer")), _source("openr1_math", row)
    examples, skipped, first_error = [], [], None
    for k, text in enumerate(generations):
        if not _usable_generation(flags, k):
            skipped.append(Reject(0, f"{base_id}-g{k}", GRADED_OUT, _grading(flags, k)))
            continue
        try:
            if not isinstance(text, str):
                raise RejectError("non-string generation")
            reply = assistant_turn(*split_reasoning(text))
        except RejectError as err:
            where = "; ".join(part for part in (f"generation {k}", err.detail) if part)
            first_error = first_error or RejectError(err.reason, where)
            skipped.append(Reject(0, f"{base_id}-g{k}", err.reason, where))  # line filled in by ConvertedRows
            continue
        examples.append(canonical_example(f"{base_id}-g{k}", [dict(prompt), reply], reference, source, "math"))
    if examples:
        return examples + skipped
    if first_error:
        raise first_error
    raise RejectError(NO_CORRECT_GENERATION, f"{len(generations)} generations, none both correct and complete")


def _grading(flags: dict, k: int) -> str:
    """What the dataset says of generation k (the detail of a GRADED_OUT reject)."""
    return ", ".join(f"{key} {values[k]}" for key, values in flags.items())


def _usable_generation(flags: dict, k: int) -> bool:
    """Generation k is correct by either verifier and complete (see `from_openr1_math`)."""
    llama, finish = flags.get("correctness_llama"), flags.get("finish_reasons")
    correct = flags["correctness_math_verify"][k] is True or (llama is not None and llama[k] is True)
    stopped = finish is None or finish[k] in ("stop", None)
    return correct and stopped and flags["is_reasoning_complete"][k] is True


def from_openthoughts_metadata(row: dict, row_id: str) -> list[dict]:
    """OpenThoughts-114k `metadata` config -> canonical: deepseek_reasoning is the think, deepseek_solution the
    answer. A code problem's `starter_code` is appended to the prompt (the solution completes it); the reference
    answer is the last `\\boxed{}` of `ground_truth_solution` (None for code, which is judged by `test_cases`)."""
    problem, starter = _required_str(row, "problem"), _text_or(row.get("starter_code"), "")
    prompt = _user(problem.strip() + (f"\n\n{starter.strip()}" if starter.strip() else ""), "problem")
    reply = assistant_turn(_required_str(row, "deepseek_reasoning"), _required_str(row, "deepseek_solution"),
                           "deepseek_reasoning", "deepseek_solution")
    return [canonical_example(row_id, [prompt, reply], last_boxed(row.get("ground_truth_solution")),
                              _source("openthoughts_metadata", row), _text_or(row.get("domain"), "general"))]


def from_s1k(row: dict, row_id: str) -> list[dict]:
    """s1K -> canonical: the one Gemini thinking trajectory is the think, `attempt` the answer.

    `thinking_trajectories` must hold exactly one string (s1K has one per question). The reference answer comes
    from `solution` via `short_reference`: its last box, or the solution itself when it is a short line.
    """
    prompt = _user(_required_str(row, "question"), "question")
    trajectories = _required_list(row, "thinking_trajectories")
    if len(trajectories) != 1 or not isinstance(trajectories[0], str):
        raise RejectError("'thinking_trajectories' must hold exactly one string", f"{len(trajectories)} items")
    reply = assistant_turn(trajectories[0], _required_str(row, "attempt"), "thinking_trajectories", "attempt")
    return [_s1k_example(row, row_id, prompt, reply, "s1k")]


def from_s1k_1_1(row: dict, row_id: str) -> list[dict]:
    """s1K-1.1 -> canonical from its DeepSeek-R1 columns (`deepseek_thinking_trajectory`, `deepseek_attempt`), the
    traces that release added; reference answer as in `from_s1k`."""
    prompt = _user(_required_str(row, "question"), "question")
    think, attempt = _required_str(row, "deepseek_thinking_trajectory"), _required_str(row, "deepseek_attempt")
    reply = assistant_turn(think, attempt, "deepseek_thinking_trajectory", "deepseek_attempt")
    return [_s1k_example(row, row_id, prompt, reply, "s1k_1_1")]


def _s1k_example(row: dict, row_id: str, prompt: dict, reply: dict, schema: str) -> dict:
    return canonical_example(row_id, [prompt, reply], short_reference(row.get("solution")),
                             _source(schema, row, "source_type"), _text_or(row.get("cot_type"), "math"))


def from_limo(row: dict, row_id: str) -> list[dict]:
    """LIMO `{question, solution, answer}` -> canonical. `solution` is the whole long reasoning (no think tags), so
    it becomes the think; the answer is one sentence stating `answer` in a box, "The final answer is
    $\\boxed{…}$.", the form answer checkers read; the reference answer is `answer`."""
    prompt = _user(_required_str(row, "question"), "question")
    solution, reference = _required_str(row, "solution"), _reference_answer(row.get("answer"))
    if reference is None:
        raise RejectError("missing or empty field 'answer'")
    reply = assistant_turn(solution, f"The final answer is $\\boxed{{{reference}}}$.", "solution", "answer")
    return [canonical_example(row_id, [prompt, reply], reference, _source("limo", row), "math")]


def from_r1_distill_sft(row: dict, row_id: str) -> list[dict]:
    """ServiceNow-AI/R1-Distill-SFT -> canonical: the reply is `reannotated_assistant_content`
    (`<think>…</think>answer`); the reference answer is the last `\\boxed{}` of `solution`, else None."""
    prompt = _user(_required_str(row, "problem"), "problem")
    content = _required_str(row, "reannotated_assistant_content")
    reply = assistant_turn(*split_reasoning(content), "reannotated_assistant_content", "reannotated_assistant_content")
    return [canonical_example(row_id, [prompt, reply], last_boxed(row.get("solution")),
                              _source("r1_distill_sft", row), "math")]


# --- chat conversations (messages and sharegpt) ---------------------------------------------------------------

def _conversation(turns: list) -> list[dict]:
    """Chat turns -> canonical turns: system/user text, assistant think + answer; it must end user -> assistant."""
    out = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise RejectError(f"a message is a {type(turn).__name__}, not an object")
        role = turn.get("role")
        if role not in ("system", "user", "assistant"):
            shown = repr(role) if isinstance(role, str) and len(role) <= 20 else f"of type {type(role).__name__}"
            raise RejectError(f"unsupported role {shown} (tool turns are not trained yet)")
        if role == "assistant":
            out.append(_split_assistant(turn))
        else:
            out.append({"role": role, "content": _plain_content(turn)})
            if role == "user" and not out[-1]["content"].strip():
                raise RejectError(EMPTY_PROMPT, f"user turn {len(out)}")
    if out[-1]["role"] != "assistant":
        raise RejectError("conversation does not end with an assistant turn")
    if len(out) < 2 or out[-2]["role"] != "user":
        raise RejectError("the final assistant turn does not follow a user turn")
    return out


def _split_assistant(turn: dict) -> dict:
    content = turn.get("content")
    if isinstance(content, list):
        _check_parts(content, "assistant")
        kinds = Counter(part["type"] for part in content)
        unknown = set(kinds) - {"reasoning", "text"}
        if unknown:
            raise RejectError(f"assistant content part of type {sorted(unknown)[0]!r} is not supported")
        if kinds["reasoning"] != 1:
            raise RejectError(f"assistant turn has {kinds['reasoning']} reasoning parts, expected 1")
        think = next(p["value"] for p in content if p["type"] == "reasoning")
        answer = "".join(p["value"] for p in content if p["type"] == "text")
    elif isinstance(turn.get("reasoning_content"), str):
        think, answer = turn["reasoning_content"], content if isinstance(content, str) else ""
    elif isinstance(content, str):
        think, answer = split_reasoning(content)
    else:
        raise RejectError("assistant turn without string or list content")
    return assistant_turn(think, answer)


def _plain_content(turn: dict) -> str:
    content = turn.get("content")
    if isinstance(content, list):
        _check_parts(content, turn.get("role"))
        if any(part.get("type") != "text" for part in content):
            raise RejectError(f"{turn.get('role')} turn has non-text content parts")
        return "".join(part["value"] for part in content)
    if not isinstance(content, str):
        raise RejectError(f"{turn.get('role')} turn content is not a string")
    return content


def _check_parts(parts: list, role) -> None:
    """Typed content parts must be objects; reasoning/text parts need a string `value`."""
    for part in parts:
        if not isinstance(part, dict):
            raise RejectError(f"{role} content part is a {type(part).__name__}, not an object")
        if not isinstance(part.get("type"), str):
            raise RejectError(f"{role} content part without a string 'type'",
                                  f"type is a {type(part.get('type')).__name__}")
        if part.get("type") in ("reasoning", "text") and not isinstance(part.get("value"), str):
            raise RejectError(f"{role} content part of type {part.get('type')!r} without a string 'value'")


# --- the registry: converters, fields, detection --------------------------------------------------------------

SCHEMAS = {
    "gsm8k": from_gsm8k, "triplets": from_triplet, "messages": from_messages, "openr1_math": from_openr1_math,
    "sharegpt": from_sharegpt, "openthoughts_metadata": from_openthoughts_metadata, "s1k": from_s1k,
    "s1k_1_1": from_s1k_1_1, "limo": from_limo, "r1_distill_sft": from_r1_distill_sft,
}
SCHEMA_CHOICES = (*SCHEMAS, AUTO)  # what a recipe's dataset_format may say

SCHEMA_FIELDS = {  # required fields per schema (a row without one is rejected)
    "gsm8k": ("question", "answer"),
    "triplets": ("problem", "thinking", "solution"),
    "messages": ("messages",),
    "openr1_math": ("problem", "generations", "is_reasoning_complete", "correctness_math_verify"),
    "sharegpt": ("conversations",),
    "openthoughts_metadata": ("problem", "deepseek_reasoning", "deepseek_solution"),
    "s1k": ("question", "thinking_trajectories", "attempt"),
    "s1k_1_1": ("question", "deepseek_thinking_trajectory", "deepseek_attempt"),
    "limo": ("question", "solution", "answer"),
    "r1_distill_sft": ("problem", "reannotated_assistant_content"),
}
SCHEMA_OPTIONAL_FIELDS = {  # fields a converter reads when present; `id` is read for every schema
    "gsm8k": (),
    "triplets": ("answer", "source", "domain"),
    "messages": ("answer", "source", "domain"),
    "openr1_math": ("answer", "uuid", "source", "correctness_llama", "finish_reasons"),
    "sharegpt": ("system", "source", "domain"),
    "openthoughts_metadata": ("ground_truth_solution", "starter_code", "domain", "source"),
    "s1k": ("solution", "cot_type", "source_type"),
    "s1k_1_1": ("solution", "cot_type", "source_type"),
    "limo": ("source",),
    "r1_distill_sft": ("solution", "source"),
}
DETECTION_KEYS = {  # most specific first: detect_schema takes the first schema whose keys are all present
    "openr1_math": ("generations", "correctness_math_verify"),
    "r1_distill_sft": ("reannotated_assistant_content",),
    "openthoughts_metadata": ("deepseek_reasoning", "deepseek_solution"),
    "s1k_1_1": ("deepseek_thinking_trajectory", "deepseek_attempt"),
    "s1k": ("thinking_trajectories", "attempt"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
    "triplets": ("problem", "thinking", "solution"),
    "limo": ("question", "solution", "answer"),
    "gsm8k": ("question", "answer"),
}


def detect_schema(row: dict) -> str:
    """The schema of `row`, from the keys it has (`DETECTION_KEYS`, most specific first)."""
    for schema, keys in DETECTION_KEYS.items():
        if all(key in row for key in keys):
            return schema
    known = "; ".join(f"{schema} ({', '.join(keys)})" for schema, keys in DETECTION_KEYS.items())
    raise RejectError(UNKNOWN_SCHEMA, f"row keys: {', '.join(map(str, row)) or 'none'}; known schemas: {known}")


def check_schema(schema: str, field_mapping: dict | None = None) -> None:
    """Raise ValueError for an unknown schema name, or a field mapping naming a field `schema` does not have.

    A mapping needs a named schema: it says which of that schema's fields each column holds, so with "auto"
    there would be nothing to map onto.
    """
    if schema not in SCHEMA_CHOICES:
        raise ValueError(f"unknown dataset_format {schema!r}; expected one of {', '.join(SCHEMA_CHOICES)}")
    if not field_mapping:
        return
    if schema == AUTO:
        raise ValueError("a field mapping needs a named dataset_format, not 'auto' "
                         f"(one of {', '.join(SCHEMAS)})")
    known = (*SCHEMA_FIELDS[schema], *SCHEMA_OPTIONAL_FIELDS[schema], "id")
    unknown = [name for name in field_mapping if name not in known]
    if unknown:
        raise ValueError(f"field mapping for {schema}: unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"{schema} fields are {', '.join(known)}")


def apply_field_mapping(row: dict, mapping: dict) -> dict:
    """`row` with each schema field set from the source column the mapping names (`{"problem": "prompt"}`).

    Columns are copied, not moved, so one column may feed two fields; other columns stay as they are.
    """
    missing = [column for column in mapping.values() if column not in row]
    if missing:
        raise RejectError(MISSING_MAPPED_COLUMN, f"no column {', '.join(map(repr, missing))} in this row")
    return {**row, **{field: row[column] for field, column in mapping.items()}}


# --- streaming conversion -------------------------------------------------------------------------------------

class ConvertedRows:
    """Iterator of (row number, [canonical examples] | Reject), exactly one item per source row (the list may
    also hold Rejects for single examples of a row that gave good ones too, e.g. one malformed OpenR1 generation).

    With schema "auto" the schema is detected row by row until a row converts, then fixed for the whole source
    (`self.schema` says which): a later row of another layout is a reject, never a silent switch, and a broken
    first row cannot set the schema for the rest.
    """

    def __init__(self, records: Iterable[tuple[int, dict | SourceError]], schema: str = AUTO,
                 field_mapping: dict | None = None, id_prefix: str = "row"):
        check_schema(schema, field_mapping)
        self.schema = None if schema == AUTO else schema
        self._items = self._convert(records, dict(field_mapping or {}), id_prefix)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[int, list[dict] | Reject]:
        return next(self._items)

    def _convert(self, records, mapping: dict, id_prefix: str) -> Iterator[tuple[int, list[dict] | Reject]]:
        for row_no, record in records:
            row_id = f"{id_prefix}-{row_no:06d}"
            if isinstance(record, SourceError):
                yield row_no, Reject(row_no, row_id, record.reason, record.detail)
                continue
            try:
                row = apply_field_mapping(record, mapping) if mapping else record
                row_id = row_id if row.get("id") in (None, "") else str(row["id"])
                schema = self.schema or detect_schema(row)
                items = convert_row(row, schema, row_id)
                self.schema = schema  # fixed by the first row that converts, not by a broken first row
                yield row_no, [dataclasses.replace(item, line=row_no) if isinstance(item, Reject) else item
                               for item in items]
            except RejectError as err:
                yield row_no, Reject(row_no, row_id, err.reason, err.detail)


def convert_rows(records: Iterable[tuple[int, dict | SourceError]], schema: str = AUTO,
                 field_mapping: dict | None = None, id_prefix: str = "row") -> ConvertedRows:
    """Stream `iter_records` output into (row number, [canonical examples] | Reject): see `ConvertedRows`.

    Row ids are the row's own `id` when it has one, else `<id_prefix>-<row number, 6 digits>`.
    """
    return ConvertedRows(records, schema, field_mapping, id_prefix)


def convert_row(row: dict, schema: str, row_id: str) -> list[dict]:
    """`row` converted by `schema`; a failing row that lacks the schema's keys but fits another schema is
    rejected as SCHEMA_MISMATCH (the likelier story than, say, its missing field)."""
    try:
        return SCHEMAS[schema](row, row_id)
    except RejectError as err:
        other = _other_schema(row, schema)
        if other:
            raise RejectError(SCHEMA_MISMATCH, f"a {other} row in a {schema} source") from err
        raise


def _other_schema(row: dict, schema: str) -> str | None:
    if all(key in row for key in DETECTION_KEYS[schema]):
        return None
    try:
        other = detect_schema(row)
    except RejectError:
        return None
    return other if other != schema else None
