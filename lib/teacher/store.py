"""The teacher's output on disk: an append-only JSONL of judged replies and a sidecar log of failed requests.

Usage: ``with JsonlAppender("runs/x/teacher.jsonl", secret=key) as out: out.append(record)``;
``trace = read_trace_file("runs/x/teacher.jsonl")``  (records by id, open failures, torn lines)

Resume policy. The output holds one line per prompt id that got a reply, kept or rejected (a rejected trace is
a finished answer: a rerun does not pay for it again). A request that still fails after its retries goes to the
sidecar ``<name>.failed.jsonl`` and never to the output, so a rerun retries exactly the ids the output lacks
and the output never holds an id twice. A line torn by a kill is ignored and counted; the next append first
ends it with a newline, so it cannot swallow the next record. One writer per file: an advisory lock refuses a
second run instead of letting two interleave.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from lib.jsonl import SourceError, jsonl_records
from lib.teacher.client import redact

try:  # advisory lock against two runs appending to one file; absent on Windows, where the check is skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class OutputLockedError(RuntimeError):
    """Another run holds the output file's lock."""


def failures_path(out_path: str | Path) -> Path:
    """The sidecar log of failed requests beside an output file: `teacher.jsonl` -> `teacher.failed.jsonl`."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".jsonl") + ".failed.jsonl")


def read_jsonl_tolerant(path: str | Path) -> tuple[list[dict], int]:
    """(records with a string id, count of lines that are not one): a kill can tear the last line.

    Lines are read by `lib.jsonl.jsonl_records`, the project's one reader: a line it cannot read (cut JSON, a
    character split by the tear) or an object without a string id counts as torn. An unterminated last line
    that parses is a whole record (only its newline was lost) and counts as one, here and after the next append
    ends it: the reading is the same before and after, so nothing doubles.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    records, bad = [], 0
    for _, record in jsonl_records(path):
        if not isinstance(record, SourceError) and isinstance(record.get("id"), str):
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
    torn last line with a newline, so the first new record starts on a line of its own. `secret` is scrubbed
    from every line written.
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
                    raise OutputLockedError(f"{self.path} is being written by another run; wait for it or stop "
                                            "it") from None
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
