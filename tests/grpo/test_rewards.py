"""The verifiable rewards: pure functions first, then on real model outputs (tests/fixtures/grpo/completions.jsonl:
30 samples of SmolLM2-135M, base and SFT, written by llama.cpp in 05 of the arithmetic recipe's first run and of the
demo: right, wrong, unclosed, cut at the limit, looping, without a thought), judged against an oracle that shares
no code with them (regular expressions: one thought first, closed, both parts non-empty; the number after the last
"answer is" after it) and against 05's own judgement of the same sample (GRPO must optimise what 05 measures)."""
import json
import re
from pathlib import Path

import pytest

from lib.grpo.rewards import REWARD_NAMES, completion_text, correctness, format_reward, overlong, reward_functions

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "grpo" / "completions.jsonl"


@pytest.mark.parametrize("length, cut, expected", [
    (10, False, 0.0), (48, False, 0.0),  # up to limit - buffer: no penalty
    (56, False, -0.5), (63, False, -15 / 16),  # linear inside the buffer
    (64, False, -1.0), (64, True, -1.0), (30, True, -1.0),  # at the limit, or cut: -1
])
def test_overlong_is_dapos_soft_punishment(length, cut, expected):
    assert overlong(length, limit=64, buffer=16, cut=cut) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("<think>\n2 + 3 = 5.\n</think>\n\nThe answer is 5.", 1.0),
    ("  <think>a</think>b", 1.0),
    ("<think>\n2 + 3 = 5.", 0.0),  # never closed (cut at the limit)
    ("The answer is 5.", 0.0),  # no thought
    ("<think>a</think>b<think>c</think>d", 0.0),  # two thoughts
    ("<think>a</think>", 0.0),  # no answer
    ("<think> </think>The answer is 5.", 0.0),  # empty thought
    ("Sure. <think>a</think>b", 0.0),  # thought not first
])
def test_format_wants_one_closed_thought_first_then_an_answer(text, expected):
    assert format_reward(text) == expected


def test_a_template_that_opens_the_thought_is_read_so():
    assert format_reward("2 + 3 = 5.\n</think>\nThe answer is 5.", prompt_opens_think=True) == 1.0
    assert correctness("2 + 3 = 5.\n</think>\nThe answer is 5.", "5", prompt_opens_think=True) == 1.0
    assert format_reward("2 + 3 = 5.\n</think>\nThe answer is 5.") == 0.0


def test_correctness_reads_only_the_answer_after_the_thought():
    assert correctness("<think>5</think>The answer is 5.", "5") == 1.0
    assert correctness("<think>The answer is 5.</think>The answer is 6.", "5") == 0.0
    assert correctness("<think>The answer is 5.", "5") == 0.0  # unclosed: no claim
    assert correctness("<think>x</think>The answer is \\boxed{\\frac{1}{2}}", "0.5") == 1.0  # math-verify


def test_trl_signature_names_and_cut_detection():
    functions = reward_functions(limit=8, buffer=4, end_token_ids={2})
    assert [f.__name__ for f in functions] == list(REWARD_NAMES)
    completions = [[{"role": "assistant", "content": "<think>1 + 1 = 2.</think>The answer is 2."}],
                   [{"role": "assistant", "content": "<think>1 + 1 = 2. 1 + 1"}]]
    ids = [[5, 6, 2], [5, 6, 7, 8, 9]]  # the first ended on the end-of-turn token, the second was cut
    scores = [f(prompts=[None, None], completions=completions, completion_ids=ids, answer=["2", "2"]) for f in
              functions]
    assert scores == [[1.0, 0.0], [1.0, 0.0], [0.0, -1.0]]
    assert completion_text("plain") == "plain"


def oracle(text: str, reference: str) -> tuple[float | None, float]:
    """(correct, well formed) by regular expressions alone; correct is None for a reply that never opened a thought
    (all of it is the answer then: 05's math-verify reading, checked separately)."""
    block = re.fullmatch(r"\s*<think>(.*?)</think>(.*)", text, re.DOTALL)
    shaped = bool(block) and text.count("<think>") == 1 and text.count("</think>") == 1 \
        and block.group(1).strip() != "" and block.group(2).strip() != ""
    if "<think>" not in text:
        return None, float(shaped)
    after = text.split("</think>", 1)[1] if "</think>" in text else ""
    stated = re.findall(r"answer is\s*\$?(-?[\d,]+(?:\.\d+)?)", after)
    right = bool(stated) and float(stated[-1].replace(",", "")) == float(reference)
    return float(right), float(shaped)


def real_samples() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_the_fixture_holds_every_kind_of_real_output():
    samples = real_samples()
    judged = [(oracle(s["text"], s["answer"]), s["finish_reason"]) for s in samples]
    assert ((1.0, 1.0), "stop") in judged and ((0.0, 1.0), "stop") in judged  # right, wrong
    assert any(fmt == 0.0 and right == 0.0 for (right, fmt), _ in judged)  # opened, never closed
    assert any(right is None for (right, _), _ in judged)  # never opened (the base model)
    assert any(reason == "length" for _, reason in judged)  # cut at the token limit


def test_rewards_on_real_outputs_agree_with_the_oracle_and_with_05():
    for sample in real_samples():
        right, shaped = oracle(sample["text"], sample["answer"])
        reward = correctness(sample["text"], sample["answer"])
        assert reward == float(sample["correct_in_05"]), sample
        if right is not None:
            assert reward == right, sample
        assert format_reward(sample["text"]) == shaped, sample


def test_rewards_decode_the_ids_with_special_tokens_kept_and_the_end_of_turn_left_out():
    # TRL's `completions` are decoded with skip_special_tokens=True: a tokenizer whose <think> is special loses it
    vocabulary = {1: "<think>", 2: "</think>", 3: "1 + 1 = 2.", 4: "The answer is 2.", 9: "<|im_end|>"}
    decode = lambda ids: "".join(vocabulary[i] for i in ids)  # noqa: E731
    functions = reward_functions(limit=16, buffer=4, end_token_ids={9}, decode=decode)
    stripped = [[{"role": "assistant", "content": "1 + 1 = 2.The answer is 2."}]]  # what TRL would hand over
    scores = [f(prompts=[None], completions=stripped, completion_ids=[[1, 3, 2, 4, 9]], answer=["2"])
              for f in functions]
    assert scores == [[1.0], [1.0], [0.0]]
