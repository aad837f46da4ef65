"""lib.conversation: every source schema becomes the canonical example, or a Reject with line and reason."""
from __future__ import annotations

import gzip
import json
import re

import pytest

from lib.paths import DATA_DIR
from lib.conversation import overlap_report, prompt_messages, to_chat_messages
from lib.data.rows import read_reasoning_rows
from lib.jsonl import read_jsonl, write_jsonl
from lib.rejects import Reject, reject_counts
from lib.think import assistant_text

THINK_ANSWER = "<think>\nLet me add.\n2 + 2 = 4.\n</think>\n\nThe answer is 4."


def _jsonl(tmp_path, lines, name="mini.jsonl"):
    """Write raw lines (dicts are dumped, strings written as-is) and return the path."""
    path = tmp_path / name
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines),
                    encoding="utf-8")
    return path


def _messages(*turns, **extra):
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


# --- GSM8K ----------------------------------------------------------------------------------------------------

def test_gsm8k_row_becomes_canonical_without_calculator_notes(tmp_path):
    row = {"question": "  Natalia sold 48 clips in April and half as many in May. How many?  ",
           "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nTotal 48+24 = <<48+24=72>>72.\n#### 1,072"}
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, [row]), "gsm8k")
    assert rejects == []
    assert rows == [{
        "id": "mini-000001",
        "messages": [
            {"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many?"},
            {"role": "assistant", "think": "In May she sold 48/2 = 24 clips.\nTotal 48+24 = 72.",
             "answer": "The answer is 1072."}],
        "answer": "1072", "source": "gsm8k", "domain": "math"}]


@pytest.mark.parametrize("row, reason", [
    ({"question": "q", "answer": "no final marker"}, "gsm8k answer has no '#### N' final answer"),
    ({"question": "q", "answer": "<<1+1=2>>\n#### 2"}, "gsm8k row with empty rationale or empty final answer"),
    ({"question": "q", "answer": "reasoning\n####   "}, "gsm8k row with empty rationale or empty final answer"),
    ({"answer": "r #### 2"}, "missing or non-string field 'question'"),
    ({"question": "q", "answer": 2}, "missing or non-string field 'answer'"),
])
def test_gsm8k_rejects(tmp_path, row, reason):
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, [row]), "gsm8k")
    assert rows == [] and rejects == [Reject(1, "mini-000001", reason)]


def test_shipped_gsm8k_train_is_read_completely():
    rows, rejects = read_reasoning_rows(DATA_DIR / "gsm8k" / "train.jsonl.gz", "gsm8k")
    assert len(rows) == 7473 and rejects == []
    assert len({r["id"] for r in rows}) == 7473
    for row in rows:
        reply = row["messages"][-1]
        assert "<<" not in reply["think"] and ">>" not in reply["think"]
        assert reply["think"] and reply["think"] == reply["think"].strip()
        assert re.fullmatch(r"-?\d+(\.\d+)?", row["answer"]), row
        assert reply["answer"] == f"The answer is {row['answer']}."
    with gzip.open(DATA_DIR / "gsm8k" / "train.jsonl.gz", "rt") as handle:
        first = json.loads(handle.readline())
    assert rows[0]["messages"][0]["content"] == first["question"].strip()


def test_limit_stops_after_that_many_kept_rows(tmp_path):
    good = {"question": "q", "answer": "r\n#### 1"}
    path = _jsonl(tmp_path, [good, {"question": "bad"}, good, good, good])
    rows, rejects = read_reasoning_rows(path, "gsm8k", limit=2)
    assert len(rows) == 2 and [r.line for r in rejects] == [2]
    assert [r["id"] for r in rows] == ["mini-000001", "mini-000003"]


def test_id_prefix_and_row_ids(tmp_path):
    path = _jsonl(tmp_path, [{"question": "q", "answer": "r\n#### 1"},
                             {"id": "own-7", "question": "q", "answer": "r\n#### 1"}])
    rows, _ = read_reasoning_rows(path, "gsm8k", id_prefix="gsm8k-train")
    assert [r["id"] for r in rows] == ["gsm8k-train-000001", "own-7"]


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset_format 'csv'; expected one of gsm8k, triplets, messages"):
        read_reasoning_rows(tmp_path / "x.jsonl", "csv")
    with pytest.raises(FileNotFoundError, match="dataset file not found"):
        read_reasoning_rows(tmp_path / "missing.jsonl", "gsm8k")


