"""The programmatic task (data/arithmetic/): shipped files are what the generator writes, every step is right, and
the held-out split shares no question with training."""
import gzip
import json
import re

from lib.data.arithmetic_task import TEST, TRAIN, gzip_jsonl, shipped_splits, step_text
from lib.data.rows import read_reasoning_rows
from lib.paths import DATA_DIR


def test_shipped_files_are_the_generators_output_byte_for_byte():
    for name, rows in shipped_splits().items():
        assert (DATA_DIR / "arithmetic" / f"{name}.jsonl.gz").read_bytes() == gzip_jsonl(rows), name


def test_every_step_and_answer_is_right():
    for name, rows in shipped_splits().items():
        for row in rows:
            expression = row["question"].removeprefix("What is ").removesuffix("?")
            *steps, final = row["answer"].split("\n")
            assert len(steps) == 2, row  # three numbers, two steps (OPERANDS)
            assert final == f"#### {eval(expression)}"  # noqa: S307 - digits, spaces, + and - only
            assert re.fullmatch(r"[\d +-]+", expression)
            for step in steps:
                a, sign, b, result = re.fullmatch(r"(\d+) ([+-]) (\d+) = (\d+)\.", step).groups()
                assert int(result) == (int(a) + int(b) if sign == "+" else int(a) - int(b)) >= 0


def test_splits_are_disjoint_and_the_test_range_is_wider():
    splits = shipped_splits()
    assert len(splits["train"]) == TRAIN["count"] and len(splits["test"]) == TEST["count"]
    assert not {r["question"] for r in splits["train"]} & {r["question"] for r in splits["test"]}
    operands = {name: [int(n) for r in rows for n in re.findall(r"\d+", r["question"])] for name, rows in splits.items()}
    assert max(operands["train"]) <= TRAIN["high"] < max(operands["test"]) <= TEST["high"]


def test_a_step_states_its_result():
    assert step_text(63, "-", 34) == ("63 - 34 = 29.", 29)


def test_the_data_stage_reads_them_as_gsm8k_with_the_steps_as_the_think():
    rows, rejects = read_reasoning_rows(DATA_DIR / "arithmetic" / "test.jsonl.gz", "gsm8k", limit=3)
    assert rejects == [] and len(rows) == 3
    reply = rows[0]["messages"][-1]
    assert reply["think"].endswith(f"= {rows[0]['answer']}.") and reply["answer"] == f"The answer is {rows[0]['answer']}."
    with gzip.open(DATA_DIR / "arithmetic" / "test.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["question"] == rows[0]["messages"][0]["content"]
