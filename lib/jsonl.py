"""JSON Lines, read one way everywhere: a bad line is reported alone with its line number, never a crash.

Usage: ``for line_no, record in jsonl_records(path): ...``  (record: a dict, or a `SourceError` saying why not)
``rows = read_jsonl(run_dir / "01_data" / "train.jsonl")``  (the project's own files: a bad line raises, naming it)
``write_jsonl(path, rows)``  (atomic: a reader never sees half a file)

Lines are read as bytes and decoded one by one: decoding the whole file would stop at the first bad byte, decoding
per line loses one line. The data stage turns each `SourceError` into a reject of that line; `mask check` stops at
it; the teacher's resumable output counts it as a line torn by a kill.
"""
from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lib.paths import atomic_path

# Reasons a line cannot be read (stable categories: the detail says where and what).
MALFORMED_JSON = "malformed JSON"
NOT_AN_OBJECT = "not a JSON object"
INVALID_UTF8 = "invalid UTF-8"

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SourceError:
    """Why one row of a source could not be read: a stable `reason` to count, and a `detail` to look it up."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class TruncatedSource(OSError):
    """A compressed file that ends mid-stream (a cut download): raised after its readable rows were yielded."""


def jsonl_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset of the line, raw bytes without the line end) for each non-blank line.

    Offsets count from the start of the file (of the decompressed stream for .gz).
    """
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    offset, line_no = 0, 0
    with opener(path, "rb") as handle:
        try:
            for line_no, raw in enumerate(handle, start=1):
                start, offset = offset, offset + len(raw)
                if line_no == 1 and raw.startswith(_BOM):  # editors on Windows write one; json.loads refuses it
                    raw, start = raw[len(_BOM):], start + len(_BOM)
                if raw.strip():
                    yield line_no, start, raw.rstrip(b"\r\n")
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # rows read so far stay; the file is named as cut
            raise TruncatedSource(f"{path}: compressed stream ends early after line {line_no} ({err}); the rows "
                                  "before it were read. Re-download or re-compress the file") from err


def decode_line(raw: bytes, offset: int) -> str | SourceError:
    """The line as text, or an INVALID_UTF8 error naming the bad byte's offset in the file."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return SourceError(INVALID_UTF8, f"{err.reason} at byte {offset + err.start}")


def parse_json_object(text: str) -> dict | SourceError:
    """One JSON Lines line -> its object, or MALFORMED_JSON / NOT_AN_OBJECT with the column or the type found.

    The line must come without its line end: a line cut off mid-object would otherwise be reported at column 1
    of the next line instead of where it stops.
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:  # msg "Unterminated string starting at" already ends in "at"
        return SourceError(MALFORMED_JSON, f"{err.msg.removesuffix(' at')} at column {err.colno}")
    except (RecursionError, ValueError) as err:  # nesting deeper than Python's stack; an int over 4,300 digits
        return SourceError(MALFORMED_JSON, f"{type(err).__name__}: {str(err)[:80]}")
    return obj if isinstance(obj, dict) else SourceError(NOT_AN_OBJECT, f"a {type(obj).__name__}")


def jsonl_records(path: Path) -> Iterator[tuple[int, dict | SourceError]]:
    """(line number, object or SourceError) for each non-blank line of a .jsonl or .jsonl.gz file."""
    for line_no, offset, raw in jsonl_lines(path):
        text = decode_line(raw, offset)
        yield line_no, text if isinstance(text, SourceError) else parse_json_object(text)


def read_jsonl(path: Path) -> list[dict]:
    """Every object of a JSONL file this project wrote; a bad line is a bug or a damaged file: raise, naming it."""
    rows = []
    for line_no, record in jsonl_records(Path(path)):
        if isinstance(record, SourceError):
            raise ValueError(f"{path}:{line_no}: {record}; this file is written by the pipeline: run the stage "
                             "that writes it again")
        rows.append(record)
    return rows


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically (`lib.paths.atomic_path`); return how many."""
    count = 0
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