# --- triplets ---------------------------------------------------------------------------------------------------

def test_triplet_becomes_canonical(tmp_path):
    row = {"problem": " What is 2+2? ", "thinking": "\n2 plus 2 is 4.\n", "solution": " 4 ", "answer": "4",
           "source": "nanbeige"}
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, [row]), "triplets")
    assert rejects == []
    assert rows[0]["messages"] == [{"role": "user", "content": "What is 2+2?"},
                                   {"role": "assistant", "think": "2 plus 2 is 4.", "answer": "4"}]
    assert (rows[0]["answer"], rows[0]["source"], rows[0]["domain"]) == ("4", "nanbeige", "math")


@pytest.mark.parametrize("row, reason", [
    ({"problem": "p", "thinking": "  \n", "solution": "s"}, "empty thinking"),
    ({"problem": "p", "thinking": "t", "solution": " "}, "empty solution"),
    ({"problem": "p", "thinking": "t"}, "missing or non-string field 'solution'"),
    ({"problem": ["p"], "thinking": "t", "solution": "s"}, "missing or non-string field 'problem'"),
])
def test_triplet_rejects(tmp_path, row, reason):
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, [row]), "triplets")
    assert rows == [] and [r.reason for r in rejects] == [reason]


# --- messages ---------------------------------------------------------------------------------------------------

def test_messages_with_think_inside_content(tmp_path):
    row = _messages(("system", "Be brief."), ("user", "2+2?"), ("assistant", THINK_ANSWER), answer="4")
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, [row]), "messages")
    assert rejects == []
    assert rows[0]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "think": "Let me add.\n2 + 2 = 4.", "answer": "The answer is 4."}]
    assert (rows[0]["answer"], rows[0]["source"], rows[0]["domain"]) == ("4", "messages", "general")


def test_messages_with_reasoning_content_field(tmp_path):
    row = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "reasoning_content": "2 plus 2.", "content": "4"}]}
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, [row]), "messages")
    assert rejects == [] and rows[0]["messages"][-1] == {"role": "assistant", "think": "2 plus 2.", "answer": "4"}


def test_messages_with_typed_content_parts(tmp_path):
    row = {"messages": [
        {"role": "system", "content": [{"type": "text", "value": "Sys "}, {"type": "text", "value": "prompt"}]},
        {"role": "user", "content": [{"type": "text", "value": "2+2?"}]},
        {"role": "assistant", "content": [{"type": "reasoning", "value": "add them"},
                                          {"type": "text", "value": "It is "}, {"type": "text", "value": "4."}]}]}
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, [row]), "messages")
    assert rejects == []
    assert rows[0]["messages"] == [{"role": "system", "content": "Sys prompt"},
                                   {"role": "user", "content": "2+2?"},
                                   {"role": "assistant", "think": "add them", "answer": "It is 4."}]


def test_multi_turn_messages_keep_every_turn(tmp_path):
    row = _messages(("user", "a?"), ("assistant", "<think>x</think>A"), ("user", "b?"),
                    ("assistant", "<think>y</think>B"))
    rows, _ = read_reasoning_rows(_jsonl(tmp_path, [row]), "messages")
    assert [(m["role"], m.get("think"), m.get("answer")) for m in rows[0]["messages"]] == [
        ("user", None, None), ("assistant", "x", "A"), ("user", None, None), ("assistant", "y", "B")]


