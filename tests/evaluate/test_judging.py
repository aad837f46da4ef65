"""One reply → thought opened/closed, the answer, right or wrong (math-verify), loop."""
import pytest

from lib.evaluate.judging import judge_sample


@pytest.mark.parametrize("reply, reference, opens, expected", [
    ("<think>48/2=24</think>\n\nThe answer is 24.", "24", False, (True, True, "24", True)),
    ("<think>48/2=24 and then", "24", False, (True, False, None, False)),  # never closed: no answer
    ("The answer is 1,200.", "1200", False, (False, False, "1200", True)),  # a base model: all answer
    ("x = 1/2</think>\n\nSo $\\boxed{\\frac12}$.", "0.5", True, (True, True, "1/2", True)),  # template opened it
    ("<think>r = 3</think> $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)",
     False, (True, True, "(3, pi/2)", True)),
    ("<think>so 13</think> The answer is 13.", "(3, \\frac{\\pi}{2})", False, (True, True, "13", False)),
    ("<think>hm</think> The answer is 5.", None, False, (True, True, "5", None)),  # nothing to judge against
])
def test_a_reply_is_judged_on_its_answer(reply, reference, opens, expected):
    judged = judge_sample(reply, reference, opens)
    assert (judged["opened_think"], judged["closed_think"], judged["answer_key"], judged["correct"]) == expected
    assert judged["loop"] is None


def test_a_number_inside_an_unclosed_thought_is_not_an_answer():
    assert not judge_sample("<think>the answer is 24", "24")["correct"]
