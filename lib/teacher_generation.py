"""Optional data stage: reasoning traces from a teacher model, generated resumably and judged on arrival.

Usage: ``report = generate_traces(rows, TeacherConfig(base_url="http://127.0.0.1:8000/v1", model="r1"),
"runs/x/teacher.jsonl", verify=reply_matches_reference)`` then ``kept_canonical_rows("runs/x/teacher.jsonl")``.

The teacher is any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server, Ollama: POST
``{base_url}/chat/completions``) or a local GGUF run in-process by llama-cpp-python (``gguf_path``).

Resume policy. The output is an append-only JSONL holding one line per prompt id that got a completion,
whether the trace was kept or rejected (a rejected trace is a finished answer: a rerun does not pay for it
again). A request that still fails after its retries is logged to the sidecar ``<name>.failed.jsonl`` and
never to the output, so a rerun retries exactly the ids the output lacks, and the output never holds an id
twice. A line torn by a kill is ignored and counted; the next append first ends it with a newline, so it
cannot swallow the next record. One writer per output file (an advisory lock refuses a second run).

Keeping rules. A trace is kept only if the server stopped by itself (``finish_reason == "stop"``), it holds
one complete reasoning block (a non-empty ``reasoning_content`` field, or content that opens with an
optional ``<think>`` and closes it with exactly one ``</think>``: R1-style templates put the opening tag in
the prompt), a non-empty answer follows, no stray think tag remains, and ``verify(reference, answer)`` is
True when the prompt has a reference. Every other trace is kept in the file with its reject reason.

Secrets. The API key lives only in the environment variable ``api_key_env`` names; it is read per request,
sent as ``Authorization: Bearer``, and scrubbed from everything this module writes, logs or raises.
"""
from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable, Iterable, Protocol

from lib.reasoning_data import THINK_CLOSE, THINK_OPEN

try:  # advisory lock against two runs appending to one file; absent on Windows, where the check is skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)

Verify = Callable[[str, str], "bool | None"]

REJECT_REASONS = ("length_cut", "not_stopped", "unclosed_think", "stray_think_tag", "empty_think",
                  "empty_answer", "wrong_answer", "unverified", "failed_request")
_RETRYABLE_STATUS = frozenset({408, 429})  # and every 5xx: the server may answer differently next time
_BODY_EXCERPT_CHARS = 300
_MAX_ERROR_BODY_BYTES = 65536  # an error page is read whole (to scrub it) but not without bound
_MIN_SECRET_CHARS = 8  # shorter "keys" ("EMPTY", "ollama") are placeholders; scrubbing them would mangle text
_REDACTED = "[REDACTED]"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TeacherConfigError(ValueError):
    """A `TeacherConfig` field is wrong; the message starts with the field's name."""


class PromptFormatError(ValueError):
    """A prompt row cannot be sent to a teacher; the message names the row id."""