def test_malformed_rows_are_rejected_with_line_numbers_and_reasons(tmp_path):
    good = _messages(("user", "q"), ("assistant", THINK_ANSWER))
    lines = [
        good,                                                                         # 1 kept
        '{"messages": [',                                                             # 2
        "",                                                                           # 3 blank: skipped
        "[1, 2]",                                                                     # 4
        {"conversation": []},                                                         # 5
        _messages(("user", "q"), ("assistant", "<think>  \n</think>\n\nA")),          # 6
        _messages(("user", "q"), ("assistant", "<think>a</think><think>b</think>A")),  # 7
        _messages(("user", "q"), ("assistant", "<think>a</think>A"), ("tool", "42")),  # 8
        {"messages": [{"role": "user", "content": "q"},
                      {"role": "assistant", "content": [{"type": "reasoning", "value": "r"},
                                                        {"type": "tool_call", "value": "{}"}]}]},  # 9
        _messages(("user", "q"), ("assistant", THINK_ANSWER), ("user", "more?")),      # 10
        _messages(("user", "q"), ("assistant", "Sure. <think>a</think>A")),            # 11
        _messages(("user", "q"), ("assistant", "<think>a</think>   ")),                # 12
        _messages(("user", "q"), ("assistant", "no think at all")),                    # 13
        good,                                                                         # 14 kept
    ]
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, lines), "messages")
    assert [r["id"] for r in rows] == ["mini-000001", "mini-000014"]
    got = [(r.line, r.id, r.reason) for r in rejects]
    assert [line for line, _, _ in got] == [2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert all(rid == f"mini-{line:06d}" for line, rid, _ in got)
    reasons = dict((line, reason) for line, _, reason in got)
    details = {r.line: r.detail for r in rejects}
    # source-level reasons are categories; where and what is in the detail (the column where the cut line ends)
    assert (reasons[2], details[2]) == ("malformed JSON", "Expecting value at column 15")
    assert (reasons[4], details[4]) == ("not a JSON object", "a list")
    assert reasons[5] == "missing or empty 'messages' list"
    assert reasons[6] == "empty think"
    assert reasons[7] == "assistant content needs exactly one <think>…</think> block"
    assert reasons[8] == "unsupported role 'tool' (tool turns are not trained yet)"
    assert reasons[9] == "assistant content part of type 'tool_call' is not supported"
    assert reasons[10] == "conversation does not end with an assistant turn"
    assert reasons[11] == "assistant content must start with its <think>…</think> block"
    assert reasons[12] == "empty answer after </think>"
    assert reasons[13] == "assistant content needs exactly one <think>…</think> block"
    assert len(rows) + len(rejects) == len([x for x in lines if x != ""])


@pytest.mark.parametrize("messages, reason", [
    (["just a string"], "a message is a str, not an object"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": ["<think>a</think>A"]}],
     "assistant content part is a str, not an object"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "reasoning"}]}],
     "assistant content part of type 'reasoning' without a string 'value'"),
    ([{"role": "user", "content": [{"type": "text", "value": 3}]}, {"role": "assistant", "content": THINK_ANSWER}],
     "user content part of type 'text' without a string 'value'"),
    ([{"role": "user", "content": [{"type": "image", "value": "x.png"}]},
      {"role": "assistant", "content": THINK_ANSWER}], "user turn has non-text content parts"),
    ([{"role": "user", "content": 7}, {"role": "assistant", "content": THINK_ANSWER}],
     "user turn content is not a string"),
    ([{"role": "user", "content": "q"},
      {"role": "assistant", "content": [{"type": "reasoning", "value": "a"}, {"type": "reasoning", "value": "b"},
                                        {"type": "text", "value": "A"}]}],
     "assistant turn has 2 reasoning parts, expected 1"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text", "value": "A"}]}],
     "assistant turn has 0 reasoning parts, expected 1"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": None}],
     "assistant turn without string or list content"),
    ([{"role": "user", "content": "q"},
      {"role": "assistant", "reasoning_content": "r", "content": "<think>again</think>A"}],
     "assistant turn has a <think> or </think> tag inside its reasoning or answer"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": THINK_ANSWER}],
     "the final assistant turn does not follow a user turn"),
    ([{"role": "assistant", "content": THINK_ANSWER}], "the final assistant turn does not follow a user turn"),
])
def test_structurally_broken_messages_are_rejects_not_crashes(tmp_path, messages, reason):
    rows, rejects = read_reasoning_rows(_jsonl(tmp_path, [{"messages": messages}]), "messages")
    assert rows == [] and [r.reason for r in rejects] == [reason]


