"""The non-maths check's rules (lib.evaluate.checks) and the shipped set: every prompt well formed, every rule able
to pass and to fail."""
import pytest

from lib.evaluate.benchmarks import BenchmarkError, load_benchmark, read_prompts_file
from lib.evaluate.checks import check_error, passes
from lib.evaluate.judging import judge_sample


@pytest.mark.parametrize("checks, right, wrong", [
    ([["contains", "Paris"]], "The capital is Paris.", "It is Lyon; comparisons with parish aside"),
    ([["contains", "7|seven"]], "There are seven days.", "There are 17 days."),
    ([["contains_case", "HELLO"]], "HELLO", "Hello"),
    ([["exact", "yes"]], ' "Yes." ', "yes, of course"),
    ([["exact", "3"]], "**3**.", "33"),
    ([["contains", "0|zero"]], "Water freezes at 0 degrees.", "It freezes at 32.0 F."),
    ([["starts_with", "Sure"]], "Sure! 2 plus 2 is 4.", "Of course. Sure."),
    ([["max_words", 2], ["contains", "green"]], "Green.", "Grass is green."),
    ([["items", 3]], "red, blue, green", "red, blue and green"),
])
def test_each_rule_passes_the_right_answer_and_fails_the_wrong_one(checks, right, wrong):
    assert check_error(checks) == ""
    assert passes(checks, right) and not passes(checks, wrong)


def test_a_thinking_reply_is_judged_on_its_answer_and_an_unclosed_thought_fails():
    checks = [["contains", "Paris"]]
    assert judge_sample("<think>\nFrance's capital is Paris.\n</think>\n\nParis.", None, checks=checks)["correct"]
    assert not judge_sample("<think>\nFrance's capital is Paris.\n</think>\n\nLyon.", None, checks=checks)["correct"]
    assert not judge_sample("<think>\nParis, Paris, Paris", None, checks=checks)["correct"]


def test_the_shipped_general_set_is_well_formed_and_asked_as_a_benchmark():
    problems = load_benchmark("general")
    assert len(problems) == 36 and all(p["checks"] and p["answer"] is None for p in problems)
    assert len({p["id"] for p in problems}) == 36 and len(load_benchmark("general", n=12, seed=3)) == 12


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "x", "checks": [["shout", 1]]}', r"\"checks\": \['shout', 1\] is not \[kind, argument\]"),
    ('{"prompt": "x", "checks": [[["contains"], "a"]]}', "is not \\[kind, argument\\]"),
    ('{"prompt": "x", "checks": [["contains", "Paris|"]]}', "each of its \\|-options\\) non-empty"),
    ('{"prompt": "x", "checks": [["items", 0]]}', "a count must be at least 1"),
    ('{"prompt": "x", "answer": "4", "checks": [["contains", "4"]]}', 'give "answer" .* or "checks" .*not both'),
])
def test_a_malformed_checks_line_names_its_file_and_line(tmp_path, line, message):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"prompt": "hi", "checks": [["contains", "hello"]]}\n' + line + "\n")
    with pytest.raises(BenchmarkError, match="mine.jsonl:2: .*" + message):
        read_prompts_file(path)
