"""Test helpers for the teacher package: a scripted OpenAI-compatible server and small builders.

Usage: ``from tests.teacher.fakes import FakeTeacher, prompt, config_for, run``  (the `fake_teacher` fixture in
this folder's conftest starts and stops servers)
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lib.teacher.config import TeacherConfig
from lib.teacher.generate import generate_traces

MODEL = "fake-teacher"


class FakeTeacher:
    """`POST /v1/chat/completions` on 127.0.0.1 whose replies a test scripts per user question.

    `replies[question]`: message fields for the 200 reply (default: a kept trace answering 4).
    `errors[question]`: responses served, one per request, before the reply: `{"status", "headers", "body"}`
    (a callable body gets the request headers) or `{"stall_s"}` (answer late, after the client's timeout).
    `seen`: every request's question, headers (case-insensitive), JSON body and path.
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
            message["content"] += " " + json.dumps(dict(headers))
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
                # The request's own header mapping: case-insensitive, as HTTP header names are (httpx sends them
                # lower-case, urllib capitalised).
                question, headers = body["messages"][-1]["content"], self.headers
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
    """`generate_traces` with the last-number verifier, no progress bar, sleeps recorded instead of slept."""
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
