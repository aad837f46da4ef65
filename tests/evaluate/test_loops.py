"""The loop detector on real outputs of the 135M model and on the shipped reference solutions.

tests/evaluate/data/smollm2_135m_outputs.jsonl holds real llama.cpp generations of the demo's and the KD recipe's
distilled SmolLM2-135M (05_eval_edge outputs, GSM8K test prompts), labelled by reading them: "loop" where the
model repeats the same step(s) without progress until max tokens, "no loop" for 20 answered outputs and one
that ran long without repeating itself.
"""
import gzip
import json
from pathlib import Path

import pytest

from lib.evaluate.loops import find_loop, loop_words, repeated_lines, repeated_words

OUTPUTS = [json.loads(line) for line in (Path(__file__).parent / "data" / "smollm2_135m_outputs.jsonl").open()]


def test_words_read_digits_as_one_symbol_and_punctuation_apart():
    assert loop_words("Naruto can lift 3360*12= 4,004 inches.") == [
        "naruto", "can", "lift", "0", "*", "0", "=", "0", "inches", "."]


def test_a_counting_loop_is_found_with_its_block():
    text = "<think>\n" + "".join(f"Naruto can lift {n}*12= {n * 12} inches\n" for n in range(1, 14))
    found = repeated_words(text)
    assert found["kind"] == "words" and found["period_words"] == 9 and found["repeats"] >= 12
    assert found["block"] == "naruto can lift 0 * 0 = 0 inches"


def test_three_similar_steps_are_not_a_loop():
    text = "".join(f"In year {y} he pays {y * 10}+10=${y * 10 + 10}.\n" for y in range(2, 6)) + "The answer is 60."
    assert find_loop(text) is None


def test_alternating_sentences_are_a_loop_of_lines():
    lines = [f"There are {n % 3 + 1} bedroom{'s' * (n % 2)} * 8 windows = {8 * (n % 3 + 1)} windows" for n in range(9)]
    found = repeated_lines("\n".join(lines))
    assert found["kind"] == "lines" and found["distinct_lines"] <= 4


def test_real_loops_of_the_135m_model_are_found_and_its_answers_are_not():
    loops = [row for row in OUTPUTS if row["label"] == "loop"]
    clean = [row for row in OUTPUTS if row["label"] == "no loop"]
    assert len(loops) == 17 and len(clean) == 21
    flagged = [row["id"] for row in clean if find_loop(row["output"])]
    assert flagged == []
    found = sum(find_loop(row["output"]) is not None for row in loops)
    # 13 of 17: the four missed drift between several sentences whose wording changes (see lib.evaluate.loops)
    assert found >= 13, f"{found} of {len(loops)} real loops found"


@pytest.mark.parametrize("path, field, expected", [
    ("data/gsm8k/train.jsonl.gz", "answer", 0),
    ("data/gsm8k/test.jsonl.gz", "answer", 0),
    ("data/eval/math500.jsonl.gz", "solution", 1),  # a table of residues mod 7, one line per row
    ("data/eval/aime24.jsonl.gz", "solution", 1),  # "Case 1: n ≡ 0 (mod 5)" … one line per case
])
def test_reference_solutions_almost_never_loop(path, field, expected):
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    assert sum(find_loop(row.get(field) or "") is not None for row in rows) == expected