class TeacherRequestError(Exception):
    """A request that failed; `retryable` says whether trying again can help. Messages hold no secret."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.retryable, self.status, self.retry_after = retryable, status, retry_after
        self.attempts = 1


@dataclass(frozen=True)
class TeacherConfig:
    """Where the teacher lives and how to sample it: exactly one of `base_url` or `gguf_path`.

    The API key is never a field (so never in a repr or a saved config): `api_key_env` names the
    environment variable holding it; an unset variable sends no Authorization header (local servers).
    """

    base_url: str = ""  # OpenAI-compatible root, e.g. "http://127.0.0.1:8000/v1" (without /chat/completions)
    gguf_path: str = ""  # or a local GGUF, run in this process by llama-cpp-python
    model: str = ""  # the served model name (required with base_url); a GGUF defaults to its file stem
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.6  # R1-family recommendation: greedy decoding loops inside long thoughts
    top_p: float = 0.95
    max_tokens: int = 4096  # room for a whole thought: a cut trace is rejected, never kept truncated
    concurrency: int = 4  # requests in flight; more than the server batches only queues there
    max_retries: int = 5  # retries after the first attempt (connection errors, timeouts, 408, 429, 5xx)
    timeout_s: float = 600.0  # per request: a long thought on a busy server takes minutes
    backoff_base_s: float = 1.0  # first retry waits 0.5-1 s, doubling each time (equal jitter)
    backoff_max_s: float = 60.0  # cap of the exponential backoff
    retry_after_max_s: float = 600.0  # a server's Retry-After is obeyed up to this
    seed: int | None = None  # sampling seed, when the server honours one
    extra_body: dict = field(default_factory=dict)  # server-specific request fields (top_k, chat_template_kwargs…)
    n_ctx: int = 4096  # GGUF only: prompt + max_tokens must fit
    n_threads: int = 0  # GGUF only: 0 lets llama.cpp choose

    def __post_init__(self):
        problems = config_problems(self)
        if problems:
            name, problem = problems[0]
            raise TeacherConfigError(f"TeacherConfig.{name}: {problem}")

    @property
    def served_model(self) -> str:
        """The model name written into records (`model`, or the GGUF's file stem)."""
        return self.model or Path(self.gguf_path).stem


def config_problems(config: TeacherConfig) -> list[tuple[str, str]]:
    """(field, problem) pairs, first problem first; empty when the config is usable (pure)."""
    problems = []
    if bool(config.base_url) == bool(config.gguf_path):
        problems.append(("base_url", "set exactly one of base_url (an OpenAI-compatible endpoint) "
                                     "or gguf_path (a local GGUF)"))
    if config.base_url:
        parts = urllib.parse.urlsplit(config.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(("base_url", f"{config.base_url!r} is not an http(s) URL"))
        elif parts.path.rstrip("/").endswith("/chat/completions"):
            problems.append(("base_url", "give the API root (…/v1), not the /chat/completions endpoint"))
        if not config.model:
            problems.append(("model", "required with base_url: the name the server serves the teacher under"))
    if config.gguf_path and not Path(config.gguf_path).is_file():
        problems.append(("gguf_path", f"{config.gguf_path!r} is not a file"))
    if not isinstance(config.api_key_env, str) or not _ENV_NAME.fullmatch(config.api_key_env):
        # The value is not echoed: a user who put the key itself here must not see it printed back.
        problems.append(("api_key_env", "must name an environment variable (letters, digits, _), "
                                        "not hold the key itself"))
    checks = [
        ("temperature", _is_number(config.temperature) and config.temperature >= 0, "must be >= 0"),
        ("top_p", _is_number(config.top_p) and 0 < config.top_p <= 1, "must be in (0, 1]"),
        ("max_tokens", _is_int(config.max_tokens) and config.max_tokens >= 1, "must be an integer >= 1"),
        ("concurrency", _is_int(config.concurrency) and config.concurrency >= 1, "must be an integer >= 1"),
        ("max_retries", _is_int(config.max_retries) and config.max_retries >= 0, "must be an integer >= 0"),
        ("timeout_s", _is_number(config.timeout_s) and config.timeout_s > 0, "must be > 0"),
        ("backoff_base_s", _is_number(config.backoff_base_s) and config.backoff_base_s >= 0, "must be >= 0"),
        ("backoff_max_s", _is_number(config.backoff_max_s) and config.backoff_max_s >= config.backoff_base_s,
         "must be >= backoff_base_s"),
        ("retry_after_max_s", _is_number(config.retry_after_max_s) and config.retry_after_max_s >= 0,
         "must be >= 0"),
        ("seed", config.seed is None or _is_int(config.seed), "must be an integer or None"),
        ("n_ctx", _is_int(config.n_ctx) and config.n_ctx >= 1, "must be an integer >= 1"),
        ("n_threads", _is_int(config.n_threads) and config.n_threads >= 0, "must be an integer >= 0"),
    ]
    problems += [(name, f"{problem}, got {getattr(config, name)!r}") for name, ok, problem in checks if not ok]
    if not isinstance(config.extra_body, dict):
        problems.append(("extra_body", "must be a dict of extra request fields"))
    elif {"messages", "stream"} & set(config.extra_body):
        problems.append(("extra_body", "may not set 'messages' or 'stream' (this module owns them)"))
    return problems


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------- prompts


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


# ------------------------------------------------------------------------------------- judging a trace


@dataclass(frozen=True)
class Completion:
    """One teacher reply, normalised across servers."""

    content: str
    reasoning_content: str | None
    finish_reason: str | None
    usage: dict | None
    model: str


def split_reasoning(content: str, reasoning_content: str | None) -> tuple[str | None, str | None, str | None]:
    """(think, answer, reject reason or None) of a reply; pure.

    A non-empty `reasoning_content` is the think and the content the answer. Otherwise the content must
    start with an optional `<think>` (R1-style templates put it in the prompt) and hold exactly one `</think>`.
    """
    if reasoning_content and reasoning_content.strip():
        think, answer = reasoning_content.strip(), content.strip()
    else:
        body = content.lstrip()
        body = body[len(THINK_OPEN):] if body.startswith(THINK_OPEN) else body
        closes = body.count(THINK_CLOSE)
        if closes == 0:
            return None, None, "unclosed_think"
        if closes > 1:
            return None, None, "stray_think_tag"
        think, answer = (part.strip() for part in body.split(THINK_CLOSE))
    if any(tag in text for tag in (THINK_OPEN, THINK_CLOSE) for text in (think, answer)):
        return None, None, "stray_think_tag"
    if not think:
        return None, None, "empty_think"
    if not answer:
        return think, None, "empty_answer"
    return think, answer, None


def judge_completion(completion: Completion, reference: str | None, verify: Verify | None) -> dict:
    """The verdict fields of a record: think, final_answer, verified, kept, reject_reason.

    `verify` is called only when the prompt has a reference (and a verifier is given); only True keeps.
    """
    verdict = {"think": None, "final_answer": None, "verified": None, "kept": False, "reject_reason": None}
    think, answer, problem = split_reasoning(completion.content, completion.reasoning_content)
    verdict.update(think=think, final_answer=answer)
    if completion.finish_reason != "stop":  # a cut thought is the most common failure: report it as such
        problem = "length_cut" if completion.finish_reason == "length" else "not_stopped"
    if problem is None and reference is not None and verify is not None:
        result = verify(reference, answer)
        verdict["verified"] = None if result is None else bool(result)  # numpy/sympy booleans become plain bools
        if verdict["verified"] is not True:
            problem = "wrong_answer" if verdict["verified"] is False else "unverified"
    verdict.update(kept=problem is None, reject_reason=problem)
    return verdict


# ---------------------------------------------------------------------------------------------- clients


class TeacherClient(Protocol):
    """What `generate_traces` needs: one chat completion, raising `TeacherRequestError` on failure."""

    def complete(self, messages: list[dict]) -> Completion: ...


def request_body(config: TeacherConfig, messages: list[dict]) -> dict:
    """The JSON body of one chat-completions request (pure)."""
    body = {"model": config.served_model, "messages": messages, "temperature": config.temperature,
            "top_p": config.top_p, "max_tokens": config.max_tokens, "stream": False}
    if config.seed is not None:
        body["seed"] = config.seed
    return {**body, **config.extra_body}


def parse_chat_response(data, fallback_model: str) -> Completion:
    """An OpenAI-shaped chat completion (HTTP servers and llama-cpp-python alike) -> `Completion`."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise TeacherRequestError(f"malformed chat completion (no choices[0].message): {str(data)[:200]}",
                                  retryable=False) from None
    content = message.get("content") or ""
    # vLLM and llama.cpp's server name the separate thought `reasoning_content`, Ollama and newer vLLM `reasoning`.
    reasoning = next((message[key] for key in ("reasoning_content", "reasoning")
                      if isinstance(message.get(key), str) and message[key]), None)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    return Completion(content=content if isinstance(content, str) else str(content), reasoning_content=reasoning,
                      finish_reason=choice.get("finish_reason"), usage=usage,
                      model=data.get("model") or fallback_model)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), None if absent/unreadable."""
    if not value or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced (secrets shorter than 8 chars are placeholders)."""
    if secret and len(secret) >= _MIN_SECRET_CHARS:
        return text.replace(secret, _REDACTED)
    return text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the Authorization header to wherever the server points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class OpenAIChatClient:
    """POST ``{base_url}/chat/completions`` with urllib; safe to share between threads (it keeps no connection)."""

    def __init__(self, config: TeacherConfig, environ=os.environ, wall_clock: Callable[[], float] = time.time):
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._environ, self._wall_clock = environ, wall_clock
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"OpenAIChatClient(url={self.url!r}, model={self.config.model!r})"

    def complete(self, messages: list[dict]) -> Completion:
        """One request; every failure becomes a `TeacherRequestError` whose message holds no secret."""
        key = self._environ.get(self.config.api_key_env) or ""  # read per call: never kept on the object
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(request_body(self.config, messages)).encode("utf-8")
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.config.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:  # before URLError/OSError: it subclasses both
            raise self._status_error(err, key) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", None) or err
            raise TeacherRequestError(redact(f"no response from {self.url}: {type(reason).__name__}: {reason}", key),
                                      retryable=True) from None
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise TeacherRequestError(f"non-JSON reply from {self.url}: {_excerpt(raw, key)}",
                                      retryable=False) from None
        return parse_chat_response(parsed, self.config.served_model)

    def _status_error(self, err: urllib.error.HTTPError, key: str) -> TeacherRequestError:
        try:
            body = err.read(_MAX_ERROR_BODY_BYTES)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            err.close()
        retryable = err.code in _RETRYABLE_STATUS or err.code >= 500
        hint = "" if retryable else " (not retried: the same request would fail again)"
        return TeacherRequestError(f"HTTP {err.code} from {self.url}: {_excerpt(body, key)}{hint}",
                                   retryable=retryable, status=err.code,
                                   retry_after=parse_retry_after(err.headers.get("Retry-After"), self._wall_clock()))


def _excerpt(raw: bytes, secret: str | None) -> str:
    """The start of a reply body on one line, enough to read the server's error message.

    Scrubbed before it is cut: a cut could leave a key's prefix that no longer matches the key."""
    text = " ".join(redact(raw.decode("utf-8", "replace"), secret).split())
    return text[:_BODY_EXCERPT_CHARS] + ("…" if len(text) > _BODY_EXCERPT_CHARS else "") if text else "(empty body)"


class LlamaCppClient:
    """A local GGUF via llama-cpp-python in this process. A `Llama` is not thread-safe: calls take turns."""

    def __init__(self, config: TeacherConfig, llama=None):
        self.config = config
        if llama is None:
            import llama_cpp

            threads = {"n_threads": config.n_threads, "n_threads_batch": config.n_threads} if config.n_threads else {}
            llama = llama_cpp.Llama(model_path=config.gguf_path, n_ctx=config.n_ctx, verbose=False,
                                    **({"seed": config.seed} if config.seed is not None else {}), **threads)
        self._llama, self._lock = llama, threading.Lock()

    def __repr__(self) -> str:
        return f"LlamaCppClient(gguf_path={self.config.gguf_path!r})"

    def complete(self, messages: list[dict]) -> Completion:
        """One chat completion with the template embedded in the GGUF; llama.cpp errors are not retried."""
        body = request_body(self.config, messages)
        for key in ("model", "stream", "messages"):
            body.pop(key)
        with self._lock:
            try:
                out = self._llama.create_chat_completion(messages=messages, **body)
            except Exception as err:  # noqa: BLE001 - e.g. a prompt longer than n_ctx: the same call fails again
                raise TeacherRequestError(f"llama.cpp failed: {type(err).__name__}: {err}", retryable=False) from None
        # llama-cpp-python reports the GGUF's absolute path as the model: records carry the portable name.
        return replace(parse_chat_response(out, self.config.served_model), model=self.config.served_model)


def make_client(config: TeacherConfig) -> TeacherClient:
    """The client `config` describes: an HTTP endpoint or a local GGUF."""
    return OpenAIChatClient(config) if config.base_url else LlamaCppClient(config)


# ---------------------------------------------------------------------------------------------- retries


def backoff_delay(attempt: int, base_s: float, max_s: float, unit_random: float,
                  retry_after: float | None = None, retry_after_max_s: float = math.inf) -> float:
    """Seconds before retry number `attempt + 1` (attempt counts from 0); pure.

    A server's Retry-After wins (capped), plus up to `base_s` of jitter so workers told the same moment do
    not all return at once. Otherwise equal jitter: half the exponential step, plus a random half of it.
    """
    if retry_after is not None:
        return min(retry_after, retry_after_max_s) + unit_random * base_s
    step = min(max_s, base_s * 2.0 ** min(attempt, 64))  # the exponent is capped so floats cannot overflow
    return step / 2 + unit_random * step / 2


def call_with_retries(call: Callable[[], Completion], config: TeacherConfig, sleep: Callable[[float], None],
                      rng: random.Random):
    """(result of `call`, attempts used); retryable errors are retried `config.max_retries` times.

    The last error is raised with `.attempts` set; non-retryable errors are raised at once.
    """
    for attempt in range(config.max_retries + 1):
        try:
            return call(), attempt + 1
        except TeacherRequestError as err:
            err.attempts = attempt + 1
            if not err.retryable or attempt == config.max_retries:
                raise
            delay = backoff_delay(attempt, config.backoff_base_s, config.backoff_max_s, rng.random(),
                                  err.retry_after, config.retry_after_max_s)
            log.warning("teacher request failed (attempt %d of %d), retrying in %.2f s: %s",
                        attempt + 1, config.max_retries + 1, delay, err)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------------ the output files


def failures_path(out_path: str | Path) -> Path:
    """The sidecar log of failed requests beside an output file: `teacher.jsonl` -> `teacher.failed.jsonl`."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".jsonl") + ".failed.jsonl")


def read_jsonl_tolerant(path: str | Path) -> tuple[list[dict], int]:
    """(records with a string id, count of lines that are not one): a kill can tear the last line.

    An unterminated last line that parses is a whole record (only its newline was lost) and counts as one,
    here and after the next append ends it: the reading is the same before and after, so nothing doubles.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    records, bad = [], 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError, or UnicodeDecodeError when the tear split a character
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records.append(record)
        else:
            bad += 1
    return records, bad


@dataclass
class TraceFile:
    """What an output file and its failure log say: finished records, open failures, unreadable lines."""

    records: dict[str, dict]  # id -> record; the first line of an id wins (the writer never repeats one)
    failures: dict[str, dict]  # id -> its latest failure, for ids the output does not hold yet
    corrupt_lines: int


def read_trace_file(out_path: str | Path) -> TraceFile:
    """Read an output file and its failure log, tolerating torn lines."""
    lines, corrupt = read_jsonl_tolerant(out_path)
    records = {}
    for record in lines:
        records.setdefault(record["id"], record)
    failure_lines, _ = read_jsonl_tolerant(failures_path(out_path))
    failures = {f["id"]: f for f in failure_lines if f["id"] not in records}
    return TraceFile(records=records, failures=failures, corrupt_lines=corrupt)


class JsonlAppender:
    """The single writer of one JSONL file: a record is one line, flushed and fsynced before `append` returns.

    Opening takes an advisory lock (a second run on the same file fails instead of interleaving) and ends a
    torn last line with a newline, so the first new record starts on a line of its own.
    """

    def __init__(self, path: str | Path, secret: str | None = None):
        self.path = Path(path)
        self._secret = secret
        self._lock = threading.Lock()
        self._handle = None

    def __repr__(self) -> str:
        return f"JsonlAppender({str(self.path)!r})"

    def __enter__(self) -> "JsonlAppender":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b")  # a+: appends always land at the end, and the last byte can be read
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise RuntimeError(f"{self.path} is being written by another run; wait for it or stop it") from None
            if os.fstat(handle.fileno()).st_size:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    self._write(handle, b"\n")
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()  # closing releases the lock
        self._handle = None

    def append(self, record: dict) -> None:
        """Write one record as one line; durable when this returns."""
        line = redact(json.dumps(record, ensure_ascii=False), self._secret) + "\n"
        with self._lock:
            self._write(self._handle, line.encode("utf-8"))

    @staticmethod
    def _write(handle, data: bytes) -> None:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------- the run


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
    """One output line: the prompt, the raw reply, the verdict (pure)."""
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
    injectable for tests.
    """
    rows = list(prompts)
    requests = _prompt_requests(rows)
    rng = rng or random.Random()
    secret = os.environ.get(config.api_key_env)
    start = clock()
    with JsonlAppender(out_path, secret) as writer, JsonlAppender(failures_path(out_path), secret) as failure_log:
        existing = read_trace_file(out_path)
        todo = [row for row in rows if row["id"] not in existing.records]
        if client is None and todo:  # nothing left to do: do not load a large GGUF for nothing
            client = make_client(config)
        new_records, failed, kept = [], 0, 0
        executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="teacher")
        bar = _progress_bar(len(todo), progress, config.served_model)
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
    return _report(out_path, rows, existing, new_records, failed, clock() - start)


def _progress_bar(total: int, enabled: bool, model: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=f"teacher {model}", unit="prompt")


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
    """The kept traces of an output file as canonical rows (`lib.reasoning_data`'s form), in file order."""
    rows = []
    for record in read_trace_file(out_path).records.values():
        if record.get("kept"):
            assistant = {"role": "assistant", "think": record["think"], "answer": record["final_answer"]}
            rows.append({"id": record["id"], "messages": [*record["messages"], assistant],
                         "answer": record.get("answer"), "source": f"teacher:{record['model']}",
                         "domain": record.get("domain")})
    return rows


def trace_reject_counts(out_path: str | Path) -> dict[str, int]:
    """Reject reason -> count over the whole output file, plus `failed_request` for ids only the failure
    log holds (they are retried by the next run); most frequent first."""
    trace = read_trace_file(out_path)
    counts = Counter(r.get("reject_reason") for r in trace.records.values() if not r.get("kept"))
    counts.update({"failed_request": len(trace.failures)} if trace.failures else {})
    return dict(counts.most_common())
