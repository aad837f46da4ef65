"""lib.data.pipeline: the train_rows limit, rejects passing through, duplicate ids (no tokenizer involved)."""
from lib.data.pipeline import DataPolicy, run_pipeline
from lib.data.rows import read_reasoning_rows
from lib.recipe import load_recipe
from lib.rejects import Reject


def gsm8k_rows(n):
    rows, _ = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k", limit=n)
    return rows


def test_limit_counts_kept_examples_and_rejects_pass_through():
    stream = [(1, Reject(1, "bad", "malformed JSON", "at column 3"))] + [(i + 2, [r]) for i, r in
                                                                          enumerate(gsm8k_rows(40))]
    read = []

    def source():
        for item in stream:
            read.append(item[0])
            yield item

    kept_lines = []
    result = run_pipeline(source(), DataPolicy.from_recipe(load_recipe("smollm2_135m")), limit=5,
                          on_kept=lambda line, row: kept_lines.append(line))
    assert result.report.kept == len(result.kept) == 5 and result.report.stopped_at_limit
    assert read == [1, 2, 3, 4, 5, 6] and kept_lines == [2, 3, 4, 5, 6]  # no row is asked for past the limit
    assert result.report.rejected["malformed JSON"] == 1
    assert result.report.samples["malformed JSON"] == [{"line": 1, "id": "bad", "detail": "at column 3"}]


def test_a_second_example_under_the_same_id_is_rejected():
    first, second = gsm8k_rows(2)
    stream = [(1, [first]), (2, [{**second, "id": first["id"]}])]
    result = run_pipeline(iter(stream), DataPolicy.from_recipe(load_recipe("smollm2_135m")))
    assert result.report.kept == 1
    assert result.report.samples["duplicate id"] == [{"line": 2, "id": first["id"], "detail": "first used on line 1"}]


def test_examples_past_the_limit_within_one_source_row_are_counted():
    a, b, c = gsm8k_rows(3)
    result = run_pipeline(iter([(1, [a, b]), (2, [c])]), DataPolicy(verify_answers=False), limit=1)
    assert [r["id"] for r in result.kept] == [a["id"]] and result.report.unused_beyond_limit == 1
    assert result.report.rows_read == 1
