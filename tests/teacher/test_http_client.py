"""The OpenAI-compatible client against a scripted server on 127.0.0.1: retries, errors, redirects, secrets.

Sleeps and jitter are injected (`run` records the sleeps instead of sleeping), so backoff costs nothing and
the schedule is exact.
"""
from __future__ import annotations

import json
import logging
import uuid

import pytest

from lib.teacher.client import TeacherRequestError, redact
from lib.teacher.generate import trace_reject_counts
from lib.teacher.http_client import OpenAIChatClient, parse_retry_after
from lib.teacher.store import failures_path, read_trace_file
from lib.teacher.verdicts import FAILED_REQUEST
from tests.teacher.fakes import MODEL, closed_port, config_for, output_ids, output_lines, prompt, run


def test_retry_after_parses_seconds_and_http_dates():
    assert parse_retry_after("7", now=0) == 7.0
    assert parse_retry_after("-3", now=0) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_placeholder_keys_are_not_scrubbed_from_text():
    assert redact("EMPTY is fine", "EMPTY") == "EMPTY is fine"  # vLLM's customary dummy key
    assert redact("key sk-0123456789 here", "sk-0123456789") == "key [REDACTED] here"


def test_the_request_carries_the_sampling_fields_and_nothing_from_ambient_openai_settings(fake_teacher,
                                                                                         monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-0123456789")  # not the configured variable: never sent
    monkeypatch.setenv("OPENAI_ORG_ID", "org-ambient")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-ambient")
    teacher = fake_teacher()
    config = config_for(teacher.base_url, api_key_env="TEACHER_TEST_KEY", seed=7, extra_body={"top_k": 20})
    completion = OpenAIChatClient(config).complete([{"role": "user", "content": "question 0"}])
    assert (completion.finish_reason, completion.model, completion.usage["completion_tokens"]) == ("stop", MODEL, 20)
    sent = teacher.seen[0]
    assert sent["body"] == {"model": MODEL, "messages": [{"role": "user", "content": "question 0"}],
                            "stream": False, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "seed": 7,
                            "top_k": 20}
    headers = {name.lower(): value for name, value in sent["headers"].items()}
    assert not {"authorization", "openai-organization", "openai-project"} & set(headers)


def test_429_with_retry_after_is_waited_out_then_succeeds(fake_teacher, tmp_path):
    teacher = fake_teacher()
    teacher.errors["question 0"] = [{"status": 429, "headers": {"Retry-After": "7"}, "body": b'{"error": "slow"}'}]
    sleeps: list[float] = []
    report = run([prompt(0)], config_for(teacher.base_url, backoff_base_s=0.1), tmp_path / "t.jsonl", sleeps)
    assert sleeps == [pytest.approx(7.05)]  # the server's 7 s, plus half of the 0.1 s jitter allowance
    assert (report.generated, report.kept, report.failed) == (1, 1, 0)
    assert json.loads(output_lines(tmp_path / "t.jsonl")[0])["attempts"] == 2


def test_a_retry_after_longer_than_the_cap_is_capped_not_refused(fake_teacher, tmp_path):
    teacher = fake_teacher()
    teacher.errors["question 0"] = [{"status": 503, "headers": {"Retry-After": "900"}, "body": b"busy"}]
    sleeps: list[float] = []
    report = run([prompt(0)], config_for(teacher.base_url, retry_after_max_s=300.0), tmp_path / "t.jsonl", sleeps)
    assert sleeps == [300.5] and (report.generated, report.failed) == (1, 0)


def test_5xx_is_retried_with_exponential_backoff_then_succeeds(fake_teacher, tmp_path):
    teacher = fake_teacher()
    teacher.errors["question 0"] = [{"status": s, "body": b"overloaded"} for s in (500, 502, 503)]
    sleeps: list[float] = []
    report = run([prompt(0)], config_for(teacher.base_url), tmp_path / "t.jsonl", sleeps)
    assert sleeps == [0.75, 1.5, 3.0]  # steps 1, 2, 4 s with equal jitter at 0.5
    assert (report.generated, report.failed) == (1, 0)
    assert len(teacher.seen) == 4


def test_4xx_is_not_retried_and_the_error_names_status_and_body(fake_teacher, tmp_path):
    teacher = fake_teacher()
    body = b'{"error": {"message": "max_tokens is too large for this model"}}'
    teacher.errors["question 0"] = [{"status": 400, "body": body}]
    sleeps: list[float] = []
    out = tmp_path / "t.jsonl"
    report = run([prompt(0), prompt(1)], config_for(teacher.base_url), out, sleeps)
    assert sleeps == [] and teacher.questions().count("question 0") == 1
    assert (report.generated, report.failed) == (1, 1)
    failure = json.loads(failures_path(out).read_text())
    assert (failure["id"], failure["status"], failure["attempts"], failure["retryable"]) == ("p0", 400, 1, False)
    assert "HTTP 400" in failure["error"] and "max_tokens is too large" in failure["error"]
    assert output_ids(out) == ["p1"]

    teacher.errors["question 0"] = [{"status": 404, "body": b"no such model"}]
    with pytest.raises(TeacherRequestError, match="HTTP 404 .*no such model") as err:
        OpenAIChatClient(config_for(teacher.base_url)).complete([{"role": "user", "content": "question 0"}])
    assert (err.value.status, err.value.retryable) == (404, False)
    assert err.value.__context__ is None and err.value.__cause__ is None  # the package's error is not chained


def test_a_non_json_reply_is_not_retried(fake_teacher):
    teacher = fake_teacher()
    teacher.errors["question 0"] = [{"status": 200, "body": b"<html>a proxy's login page</html>"}]
    with pytest.raises(TeacherRequestError, match="non-JSON reply .*login page") as err:
        OpenAIChatClient(config_for(teacher.base_url)).complete([{"role": "user", "content": "question 0"}])
    assert err.value.retryable is False


def test_refused_connection_is_retried_then_logged_and_retried_by_the_next_run(fake_teacher, tmp_path):
    out = tmp_path / "t.jsonl"
    sleeps: list[float] = []
    first = run([prompt(0), prompt(1)], config_for(f"http://127.0.0.1:{closed_port()}/v1", max_retries=2), out, sleeps)
    assert (first.generated, first.failed) == (0, 2) and len(sleeps) == 4
    failures = [json.loads(line) for line in failures_path(out).read_text().splitlines()]
    assert sorted(f["id"] for f in failures) == ["p0", "p1"]
    assert all(f["attempts"] == 3 and f["retryable"] and "Connection refused" in f["error"] for f in failures)
    assert output_lines(out) == [] and trace_reject_counts(out) == {FAILED_REQUEST: 2}

    teacher = fake_teacher()
    second = run([prompt(0), prompt(1)], config_for(teacher.base_url), out)
    assert (second.skipped_done, second.generated, second.failed, second.kept) == (0, 2, 0, 2)
    assert sorted(output_ids(out)) == ["p0", "p1"]
    assert trace_reject_counts(out) == {} and read_trace_file(out).failures == {}


def test_a_timeout_is_retried(fake_teacher, tmp_path):
    teacher = fake_teacher()
    teacher.errors["question 0"] = [{"stall_s": 0.6}]
    sleeps: list[float] = []
    report = run([prompt(0)], config_for(teacher.base_url, timeout_s=0.2), tmp_path / "t.jsonl", sleeps)
    assert (report.generated, report.failed, len(sleeps)) == (1, 0, 1)


def test_api_key_is_sent_as_bearer_and_never_leaks(fake_teacher, tmp_path, monkeypatch, caplog, capsys):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("TEACHER_TEST_KEY", key)
    teacher = fake_teacher()
    echo = lambda headers: json.dumps({"error": "bad key", "you sent": headers["Authorization"]}).encode()  # noqa: E731
    teacher.replies["question 0"] = {"echo_headers": True}
    teacher.errors["question 1"] = [{"status": 400, "body": echo}]
    teacher.errors["question 2"] = [{"status": 503, "body": echo}]
    config = config_for(teacher.base_url, api_key_env="TEACHER_TEST_KEY")
    caplog.set_level(logging.DEBUG)  # every logger: this package's, openai's and its HTTP stack's
    out = tmp_path / "t.jsonl"
    report = run([prompt(0), prompt(1), prompt(2)], config, out, progress=True)
    client = OpenAIChatClient(config)
    with pytest.raises(TeacherRequestError) as err:
        teacher.errors["question 1"] = [{"status": 400, "body": echo}]
        client.complete([{"role": "user", "content": "question 1"}])

    assert all(s["headers"]["Authorization"] == f"Bearer {key}" for s in teacher.seen)
    assert (report.generated, report.failed) == (2, 1)
    captured = capsys.readouterr()
    written = out.read_text() + failures_path(out).read_text()
    assert "[REDACTED]" in out.read_text() and "[REDACTED]" in failures_path(out).read_text()
    assert "[REDACTED]" in caplog.text  # the 503 body was logged, scrubbed
    for text in (written, repr(config), repr(report), report.summary(), repr(client), str(err.value),
                 repr(err.value), caplog.text, captured.out, captured.err):
        assert key not in text
    # Nothing keeps the key between requests: the package's client holds a placeholder and no key header.
    assert key not in repr({**vars(client._client), "default_headers": client._client.default_headers})


def test_redirects_are_not_followed_so_the_key_stays_with_the_configured_server(fake_teacher, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("TEACHER_TEST_KEY", "sk-test-redirect-0123456789")
    teacher, elsewhere = fake_teacher(), fake_teacher()
    location = elsewhere.base_url + "/chat/completions"
    teacher.errors["question 0"] = [{"status": 307, "headers": {"Location": location}, "body": b"moved"}]
    out = tmp_path / "t.jsonl"
    report = run([prompt(0)], config_for(teacher.base_url, api_key_env="TEACHER_TEST_KEY"), out)
    assert report.failed == 1 and elsewhere.seen == []
    failure = json.loads(failures_path(out).read_text())
    assert failure["status"] == 307 and not failure["retryable"] and "redirect not followed" in failure["error"]


def test_a_same_origin_redirect_is_not_followed_either(fake_teacher, monkeypatch):
    monkeypatch.setenv("TEACHER_TEST_KEY", "sk-test-redirect-0123456789")
    teacher = fake_teacher()
    teacher.errors["question 0"] = [{"status": 308, "headers": {"Location": teacher.base_url + "/other"},
                                     "body": b""}]
    with pytest.raises(TeacherRequestError, match="HTTP 308"):
        OpenAIChatClient(config_for(teacher.base_url, api_key_env="TEACHER_TEST_KEY")).complete(
            [{"role": "user", "content": "question 0"}])
    assert [s["path"] for s in teacher.seen] == ["/v1/chat/completions"]
