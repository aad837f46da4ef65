"""Generating reasoning traces: ask the teacher every prompt the output lacks, judge and append each reply.

Usage: ``report = generate_traces(rows, TeacherConfig(base_url="http://127.0.0.1:8000/v1", model="r1"),
"runs/x/teacher.jsonl", verify=reply_matches_reference)`` then ``kept_canonical_rows("runs/x/teacher.jsonl")``.

The teacher is any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server, Ollama) or a local
GGUF run in-process by llama-cpp-python (``gguf_path``). Resuming, keeping rules and secrets:
- `lib.teacher.store`: one line per answered id, failures in a sidecar log retried by the next run;
- `lib.teacher.verdicts`: kept only if stopped by itself, one closed think block, a non-empty answer, and
  `verify(reference, answer)` True when the prompt has a reference; every other reply is kept in the file
  with its reject reason;
- the API key lives only in the environment variable `api_key_env` names; it is read per request and scrubbed
  from everything this package writes, logs or raises.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from tqdm.auto import tqdm

from lib.conversation import to_reasoning_messages
from lib.jsonl import write_jsonl
from lib.paths import project_path
from lib.teacher.client import Completion, TeacherClient, TeacherRequestError
from lib.teacher.config import TeacherConfig
from lib.teacher.http_client import OpenAIChatClient
from lib.teacher.local_client import LlamaCppClient
from lib.teacher.retry import call_with_retries
from lib.teacher.store import JsonlAppender, TraceFile, failures_path, read_trace_file
from lib.teacher.verdicts import FAILED_REQUEST, LEGACY_REASONS, Verify, judge_completion

log = logging.getLogger(__name__)


class PromptFormatError(ValueError):
    """A prompt row cannot be sent to a teacher; the message names the row id."""


def request_messages(row: dict) -> list[dict]:
    """The messages sent to the teacher: the row's system/user turns, without its trailing assistant turn.

    Prompt-only rows (no assistant turn) are sent whole. Earlier assistant turns are refused rather than
    guessed at: the canonical form has no plain-content assistant turn to send back.
    """
    row_id = row.get("id") if isinstance(row, dict) else None
    if not isinstance(row_id, str) or not row_id:
        raise PromptFormatError(f"prompt row without a string 'id': {str(row)[:80]!r}")
    turns = row.get("messages")
    if not isinstance(turns, list) or not turns:
        raise PromptFormatError(f"prompt {row_id!r}: missing or empty 'messages' list")
    if isinstance(turns[-1], dict) and turns[-1].get("role") == "assistant":
        turns = turns[:-1]
    messages = []
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("role") not in ("system", "user"):
            role = turn.get("role") if isinstance(turn, dict) else type(turn).__name__
            raise PromptFormatError(f"prompt {row_id!r}: a {role!r} turn before the last one; only system and "
                                    "user turns can precede the answer")
        if not isinstance(turn.get("content"), str):
            raise PromptFormatError(f"prompt {row_id!r}: {turn['role']} turn content is not a string")
        messages.append({"role": turn["role"], "content": turn["content"]})
    if not messages or messages[-1]["role"] != "user":
        raise PromptFormatError(f"prompt {row_id!r}: the messages sent must end with a user turn")
    return messages


def _prompt_requests(rows: list[dict]) -> dict[str, list[dict]]:
    """id -> request messages for every row; every row is checked before the first request is sent."""
    requests = {}
    for row in rows:
        messages = request_messages(row)
        if row["id"] in requests:
            raise PromptFormatError(f"prompt id {row['id']!r} appears twice: ids key the resumable output")
        requests[row["id"]] = messages
    return requests


def make_client(config: TeacherConfig) -> TeacherClient:
    """The client `config` describes: an HTTP endpoint or a local GGUF."""
    return OpenAIChatClient(config) if config.base_url else LlamaCppClient(config)


@dataclass
class GenerationReport:
    """What one `generate_traces` call did (counts are for this call; `kept_canonical_rows` reads the file)."""

    output: str
    failures_log: str
    requested: int
    skipped_done: int  # ids the output already held
    generated: int  # new records written (kept + rejected)
    failed: int  # requests that failed after their retries: logged, retried by the next run
    kept: int
    rejected: dict[str, int]  # reject reason -> count among the new records
    corrupt_lines: int  # lines of the output that are not records (torn by a kill), ignored
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float | None  # completion tokens per wall second over the run; None without usage

    def summary(self) -> str:
        """A few lines for a notebook cell."""
        speed = f", {self.tokens_per_s:.1f} tokens/s" if self.tokens_per_s is not None else ""
        rejected = ", ".join(f"{k} {v}" for k, v in self.rejected.items()) or "none"
        return (f"{self.requested} prompts: {self.skipped_done} already done, {self.generated} generated, "
                f"{self.failed} failed (retried next run)\nkept {self.kept}; rejected: {rejected}\n"
                f"{self.seconds:.1f} s{speed}; {self.corrupt_lines} torn line(s) ignored in {self.output}")


def trace_record(row: dict, messages: list[dict], completion: Completion, verdict: dict, attempts: int,
                 seconds: float) -> dict:
    """One output line: the prompt, the raw reply, the verdict (pure apart from the timestamp)."""
    return {"id": row["id"], "messages": messages, "answer": row.get("answer"), "source": row.get("source"),
            "domain": row.get("domain"), "model": completion.model, "content": completion.content,
            "reasoning_content": completion.reasoning_content, "finish_reason": completion.finish_reason,
            "usage": completion.usage, **verdict, "attempts": attempts, "seconds": round(seconds, 3),
            "created": _now_iso()}


def failure_record(row_id: str, err: TeacherRequestError) -> dict:
    """One failure-log line (pure apart from the timestamp)."""
    return {"id": row_id, "error": str(err), "status": err.status, "retryable": err.retryable,
            "attempts": err.attempts, "created": _now_iso()}


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _request_one(client: TeacherClient, messages: list[dict], config: TeacherConfig, sleep, rng, clock):
    """Worker body: (completion, attempts, seconds), or the final `TeacherRequestError` as a value."""
    start = clock()
    try:
        completion, attempts = call_with_retries(lambda: client.complete(messages), config, sleep, rng)
    except TeacherRequestError as err:
        return err
    return completion, attempts, clock() - start


def generate_traces(prompts: Iterable[dict], config: TeacherConfig, out_path: str | Path, verify: Verify | None,
                    *, client: TeacherClient | None = None, progress: bool = True,
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                    rng: random.Random | None = None) -> GenerationReport:
    """Ask the teacher every prompt whose id `out_path` lacks; append one judged record per reply.

    `verify(reference, answer_text)` runs in this (the calling) thread, as replies arrive: verifiers that
    use signal-based timeouts (math-verify) only work in the main thread. Failed requests go to
    `failures_path(out_path)` and are retried by the next call. `client`, `sleep`, `clock` and `rng` are
    injectable for tests; a client made here is closed here.
    """
    rows = list(prompts)
    requests = _prompt_requests(rows)
    rng = rng or random.Random()
    secret = os.environ.get(config.api_key_env)
    start = clock()
    own_client = None
    with JsonlAppender(out_path, secret) as writer, JsonlAppender(failures_path(out_path), secret) as failure_log:
        existing = read_trace_file(out_path)
        todo = [row for row in rows if row["id"] not in existing.records]
        if client is None and todo:  # nothing left to do: do not load a large GGUF for nothing
            client = own_client = make_client(config)
        new_records, failed, kept = [], 0, 0
        executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="teacher")
        bar = tqdm(total=len(todo), disable=not progress, desc=f"teacher {config.served_model}", unit="prompt")
        try:
            futures = {executor.submit(_request_one, client, requests[row["id"]], config, sleep, rng, clock): row
                       for row in todo}
            for future in as_completed(futures):
                row, outcome = futures[future], future.result()
                if isinstance(outcome, TeacherRequestError):
                    failure_log.append(failure_record(row["id"], outcome))
                    log.warning("prompt %s failed after %d attempt(s): %s", row["id"], outcome.attempts, outcome)
                    failed += 1
                else:
                    completion, attempts, seconds = outcome
                    verdict = judge_completion(completion, row.get("answer"), verify)
                    record = trace_record(row, requests[row["id"]], completion, verdict, attempts, seconds)
                    writer.append(record)
                    new_records.append(record)
                    kept += record["kept"]
                bar.update(1)
                bar.set_postfix(kept=kept, failed=failed, refresh=False)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)  # what is written stays written: rerun resumes
            raise
        finally:
            bar.close()
        executor.shutdown(wait=True)
        if own_client is not None:  # after every worker finished: none is still using it
            own_client.close()
    return _report(out_path, rows, existing, new_records, failed, clock() - start)


def _report(out_path, rows, existing: TraceFile, new_records: list[dict], failed: int,
            seconds: float) -> GenerationReport:
    """The run's counts from what it wrote (pure)."""
    usages = [r["usage"] for r in new_records if isinstance(r.get("usage"), dict)]
    completion_tokens = sum(int(u.get("completion_tokens") or 0) for u in usages)
    rejected = Counter(r["reject_reason"] for r in new_records if not r["kept"])
    return GenerationReport(
        output=str(out_path), failures_log=str(failures_path(out_path)), requested=len(rows),
        skipped_done=sum(row["id"] in existing.records for row in rows), generated=len(new_records),
        failed=failed, kept=sum(r["kept"] for r in new_records), rejected=dict(rejected.most_common()),
        corrupt_lines=existing.corrupt_lines, seconds=round(seconds, 3),
        prompt_tokens=sum(int(u.get("prompt_tokens") or 0) for u in usages), completion_tokens=completion_tokens,
        tokens_per_s=completion_tokens / seconds if usages and seconds > 0 else None)