def test_shipped_tool_use_demo_rejects_tool_calls_with_a_reason():
    rows, rejects = read_reasoning_rows(DATA_DIR / "samples" / "reason_tool_use_demo_50.jsonl", "messages")
    assert len(rows) + len(rejects) == 50
    assert len(rows) == 18
    # 31 conversations call tools; one (line 6) has a stray "</thread>\n</think>" leaked into its answer text,
    # which would train a second </think> after the think block.
    assert reject_counts(rejects) == {"assistant content part of type 'tool_call' is not supported": 31,
                                      "assistant turn has a <think> or </think> tag inside its reasoning or answer": 1}
    assert [r.line for r in rejects if "tag" in r.reason] == [6]
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["think"]
        assert all(m["role"] in ("system", "user", "assistant") for m in row["messages"])
    assert sorted(r.line for r in rejects) == [r.line for r in rejects]


def test_reject_counts_most_frequent_first():
    rejects = [Reject(1, "a", "x"), Reject(2, "b", "y"), Reject(3, "c", "y"), Reject(4, "d", "z"),
               Reject(5, "e", "y"), Reject(6, "f", "z")]
    counts = reject_counts(rejects)
    assert counts == {"y": 3, "z": 2, "x": 1} and list(counts) == ["y", "z", "x"]
    assert reject_counts([]) == {}


# --- to chat messages, prompts, overlap ---------------------------------------------------------------------

EXAMPLE = {"id": "e1", "messages": [{"role": "user", "content": "2+2?"},
                                    {"role": "assistant", "think": "  add  ", "answer": " 4 "}]}


def test_assistant_text_is_the_r1_convention():
    assert assistant_text("  add\n", "\n4 ") == "<think>\nadd\n</think>\n\n4"


def test_to_chat_messages_and_prompt_messages():
    assert to_chat_messages(EXAMPLE) == [{"role": "user", "content": "2+2?"},
                                         {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"}]
    with_system = to_chat_messages(EXAMPLE, system_prompt="Think first.")
    assert with_system[0] == {"role": "system", "content": "Think first."} and len(with_system) == 3
    assert prompt_messages(EXAMPLE, "Think first.") == with_system[:2]
    assert prompt_messages(EXAMPLE) == [{"role": "user", "content": "2+2?"}]


def test_own_system_prompt_wins_over_the_recipe_default():
    example = {"messages": [{"role": "system", "content": "Own."}, *EXAMPLE["messages"]]}
    messages = to_chat_messages(example, system_prompt="Recipe default.")
    assert [m["content"] for m in messages if m["role"] == "system"] == ["Own."]


def test_multi_turn_chat_messages_render_every_assistant_turn(tmp_path):
    row = _messages(("user", "a?"), ("assistant", "<think>x</think>A"), ("user", "b?"),
                    ("assistant", "<think>y</think>B"))
    rows, _ = read_reasoning_rows(_jsonl(tmp_path, [row]), "messages")
    chat = to_chat_messages(rows[0])
    assert [m["content"] for m in chat] == ["a?", "<think>\nx\n</think>\n\nA", "b?", "<think>\ny\n</think>\n\nB"]
    assert prompt_messages(rows[0]) == chat[:3]


def test_overlap_report_normalises_whitespace_and_case():
    def ex(question):
        return {"messages": [{"role": "user", "content": question},
                             {"role": "assistant", "think": "t", "answer": "a"}]}
    train = [ex("What is  2+2?"), ex("Name a prime.")]
    heldout = [ex("what is 2+2?\n"), ex("NAME A PRIME."), ex("What is 3+3?")]
    assert overlap_report(train, heldout) == 2
    assert overlap_report(train, [ex("What is 2 + 2?")]) == 0
    assert overlap_report([], heldout) == 0


def test_shipped_gsm8k_train_and_test_do_not_overlap():
    train, _ = read_reasoning_rows(DATA_DIR / "gsm8k" / "train.jsonl.gz", "gsm8k")
    test, rejects = read_reasoning_rows(DATA_DIR / "gsm8k" / "test.jsonl.gz", "gsm8k")
    assert rejects == [] and len(test) > 1000
    assert overlap_report(train, test) == 0
    assert overlap_report(train, train[:25]) == 25


def test_write_and_read_jsonl_round_trip(tmp_path):
    rows = [{"id": "ü-1", "text": "naïve <think>✓</think>"}, {"id": "2", "n": [1, 2]}]
    path = tmp_path / "nested" / "rows.jsonl"
    assert write_jsonl(path, rows) == 2
    assert read_jsonl(path) == rows
    assert "✓" in path.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
