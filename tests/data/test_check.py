"""`python -m lib data check PATH [--recipe R] [--format F]`: one JSON object, exit 0 when the file could be read."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lib.masking.check import data_check_report as data_check
from lib.paths import PROJECT_ROOT

FIXTURES = "tests/fixtures/data"


def run_cli(*args):
    done = subprocess.run([sys.executable, "-m", "lib", "data", "check", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return done.returncode, done.stdout, done.stderr


def test_cli_prints_one_json_object_with_rejects_per_reason_and_lengths_for_the_recipe(tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    code, out, err = run_cli(f"{FIXTURES}/gsm8k.jsonl", "--recipe", "smollm2_135m", "--rejects", str(rejects))
    assert code == 0, err
    [line] = out.strip().splitlines()
    report = json.loads(line)
    assert report["schema"] == "gsm8k" and report["rows_read"] == 7
    assert report["kept"] + report["rejected"] == report["rows_read"]
    assert report["rejected_per_reason"]["malformed JSON"] == 1
    assert report["reject_samples"]["invalid UTF-8"][0]["line"] >= 1
    assert report["lengths"]["examples"] == report["kept"] and report["lengths"]["max_length"] == 512
    assert report["would_truncate"] == 0 and report["tokenizer"].startswith("fixtures/tokenizers/smollm2")
    written = [json.loads(row) for row in rejects.read_text().splitlines()]
    assert len(written) == report["rejected"] and {"line", "id", "reason", "detail"} <= set(written[0])


def test_cli_counts_what_a_short_max_length_would_cut():
    report = data_check("data/samples/triplets_gsm8k_50.jsonl", "llama32_1b_kd")
    assert report["schema"] == "triplets" and report["kept"] == 50
    assert report["would_truncate"] == report["lengths"]["over_max_length"] > 25  # max_length 128
    assert report["overlong_policy"] == "drop"


def test_without_a_recipe_there_are_no_lengths_but_everything_else():
    report = data_check(f"{FIXTURES}/openr1_math.parquet")
    assert report["schema"] == "openr1_math" and report["lengths"] is None and "--recipe" in report["note"]
    assert report["examples"] >= report["kept"] > 0


def test_format_overrides_detection_and_a_wrong_one_rejects_every_row():
    report = data_check(f"{FIXTURES}/triplets.jsonl", dataset_format="gsm8k")
    assert report["kept"] == 0 and report["rejected"] == report["rows_read"]


def test_duplicates_and_contamination_are_reported(tmp_path):
    from lib.jsonl import read_jsonl

    question = read_jsonl(PROJECT_ROOT / "data/gsm8k/test.jsonl.gz")[5]["question"]
    row = {"problem": "A farmer has 12 cows and buys 5 more. How many cows?", "thinking": "12 + 5 = 17.",
           "solution": "The answer is 17.", "answer": "17"}
    leaked = {"problem": question, "thinking": "Some reasoning.", "solution": "The answer is 3.", "answer": "3"}
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (row, row, leaked)) + "\n")
    report = data_check(str(path), "smollm2_135m")
    assert report["duplicates"]["exact duplicate"] == 1
    assert report["contaminated"] == {"gsm8k_test": 1}
    assert report["reject_samples"]["contaminated"][0]["detail"].startswith("gsm8k_test:6")


@pytest.mark.parametrize("args, message", [
    (["nope.jsonl"], "dataset file not found"),
    ([f"{FIXTURES}/make_fixtures.py"], "unsupported file type"),
    ([f"{FIXTURES}/gsm8k.jsonl", "--format", "sharegtp"], "unknown dataset_format 'sharegtp'"),
    ([f"{FIXTURES}/gsm8k.jsonl", "--recipe", "nope"], "unknown recipe 'nope'"),
])
def test_unreadable_input_exits_2_with_one_line(args, message):
    code, out, err = run_cli(*args)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
