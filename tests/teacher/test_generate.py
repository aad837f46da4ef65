"""A whole run against the scripted server: one judged record per prompt, resume, concurrency, kept rows."""
from __future__ import annotations

import json

import pytest

from lib.rejects import ANSWER_MISMATCH
from lib.teacher.client import Completion
from lib.jsonl import read_jsonl
from lib.teacher.generate import (PromptFormatError, generate_traces, kept_canonical_rows, write_kept_traces,
                                  request_messages, trace_reject_counts)
from lib.teacher.store import failures_path, read_trace_file
from lib.teacher.verdicts import LENGTH_CUT
from lib.think import EMPTY_ANSWER, UNCLOSED_THINK
from tests.teacher.fakes import MODEL, config_for, last_number_matches, output_ids, output_lines, prompt, run


def test_request_messages_drop_the_trailing_assistant_and_keep_prompt_only_rows():
    expected = [{"role": "system", "content": "Think first."}, {"role": "user", "content": "question 1"}]
    assert request_messages(prompt(1)) == expected
    assert request_messages(prompt(1, trailing_assistant=False)) == expected


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "user", "content": "q"}]}, "without a string 'id'"),
    ({"id": "a", "messages": []}, "missing or empty"),
    ({"id": "a", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"},
                              {"role": "user", "content": "q2"}]}, "'assistant' turn before the last"),
    ({"id": "a", "messages": [{"role": "system", "content": "s"}]}, "must end with a user turn"),
    ({"id": "a", "messages": [{"role": "user", "content": ["parts"]}]}, "not a string"),
])
def test_request_messages_refuse_rows_they_cannot_send(row, message):
    with pytest.raises(PromptFormatError, match=message):
        request_messages(row)


def test_duplicate_ids_are_refused_before_any_request(fake_teacher, tmp_path):
    teacher = fake_teacher()
    with pytest.raises(PromptFormatError, match="'p1' appears twice"):
        run([prompt(1), prompt(2), prompt(1)], config_for(teacher.base_url), tmp_path / "t.jsonl")
    assert teacher.seen == []


def test_success_writes_one_judged_record_per_prompt(fake_teacher, tmp_path):
    teacher = fake_teacher()
    out = tmp_path / "teacher.jsonl"
    report = run([prompt(0), prompt(1), prompt(2, trailing_assistant=False)], config_for(teacher.base_url), out)
    assert (report.requested, report.skipped_done, report.generated, report.failed, report.kept) == (3, 0, 3, 0, 3)
    assert report.rejected == {} and report.corrupt_lines == 0
    assert report.completion_tokens == 60 and report.prompt_tokens == 33 and report.tokens_per_s > 0
    records = {r["id"]: r for r in map(json.loads, output_lines(out))}
    assert sorted(records) == ["p0", "p1", "p2"]
    record = records["p0"]
    assert record["messages"] == [{"role": "system", "content": "Think first."},
                                  {"role": "user", "content": "question 0"}]
    assert record["content"] == "<think>\nLet me work out: question 0\n</think>\n\nThe answer is 4."
    assert (record["think"], record["final_answer"]) == ("Let me work out: question 0", "The answer is 4.")
    assert (record["finish_reason"], record["model"]) == ("stop", MODEL)
    assert (record["answer"], record["domain"], record["source"]) == ("4", "math", "unit")
    assert record["usage"]["completion_tokens"] == 20 and record["reasoning_content"] is None
    assert (record["verified"], record["kept"], record["reject_reason"], record["attempts"]) == (True, True, None, 1)
    sent = teacher.seen[0]
    assert sent["path"] == "/v1/chat/completions" and "Authorization" not in sent["headers"]
    assert {k: sent["body"][k] for k in ("model", "temperature", "top_p", "max_tokens", "stream")} == \
        {"model": MODEL, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "stream": False}
    assert failures_path(out).read_bytes() == b""


def test_resume_skips_done_ids_kept_or_rejected(fake_teacher, tmp_path):
    teacher = fake_teacher()
    teacher.replies["question 1"] = {"content": "<think>hmm</think>The answer is 5."}
    out = tmp_path / "t.jsonl"
    first = run([prompt(0), prompt(1)], config_for(teacher.base_url), out)
    assert (first.kept, first.rejected) == (1, {ANSWER_MISMATCH: 1})
    second = run([prompt(i) for i in range(4)], config_for(teacher.base_url), out)
    assert (second.requested, second.skipped_done, second.generated) == (4, 2, 2)
    assert sorted(teacher.questions()) == [f"question {i}" for i in range(4)]
    assert sorted(output_ids(out)) == ["p0", "p1", "p2", "p3"]


