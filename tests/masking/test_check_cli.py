"""`python -m lib mask check`: the real CLI on the smollm2 and mistral_v3 fixtures, and its pure functions.

Each subprocess costs ~3 s (importing transformers), so the CLI runs five times and the rest is tested in-process.
"""
from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys

import pytest

from lib.models import shared_fixture_tokenizer
from lib.masking.check import (
    EXIT_SETUP, EXIT_UNMASKABLE, CheckFailed, check_conversations, conversation_problem, load_checked_tokenizer,
    one_line, parse_template_kwargs, read_conversations, run_mask_check,
)
from lib.paths import PROJECT_ROOT
from lib.models import fixture_dir

REPLY = "<think>\nadd\n</think>\nThe answer is 4."
SINGLE = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": REPLY}]
SECOND = "<think>\ndouble\n</think>\nThe answer is 8."
TWO_TURNS = SINGLE + [{"role": "user", "content": "And doubled?"}, {"role": "assistant", "content": SECOND}]
# ChatML without <|im_end|>: nothing closes a reply, so the model would never learn to stop.
NO_END_OF_TURN = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def mask_check(*args: str) -> subprocess.CompletedProcess:
    """The real CLI, offline, from the project root (so `lib` is this project's package)."""
    return subprocess.run([sys.executable, "-m", "lib", "mask", "check", *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)


def write_lines(path, *rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def output_lines(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- the CLI (five subprocesses) ----------------------------------------------------------------------------

def test_cli_prints_exactly_the_trained_text_for_each_conversation(tmp_path):
    convs = write_lines(tmp_path / "c.jsonl", {"messages": SINGLE}, "", {"id": "two", "messages": TWO_TURNS})
    result = mask_check("--tokenizer", str(fixture_dir("smollm2")), "--conversations", convs)
    assert result.returncode == 0, result.stderr
    first, second = output_lines(result)
    assert first["id"] == 1  # no id: the line number stands in
    assert first["trained_text"] == REPLY + "<|im_end|>"
    assert 0 < first["n_trained"] < first["n_tokens"]
    assert set(first) == {"id", "n_tokens", "n_trained", "trained_text"}  # no untrained_turns when none
    assert second["id"] == "two" and second["trained_text"] == REPLY + "<|im_end|>" + SECOND + "<|im_end|>"


def test_cli_last_turn_only_trains_just_the_last_reply(tmp_path):
    convs = write_lines(tmp_path / "c.jsonl", {"id": "m", "messages": TWO_TURNS})
    result = mask_check("--tokenizer", str(fixture_dir("mistral_v3")), "--conversations", convs,
                        "--last-turn-only")
    assert result.returncode == 0, result.stderr
    [line] = output_lines(result)
    assert line["id"] == "m" and line["trained_text"] == SECOND + "</s>"


def test_cli_template_without_end_of_turn_stops_at_that_line(tmp_path):
    template = tmp_path / "no_eot.jinja"
    template.write_text(NO_END_OF_TURN, encoding="utf-8")
    # Neither line can be masked with this template: the check stops at line 1, so nothing is printed.
    convs = write_lines(tmp_path / "c.jsonl", {"messages": SINGLE}, {"messages": TWO_TURNS})
    result = mask_check("--tokenizer", str(fixture_dir("smollm2")), "--conversations", convs,
                        "--chat-template", str(template))
    assert result.returncode == EXIT_UNMASKABLE
    assert result.stdout == ""
    [reason] = result.stderr.splitlines()
    assert reason.startswith(f"{convs}:1: sample 1: no end-of-turn token right after assistant turn 1")


def test_cli_malformed_json_names_file_and_line_after_printing_the_good_lines(tmp_path):
    convs = write_lines(tmp_path / "c.jsonl", {"messages": SINGLE}, '{"messages": [')
    result = mask_check("--tokenizer", str(fixture_dir("smollm2")), "--conversations", convs)
    assert result.returncode == EXIT_UNMASKABLE
    assert [line["id"] for line in output_lines(result)] == [1]
    [reason] = result.stderr.splitlines()
    assert reason.startswith(f"{convs}:2: malformed JSON")


def test_cli_missing_tokenizer_folder_is_a_setup_error(tmp_path):
    convs = write_lines(tmp_path / "c.jsonl", {"messages": SINGLE})
    result = mask_check("--tokenizer", str(tmp_path / "nope"), "--conversations", convs)
    assert result.returncode == EXIT_SETUP
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: tokenizer folder not found: {tmp_path / 'nope'}"]


# --- the same paths in-process ------------------------------------------------------------------------------

def _rows(*conversations):
    return [(line, {"id": line, "messages": messages}) for line, messages in enumerate(conversations, start=1)]


def test_check_conversations_reports_turns_the_template_rewrites():
    qwen3 = shared_fixture_tokenizer("qwen3")
    # Qwen3 re-renders a reply as "<think>\n…\n</think>\n\n" + answer: the canonical form survives verbatim.
    canonical = [{**m, "content": m["content"].replace("</think>\n", "</think>\n\n")} for m in TWO_TURNS]
    [summary] = check_conversations(_rows(canonical), qwen3)
    assert summary["trained_text"] == canonical[-1]["content"] + "<|im_end|>"
    assert [t["turn"] for t in summary["untrained_turns"]] == [1]  # its <think> is dropped from the history
    [last_only] = check_conversations(_rows(canonical), qwen3, assistant_turns="last")
    assert "untrained_turns" not in last_only and last_only["trained_text"] == summary["trained_text"]


def test_check_conversations_passes_template_kwargs():
    llama = shared_fixture_tokenizer("llama3_2")
    [summary] = check_conversations(_rows(SINGLE), llama, template_kwargs={"date_string": "26 Jul 2024"})
    assert summary["trained_text"] == REPLY + "<|eot_id|>"


def test_check_conversations_is_lazy_and_stops_at_the_first_refusal():
    smol = shared_fixture_tokenizer("smollm2")
    results = check_conversations(_rows(SINGLE, SINGLE[:1], SINGLE), smol, source="f.jsonl")
    assert next(results)["id"] == 1
    with pytest.raises(CheckFailed, match=r"^f\.jsonl:2: sample 2: no assistant turn to train$") as failure:
        next(results)
    assert failure.value.exit_code == EXIT_UNMASKABLE


def test_a_template_error_is_a_refusal_and_a_broken_template_a_setup_error():
    mistral = shared_fixture_tokenizer("mistral_v3")
    two_users = [SINGLE[0], SINGLE[0], SINGLE[1]]
    with pytest.raises(CheckFailed, match=r"^f:1: sample 1: the chat template refused it: .*alternate") as failure:
        list(check_conversations(_rows(two_users), mistral, source="f"))
    assert failure.value.exit_code == EXIT_UNMASKABLE
    broken = copy.copy(shared_fixture_tokenizer("smollm2"))
    broken.chat_template = "{% for m in messages %}{{ m.content }}"
    with pytest.raises(CheckFailed, match="the chat template does not compile: .*template line 1") as failure:
        list(check_conversations(_rows(SINGLE), broken))
    assert failure.value.exit_code == EXIT_SETUP


@pytest.mark.parametrize("line, reason", [
    ("[1, 2]", "not a JSON object but a list"),
    ('{"id": "x"}', "no 'messages' list"),
    ('{"messages": []}', "no 'messages' list"),
    ('{"messages": [{"role": "user", "content": 3}]}', "message 0 is not a"),
])
def test_read_conversations_names_the_line_of_a_row_that_is_not_a_conversation(tmp_path, line, reason):
    path = write_lines(tmp_path / "c.jsonl", {"messages": SINGLE}, "", line)
    rows = read_conversations(path)
    assert next(rows) == (1, {"id": 1, "messages": SINGLE})
    with pytest.raises(CheckFailed, match=f"^{path}:3: {reason}"):
        next(rows)


def test_read_conversations_keeps_given_ids_and_rejects_non_utf8(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", {"id": 0, "messages": SINGLE}, {"id": None, "messages": SINGLE})
    assert [row["id"] for _, row in read_conversations(path)] == [0, 2]
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b'{"messages": "\xff"}\n')
    with pytest.raises(CheckFailed, match=f"^{binary}:1: invalid UTF-8: invalid start byte at byte 14"):
        list(read_conversations(binary))


def test_conversation_problem_accepts_a_canonical_conversation():
    assert conversation_problem({"messages": TWO_TURNS}) == ""


def test_chat_template_file_replaces_the_tokenizers_template(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text(NO_END_OF_TURN, encoding="utf-8")
    tok = load_checked_tokenizer(fixture_dir("smollm2"), template)
    assert tok.chat_template == NO_END_OF_TURN
    with pytest.raises(CheckFailed, match="chat template file not found: .*missing.jinja") as failure:
        load_checked_tokenizer(fixture_dir("smollm2"), tmp_path / "missing.jinja")
    assert failure.value.exit_code == EXIT_SETUP


def test_a_folder_without_tokenizer_files_says_what_is_missing(tmp_path):
    with pytest.raises(CheckFailed, match="is not a tokenizer folder: it has none of tokenizer.json"):
        load_checked_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckFailed, match=f"cannot load a tokenizer from {tmp_path}"):
        load_checked_tokenizer(tmp_path)


@pytest.mark.parametrize("text, expected", [(None, {}), ("", {}), ('{"date_string": "1 Jan 2025"}',
                                                                   {"date_string": "1 Jan 2025"})])
def test_parse_template_kwargs(text, expected):
    assert parse_template_kwargs(text) == expected


@pytest.mark.parametrize("text, reason", [("{", "not valid JSON"), ("[1]", "must be a JSON object, not a list")])
def test_parse_template_kwargs_errors(text, reason):
    with pytest.raises(CheckFailed, match=reason):
        parse_template_kwargs(text)


def test_run_mask_check_setup_errors_are_one_line_with_exit_2(tmp_path):
    convs = write_lines(tmp_path / "c.jsonl", {"messages": SINGLE})
    for args, reason in [
        ((str(fixture_dir("smollm2")), str(tmp_path / "none.jsonl")), "conversations file not found"),
        ((str(fixture_dir("smollm2")), convs, str(tmp_path / "none.jinja")), "chat template file not found"),
        ((str(fixture_dir("smollm2")), convs, None, False, "[]"), "--template-kwargs must be a JSON object"),
    ]:
        out, err = io.StringIO(), io.StringIO()
        assert run_mask_check(*args, out=out, err=err) == EXIT_SETUP
        assert out.getvalue() == "" and err.getvalue().startswith(f"error: {reason}")
        assert err.getvalue().count("\n") == 1


def test_one_line():
    assert one_line("a\n  b\n\nc ") == "a b c"


def test_template_kwargs_may_not_set_the_maskers_own_arguments():
    with pytest.raises(CheckFailed, match="may not set add_generation_prompt, tokenize") as caught:
        parse_template_kwargs('{"tokenize": true, "add_generation_prompt": true, "date_string": "x"}')
    assert caught.value.exit_code == EXIT_SETUP
