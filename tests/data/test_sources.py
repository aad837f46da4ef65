"""lib.data.sources: every file type and dataset folder yields (row number, record | SourceError), bad rows alone."""
from __future__ import annotations

import gzip
import json
import shutil

import pytest

from lib.data import sources as data_sources
from lib.data.sources import CSV_FIELD_COUNT, decode_csv_cell, iter_records
from lib.jsonl import (INVALID_UTF8, MALFORMED_JSON, NOT_AN_OBJECT, SourceError, TruncatedSource, jsonl_records,
                       parse_json_object)
from lib.paths import PROJECT_ROOT

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "data"


def _records(path, **kwargs) -> list:
    return list(iter_records(str(path), **kwargs))


def _objects(name: str) -> list[dict]:
    return [row for _, row in jsonl_records(FIXTURES / name) if isinstance(row, dict)]


# --- JSON Lines -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gsm8k.jsonl", "gsm8k.jsonl.gz"])
def test_jsonl_bad_lines_are_errors_and_the_rest_is_read(name):
    records = _records(FIXTURES / name)
    assert [n for n, _ in records] == [1, 2, 3, 4, 5, 6, 7]
    errors = {n: r for n, r in records if isinstance(r, SourceError)}
    assert {n: e.reason for n, e in errors.items()} == {3: MALFORMED_JSON, 4: INVALID_UTF8, 6: NOT_AN_OBJECT}
    assert errors[6].detail == "a list"
    bad_byte = (FIXTURES / "gsm8k.jsonl").read_bytes().index(b"\xe9")
    assert errors[4].detail == f"invalid continuation byte at byte {bad_byte}"  # offset in the (unpacked) file
    assert records[-1][1]["answer"].endswith("#### 20")  # lines after the bad ones still read


def test_a_line_cut_off_mid_object_reports_the_column_where_it_stops(tmp_path):
    cut = '{"messages": [{"role": "user", "content": "2+2?"}, '
    path = tmp_path / "cut.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n" + cut + "\n", encoding="utf-8")
    [(_, first), (line, error)] = _records(path)
    assert first == {"a": 1} and line == 2
    assert error == SourceError(MALFORMED_JSON, f"Expecting value at column {len(cut) + 1}")
    assert parse_json_object('{"a": "open') == SourceError(MALFORMED_JSON, "Unterminated string starting at column 7")
    # the one-string form lib.masking.check prints: same column (it used to say column 1 of the next line)
    assert str(list(jsonl_records(path))[1][1]) == f"malformed JSON: Expecting value at column {len(cut) + 1}"


def test_crlf_line_ends_blank_lines_and_invalid_utf8_in_one_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    raw = b'{"a": 1}\r\n\r\n   \n{"b": "caf\xc3\xa9"}\r\n{"c": "\xff"}\n{"d": 4}'
    path.write_bytes(raw)
    records = _records(path)
    assert [n for n, _ in records] == [1, 4, 5, 6]
    assert records[1][1] == {"b": "café"} and records[3][1] == {"d": 4}
    bad_byte = raw.index(b"\xff")
    assert records[2][1] == SourceError(INVALID_UTF8, f"invalid start byte at byte {bad_byte}")


# --- JSON -----------------------------------------------------------------------------------------------------

def test_json_array_and_object_with_one_list():
    limo = _records(FIXTURES / "limo.json")
    assert [n for n, _ in limo] == [1, 2, 3] and limo[0][1]["answer"] == "46"
    wrapped = _records(FIXTURES / "openthoughts_metadata.json")
    document = json.loads((FIXTURES / "openthoughts_metadata.json").read_text(encoding="utf-8"))
    assert [row for _, row in wrapped] == document["data"]


def test_json_file_that_is_json_lines_is_read_as_jsonl(tmp_path):
    path = tmp_path / "really_lines.json"
    path.write_bytes(b'{"a": 1}\n{"b": \n{"c": "\xff"}\n{"d": 4}\n')
    records = _records(path)
    assert [(n, r if isinstance(r, dict) else r.reason) for n, r in records] == [
        (1, {"a": 1}), (2, MALFORMED_JSON), (3, INVALID_UTF8), (4, {"d": 4})]