def test_concurrency_limit_is_respected(fake_teacher, tmp_path):
    teacher = fake_teacher(delay_s=0.1)
    report = run([prompt(i) for i in range(9)], config_for(teacher.base_url, concurrency=3), tmp_path / "t.jsonl")
    assert report.generated == 9
    assert teacher.max_in_flight == 3


def test_keeping_rules_on_server_replies_and_canonical_rows(fake_teacher, tmp_path):
    teacher = fake_teacher()
    teacher.replies.update({
        "cut": {"content": "<think>and then and then", "finish_reason": "length"},
        "open": {"content": "<think>I never close this. The answer is 4."},
        "wrong": {"content": "<think>3+1=5</think>The answer is 5."},
        "no-open": {"content": "R1 templates open the think in the prompt.\n</think>\n\nThe answer is 4."},
        "rc": {"content": "The answer is 4.", "reasoning_content": "2+2=4"},
        "ollama": {"content": "The answer is 4.", "reasoning": "two and two"},
        "rc-empty": {"content": "", "reasoning_content": "2+2=4"},
        "no-ref": {"content": "<think>a haiku needs no check</think>Leaves fall."},
    })
    rows = [prompt(i, q, answer=None if q == "no-ref" else "4") for i, q in enumerate(teacher.replies)]
    out = tmp_path / "t.jsonl"
    report = run(rows, config_for(teacher.base_url), out)
    expected_rejects = {LENGTH_CUT: 1, UNCLOSED_THINK: 1, ANSWER_MISMATCH: 1, EMPTY_ANSWER: 1}
    assert (report.generated, report.kept, report.rejected) == (8, 4, expected_rejects)
    assert trace_reject_counts(out) == expected_rejects
    records = {r["messages"][-1]["content"]: r for r in read_trace_file(out).records.values()}
    assert records["rc"]["reasoning_content"] == "2+2=4" and records["ollama"]["think"] == "two and two"
    assert records["no-ref"]["verified"] is None and records["wrong"]["verified"] is False
    assert (records["rc-empty"]["think"], records["rc-empty"]["final_answer"]) == ("2+2=4", None)

    kept = {row["messages"][-2]["content"]: row for row in kept_canonical_rows(out)}
    assert sorted(kept) == ["no-open", "no-ref", "ollama", "rc"]
    assert kept["rc"] == {"id": records["rc"]["id"], "answer": "4", "source": f"teacher:{MODEL}", "domain": "math",
                          "messages": [{"role": "system", "content": "Think first."},
                                       {"role": "user", "content": "rc"},
                                       {"role": "assistant", "think": "2+2=4", "answer": "The answer is 4."}]}
    assert kept["no-open"]["messages"][-1]["think"] == "R1 templates open the think in the prompt."
    written = write_kept_traces(out, tmp_path / "kept.jsonl")
    assert written == kept_canonical_rows(out)
    by_prompt = {row["messages"][-2]["content"]: row for row in read_jsonl(tmp_path / "kept.jsonl")}
    assert by_prompt["rc"]["messages"][-1] == {"role": "assistant", "reasoning_content": "2+2=4",
                                               "content": "The answer is 4."}


class ScriptedClient:
    """An in-process client: any `TeacherClient` works, and a client passed in is not closed by the run."""

    def __init__(self):
        self.closed = False

    def complete(self, messages):
        return Completion(content="<think>2+2</think>The answer is 4.", reasoning_content=None, finish_reason="stop",
                          usage=None, model="scripted")

    def close(self):
        self.closed = True


def test_an_injected_client_needs_no_server_and_stays_open(tmp_path):
    client = ScriptedClient()
    out = tmp_path / "t.jsonl"
    report = generate_traces([prompt(0)], config_for("http://127.0.0.1:1/v1"), out, last_number_matches,
                             client=client, progress=False)
    assert (report.kept, report.tokens_per_s, client.closed) == (1, None, False)
    assert kept_canonical_rows(out)[0]["source"] == "teacher:scripted"


def test_reasons_of_files_written_before_the_unified_vocabulary_are_counted_under_todays_names(tmp_path):
    out = tmp_path / "old.jsonl"
    old = [{"id": "a", "kept": False, "reject_reason": "wrong_answer"},
           {"id": "b", "kept": False, "reject_reason": ANSWER_MISMATCH}, {"id": "c", "kept": False,
                                                                         "reject_reason": "length_cut"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert trace_reject_counts(out) == {ANSWER_MISMATCH: 2, LENGTH_CUT: 1}