# ------------------------------------------------------------------------------------ reading results


def kept_canonical_rows(out_path: str | Path) -> list[dict]:
    """The kept traces of an output file as canonical rows (`lib.conversation`'s form), in file order."""
    rows = []
    for record in read_trace_file(out_path).records.values():
        if record.get("kept"):
            assistant = {"role": "assistant", "think": record["think"], "answer": record["final_answer"]}
            rows.append({"id": record["id"], "messages": [*record["messages"], assistant],
                         "answer": record.get("answer"), "source": f"teacher:{record['model']}",
                         "domain": record.get("domain")})
    return rows


def write_kept_traces(out_path: str | Path, kept_path: str | Path) -> list[dict]:
    """Write the kept traces of an output file to `kept_path` as chat messages whose reply carries
    `reasoning_content` (the `messages` schema reads them back: a recipe's `dataset_path` can name the file);
    return them as canonical rows."""
    kept = kept_canonical_rows(out_path)
    write_jsonl(Path(kept_path), [to_reasoning_messages(row) for row in kept])
    return kept


def trace_reject_counts(out_path: str | Path) -> dict[str, int]:
    """Reject reason -> count over the whole output file, plus `FAILED_REQUEST` for ids only the failure
    log holds (they are retried by the next run); most frequent first."""
    trace = read_trace_file(out_path)
    counts = Counter(LEGACY_REASONS.get(r.get("reject_reason"), r.get("reject_reason"))
                     for r in trace.records.values() if not r.get("kept"))
    counts.update({FAILED_REQUEST: len(trace.failures)} if trace.failures else {})
    return dict(counts.most_common())


def run_teacher(settings, prompts: list[dict], verify: Verify | None, progress: bool = True) -> dict:
    """A recipe's teacher step from start to end: generate (resumable), write the kept traces as chat messages
    beside the output, and summarise this run and the whole file. `settings`: `lib.teacher.config.TeacherSettings`."""
    out = project_path(settings.output)
    report = generate_traces(prompts, settings.teacher, out, verify, progress=progress)
    kept = write_kept_traces(out, settings.kept_path)
    return {"teacher": settings.teacher.served_model, **dataclasses.asdict(report), "summary": report.summary(),
            "kept_total": len(kept), "rejected_total": trace_reject_counts(out), "kept_file": str(settings.kept_path)}
