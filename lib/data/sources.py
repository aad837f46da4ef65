"""Reading source records one at a time: local JSONL(.gz), JSON, Parquet and CSV files, dataset folders and hub names.

Usage: ``for row_no, record in iter_records("data/gsm8k/train.jsonl.gz"): ...``

Each item is ``(row number, dict)``, or ``(row number, SourceError)`` for a row that cannot be read, so the caller
rejects that row with a reason and carries on. Row numbers: the line for JSONL, the line where the record starts
for CSV, the 1-based record index for JSON, Parquet and `datasets`. Which reader runs:

- `*.jsonl`, `*.jsonl.gz`: line by line, as bytes decoded per line, so a bad line (JSON or UTF-8) is rejected alone.
- `*.json`: a top-level array of objects, or an object with exactly one list of objects (`{"data": [...]}`),
  parsed whole; a `.json` file that is really JSON Lines is read as JSONL.
- `*.parquet`: pyarrow, in record batches of `PARQUET_BATCH_ROWS`, so memory stays bounded.
- `*.csv`: the csv module, header row first; a cell holding a JSON array or object (e.g. a `conversations`
  column) is decoded, every other cell stays a string (`decode_csv_cell`).
- a folder, or a name that is not a local path: `datasets.load_dataset(name, config or None, split=split,
  streaming=streaming)`.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from lib.jsonl import INVALID_UTF8, NOT_AN_OBJECT, SourceError, decode_line, jsonl_records, parse_json_object
from lib.paths import project_path

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv")
PARQUET_BATCH_ROWS = 256  # long reasoning traces run to ~100 KB a row: 256 rows stay in the tens of MB
_CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default (128 KiB a cell) is shorter than many R1 traces

# Reasons a row cannot be read besides lib.jsonl's (stable categories: the detail says where and what).
CSV_FIELD_COUNT = "wrong number of CSV fields"
MALFORMED_CSV = "malformed CSV"


def iter_records(path_or_name: str | Path, split: str = "train", config: str = "",
                 streaming: bool = True) -> Iterator[tuple[int, dict | SourceError]]:
    """(row number, record or SourceError) for every row of a local file, a local dataset folder or a hub dataset.

    Relative paths are relative to the project root. A path that does not exist raises FileNotFoundError, a file
    of an unsupported type ValueError, both at once (before the first row is asked for). `split`, `config` and
    `streaming` only matter for folders and hub names, which go through `datasets.load_dataset`.
    """
    local = project_path(path_or_name)
    if local.is_dir():
        return _dataset_records(str(local), split, config, streaming)
    if local.is_file():
        return _file_reader(local)(local)
    if _looks_like_a_path(str(path_or_name)):
        raise FileNotFoundError(f"dataset file not found: {local}")
    return _dataset_records(str(path_or_name), split, config, streaming)


def _looks_like_a_path(name: str) -> bool:
    """A name the user meant as a local file (hub names are `owner/name`, without a file suffix)."""
    return name.startswith((".", "/", "~")) or name.lower().endswith((*SUPPORTED_SUFFIXES, ".gz"))


def _file_reader(path: Path):
    name = path.name.lower()
    for suffix, reader in (((".jsonl", ".jsonl.gz"), jsonl_records), ((".json",), json_records),
                           ((".parquet",), parquet_records), ((".csv",), csv_records)):
        if name.endswith(suffix):
            return reader
    raise ValueError(f"{path}: unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}, "
                     "or a dataset folder / hub dataset name for datasets.load_dataset")


# --- JSON -----------------------------------------------------------------------------------------------------

def json_records(path: Path) -> Iterator[tuple[int, dict | SourceError]]:
    """(1-based index, object or SourceError) for each record of a .json file (see the module table).

    A whole-document file that is not valid JSON cannot be split into rows, so it raises ValueError naming the
    position; a file whose first lines are JSON objects on their own is JSON Lines and is read line by line.
    """
    raw = path.read_bytes()
    try:
        document = json.loads(raw.decode("utf-8-sig"))  # -sig: a leading byte-order mark is not content
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, an int over 4,300 digits, deep nesting
        if _is_json_lines(raw):
            yield from jsonl_records(path)
            return
        raise ValueError(f"{path}: not a JSON document ({_decode_error_position(err)}); "
                         "a .json file holds an array of objects or an object with one list of objects") from err
    for index, item in enumerate(_json_rows(path, document), start=1):
        yield index, item if isinstance(item, dict) else SourceError(NOT_AN_OBJECT, f"a {type(item).__name__}")


def _is_json_lines(raw: bytes) -> bool:
    """Whether one of the first two non-blank lines is a JSON object by itself (a document's opening line is not)."""
    for line in [line for line in raw.splitlines() if line.strip()][:2]:
        text = decode_line(line, 0)
        if isinstance(text, str) and isinstance(parse_json_object(text), dict):
            return True
    return False


def _decode_error_position(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at line {err.lineno} column {err.colno}"
    if isinstance(err, UnicodeDecodeError):
        return f"{INVALID_UTF8}: {err.reason} at byte {err.start}"
    return f"{type(err).__name__}: {str(err)[:80]}"


def _json_rows(path: Path, document) -> list:
    """The list of records in a parsed .json document: the array itself, or the one list of objects inside it."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        lists = [key for key, value in document.items()
                 if isinstance(value, list) and any(isinstance(item, dict) for item in value)]
        if len(lists) == 1:
            return document[lists[0]]
        found = f"lists of objects under {lists}" if lists else "no list of objects"
        raise ValueError(f"{path}: a top-level JSON object must hold exactly one list of objects; found {found} "
                         f"(keys: {', '.join(document) or 'none'}). One record alone: write it as [{{...}}] or .jsonl")
    raise ValueError(f"{path}: the JSON document is a {type(document).__name__}, not an array of objects")


# --- Parquet --------------------------------------------------------------------------------------------------

def parquet_records(path: Path) -> Iterator[tuple[int, dict | SourceError]]:
    """(1-based row index, row) for each row of a Parquet file, read one record batch at a time."""
    import pyarrow.parquet as pq  # only Parquet sources need it

    row_no = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


# --- CSV ------------------------------------------------------------------------------------------------------

def csv_records(path: Path) -> Iterator[tuple[int, dict | SourceError]]:
    """(line where the record starts, row) for each record of a CSV file with a header row.

    Cells holding a JSON array or object are decoded (`decode_csv_cell`). Bytes that are not UTF-8 reject their
    record alone (read with surrogateescape, so the rest of the file still reads).
    """
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        header = None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield start, SourceError(MALFORMED_CSV, str(err))
                continue
            if not cells:  # a blank line
                continue
            if header is None:
                header = cells
                continue
            yield start, _csv_row(header, cells)


def _csv_row(header: list[str], cells: list[str]) -> dict | SourceError:
    if len(cells) != len(header):
        return SourceError(CSV_FIELD_COUNT, f"expected {len(header)}, got {len(cells)}")
    for name, cell in zip(header, cells):
        if _has_undecodable_bytes(cell):
            return SourceError(INVALID_UTF8, f"in column {name!r}")
    return {name: decode_csv_cell(cell) for name, cell in zip(header, cells)}


def _has_undecodable_bytes(text: str) -> bool:
    """Whether surrogateescape smuggled in bytes that were not UTF-8 (they become lone surrogates U+DC80..U+DCFF)."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def decode_csv_cell(cell: str):
    """A cell that is exactly a JSON array or object becomes that value; any other cell stays the string it is.

    CSV has no nested values, so exports write list columns (chat `conversations`, OpenR1's `generations`) as
    JSON text. A free-text cell that happens to be a valid JSON array is decoded too: name such a column in a
    field mapping only if that is what it holds.
    """
    stripped = cell.strip()
    if not stripped.startswith(("[", "{")):
        return cell
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):  # not JSON (JSONDecodeError is a ValueError), too deep, too long an int
        return cell
    return value if isinstance(value, (list, dict)) else cell


# --- datasets -------------------------------------------------------------------------------------------------

def _dataset_records(name: str, split: str, config: str, streaming: bool) -> Iterator[tuple[int, dict]]:
    """(1-based index, row) from `datasets.load_dataset`; streaming keeps large hub sets out of memory."""
    import datasets  # only folder and hub sources need it; importing it costs a second or more

    rows = datasets.load_dataset(name, config or None, split=split, streaming=streaming)
    for row_no, row in enumerate(rows, start=1):
        yield row_no, dict(row)