def test_json_array_items_that_are_not_objects_are_errors(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text('[{"a": 1}, 7, {"b": 2}]', encoding="utf-8")
    assert _records(path) == [(1, {"a": 1}), (2, SourceError(NOT_AN_OBJECT, "a int")), (3, {"b": 2})]


@pytest.mark.parametrize("text, message", [
    ('[{"a": 1},\n {"b": ', "not a JSON document (Expecting value at line 2 column 8)"),
    ('{"train": [{"a": 1}], "test": [{"a": 2}]}', "exactly one list of objects; found lists of objects under"),
    ('{"a": 1, "b": [1, 2]}', "found no list of objects (keys: a, b)"),
    ('"just a string"', "the JSON document is a str, not an array of objects"),
])
def test_json_documents_that_hold_no_records_are_set_up_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _records(path)


# --- Parquet --------------------------------------------------------------------------------------------------

def test_parquet_rows_equal_their_jsonl_source_across_batches(monkeypatch):
    monkeypatch.setattr(data_sources, "PARQUET_BATCH_ROWS", 4)  # 6 rows: two batches
    records = _records(FIXTURES / "openr1_math.parquet")
    assert [n for n, _ in records] == [1, 2, 3, 4, 5, 6]
    assert [row for _, row in records] == _objects("openr1_math.jsonl")
    assert [row for _, row in _records(FIXTURES / "s1k.parquet")] == _objects("s1k.jsonl")


# --- CSV ------------------------------------------------------------------------------------------------------

def test_csv_json_cells_are_decoded_and_rows_numbered_by_their_first_line():
    records = _records(FIXTURES / "sharegpt.csv")
    assert [n for n, _ in records] == [2, 3, 4, 5]
    assert [row for _, row in records] == _objects("sharegpt.jsonl")
    # triplets hold multi-line cells: a record starts on the line after the previous record's last line
    triplets = _records(FIXTURES / "triplets.csv")
    assert [n for n, _ in triplets] == [2, 4, 6, 7]
    assert [row for _, row in triplets] == _objects("triplets.jsonl")


def test_csv_bad_records_are_rejected_alone(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffproblem,thinking\n"  # an Excel BOM before the header
                     "p1,t1\n\n"
                     "p2,t2,extra\n".encode("utf-8") + b"p\xe93,t3\n" + b'"multi\nline",t4\n')
    records = _records(path)
    assert records == [
        (2, {"problem": "p1", "thinking": "t1"}),
        (4, SourceError(CSV_FIELD_COUNT, "expected 2, got 3")),
        (5, SourceError(INVALID_UTF8, "in column 'problem'")),
        (6, {"problem": "multi\nline", "thinking": "t4"})]


def test_csv_cells_longer_than_the_csv_module_default_limit(tmp_path):
    trace = "step. " * 40_000  # 240 kB, over csv's default 128 KiB a field
    path = tmp_path / "long.csv"
    path.write_text(f"problem,thinking\nq,{trace}\n", encoding="utf-8")
    assert _records(path) == [(2, {"problem": "q", "thinking": trace})]


@pytest.mark.parametrize("cell, value", [
    ('[{"from": "user", "value": "hi"}]', [{"from": "user", "value": "hi"}]),
    (' {"a": 1} ', {"a": 1}),
    ("[not json", "[not json"),
    ("42", "42"),
    ("", ""),
    ("plain text", "plain text"),
])
def test_decode_csv_cell(cell, value):
    assert decode_csv_cell(cell) == value


# --- dataset folders through datasets.load_dataset ------------------------------------------------------------

@pytest.fixture
def dataset_folder(tmp_path, monkeypatch):
    """A local dataset folder in the hub layout: data/<split>-00000-of-00001.parquet (train and test)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))  # not the user's cache
    folder = tmp_path / "openr1_like"
    (folder / "data").mkdir(parents=True)
    shutil.copy(FIXTURES / "openr1_math.parquet", folder / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(_objects("openr1_math.jsonl")[:2]),
                   folder / "data" / "test-00000-of-00001.parquet")
    return folder


@pytest.mark.parametrize("streaming", [True, False])
def test_a_dataset_folder_goes_through_load_dataset_with_split_and_streaming(dataset_folder, streaming):
    train = _records(dataset_folder, split="train", streaming=streaming)
    assert [n for n, _ in train] == [1, 2, 3, 4, 5, 6]
    assert [row for _, row in train] == _objects("openr1_math.jsonl")
    test = _records(dataset_folder, split="test", streaming=streaming)
    assert [row["uuid"] for _, row in test] == [row["uuid"] for row in _objects("openr1_math.jsonl")[:2]]


def test_a_dataset_folder_config_picks_its_files(dataset_folder):
    (dataset_folder / "s1k").mkdir()
    shutil.copy(FIXTURES / "s1k.parquet", dataset_folder / "s1k" / "train.parquet")
    (dataset_folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
        "- config_name: s1k\n  data_files:\n  - split: train\n    path: s1k/*.parquet\n---\n", encoding="utf-8")
    s1k = _records(dataset_folder, config="s1k", streaming=True)
    assert [row for _, row in s1k] == _objects("s1k.jsonl")
    assert len(_records(dataset_folder, config="default", streaming=False)) == 6


# --- paths ----------------------------------------------------------------------------------------------------

def test_missing_files_and_unknown_types_fail_at_once_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"dataset file not found: {tmp_path / 'nope.parquet'}"):
        iter_records(tmp_path / "nope.parquet")  # raised by the call, before any row is asked for
    with pytest.raises(FileNotFoundError, match="dataset file not found: .*data/missing.csv"):
        iter_records("data/missing.csv")
    odd = tmp_path / "rows.txt"
    odd.write_text("{}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unsupported file type; supported: \.jsonl, \.jsonl\.gz, \.json, "
                                         r"\.parquet, \.csv"):
        iter_records(odd)


def test_relative_paths_are_relative_to_the_project_root():
    assert _records("tests/fixtures/data/limo.json") == _records(FIXTURES / "limo.json")


def test_gzip_fixture_is_the_jsonl_fixture():
    with gzip.open(FIXTURES / "gsm8k.jsonl.gz", "rb") as packed:
        assert packed.read() == (FIXTURES / "gsm8k.jsonl").read_bytes()


# --- found in review: inputs that used to crash the whole source ------------------------------------------------

def test_deep_nesting_and_huge_integers_are_rejects_of_their_line(tmp_path):
    good = json.dumps({"question": "q", "answer": "a #### 1"})
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(['{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
                               '{"answer": ' + "9" * 5000 + "}", good]) + "\n")
    records = _records(path)
    assert [r.reason if isinstance(r, SourceError) else "ok" for _, r in records] == [MALFORMED_JSON,
                                                                                      MALFORMED_JSON, "ok"]
    assert records[0][1].detail.startswith("RecursionError") and records[1][1].detail.startswith("ValueError")
    document = tmp_path / "big.json"
    document.write_text('[{"answer": ' + "9" * 5000 + "}]")
    with pytest.raises(ValueError, match="not a JSON document"):
        _records(document)


def test_a_byte_order_mark_is_not_content(tmp_path):
    row = {"question": "What is 2+3?", "answer": "5 #### 5"}
    lines = tmp_path / "bom.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")
    document = tmp_path / "bom.json"
    document.write_bytes(b"\xef\xbb\xbf" + json.dumps([row]).encode())
    assert _records(lines) == [(1, row)] and _records(document) == [(1, row)]


def test_a_cut_gzip_stream_raises_after_the_rows_it_could_read(tmp_path):
    rows = "".join(json.dumps({"question": f"q{i}", "answer": f"{i} #### {i}"}) + "\n" for i in range(2000))
    packed = gzip.compress(rows.encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[:len(packed) // 2])
    seen = []
    with pytest.raises(TruncatedSource, match="compressed stream ends early after line"):
        for item in iter_records(path):
            seen.append(item)
    assert seen and seen[0] == (1, {"question": "q0", "answer": "0 #### 0"})
