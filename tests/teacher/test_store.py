"""The append-only output: torn lines tolerated and closed, whole records counted once, one writer per file."""
from __future__ import annotations

import json

import pytest

from lib.teacher.store import JsonlAppender, OutputLockedError, read_jsonl_tolerant, read_trace_file
from tests.teacher.fakes import config_for, output_ids, prompt, run


def test_read_jsonl_tolerant_counts_every_line_that_is_not_a_record_with_a_string_id(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"id": "a", "x": 1}\n\n  \n[1, 2]\n{"id": 7}\n{"no_id": true}\n{"id": "b"\n'
                     + '{"id": "c", "text": "caf\u00e9"}\n'.encode() + '{"id": "d", "t": "\u00e9"}'.encode()[:-3])
    records, bad = read_jsonl_tolerant(path)
    assert [r["id"] for r in records] == ["a", "c"] and bad == 5  # blank lines are not lines
    assert read_jsonl_tolerant(tmp_path / "missing.jsonl") == ([], 0)


def test_the_first_line_of_an_id_wins_and_failures_of_answered_ids_are_closed(tmp_path):
    out = tmp_path / "t.jsonl"
    out.write_text('{"id": "a", "n": 1}\n{"id": "a", "n": 2}\n')
    (tmp_path / "t.failed.jsonl").write_text('{"id": "a", "error": "x"}\n{"id": "b", "error": "old"}\n'
                                             '{"id": "b", "error": "new"}\n')
    trace = read_trace_file(out)
    assert trace.records == {"a": {"id": "a", "n": 1}} and trace.corrupt_lines == 0
    assert trace.failures == {"b": {"id": "b", "error": "new"}}


def test_torn_last_line_is_ignored_counted_and_closed_before_the_next_record(fake_teacher, tmp_path):
    teacher = fake_teacher()
    out = tmp_path / "t.jsonl"
    run([prompt(0)], config_for(teacher.base_url), out)
    with open(out, "ab") as handle:  # what a kill in the middle of a write leaves: half a record, a split "é"
        handle.write('{"id": "p1", "content": "caf\u00e9'.encode()[:-1])
    report = run([prompt(0), prompt(1), prompt(2)], config_for(teacher.base_url), out)
    assert (report.skipped_done, report.generated, report.corrupt_lines) == (1, 2, 1)
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"" and lines[1].startswith(b'{"id": "p1", "content": "caf')  # the fragment stands alone
    assert sorted(r["id"] for r in read_trace_file(out).records.values()) == ["p0", "p1", "p2"]

    again = run([prompt(0), prompt(1), prompt(2)], config_for(teacher.base_url), out)
    assert (again.skipped_done, again.generated, again.corrupt_lines) == (3, 0, 1)
    assert teacher.questions().count("question 1") == 1


def test_an_unterminated_but_whole_last_record_counts_as_done(fake_teacher, tmp_path):
    teacher = fake_teacher()
    out = tmp_path / "t.jsonl"
    run([prompt(0)], config_for(teacher.base_url), out)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))  # the kill took only the newline
    report = run([prompt(0), prompt(1)], config_for(teacher.base_url), out)
    assert (report.skipped_done, report.generated, report.corrupt_lines) == (1, 1, 0)
    assert output_ids(out) == ["p0", "p1"] and teacher.questions().count("question 0") == 1


def test_a_second_writer_on_the_same_file_is_refused(fake_teacher, tmp_path):
    teacher = fake_teacher()
    out = tmp_path / "t.jsonl"
    with JsonlAppender(out):
        with pytest.raises(OutputLockedError, match="another run"):
            run([prompt(0)], config_for(teacher.base_url), out)
    assert teacher.seen == []
    assert issubclass(OutputLockedError, RuntimeError)


def test_appended_lines_are_scrubbed_of_the_secret(tmp_path):
    out = tmp_path / "t.jsonl"
    with JsonlAppender(out, secret="sk-0123456789") as writer:
        writer.append({"id": "a", "error": "you sent Bearer sk-0123456789"})
    assert json.loads(out.read_text()) == {"id": "a", "error": "you sent Bearer [REDACTED]"}
