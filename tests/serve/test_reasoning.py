"""The reasoning/content split of `python -m lib serve`, on real outputs of the distilled 135M model streamed in
random pieces: the deltas add up to the final split, whatever the cut points."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lib.serve.reasoning import ReasoningStream, split_reasoning

OUTPUTS = [json.loads(line) for line in
           (Path(__file__).parents[1] / "evaluate/data/smollm2_135m_outputs.jsonl").read_text().splitlines()]


def test_a_closed_thought_is_reasoning_and_what_follows_is_content():
    assert split_reasoning("<think>\n2+2 is 4.\n</think>\n\nThe answer is 4.") == ("2+2 is 4.", "The answer is 4.")
    assert split_reasoning("  <think>a</think>") == ("a", "")


def test_a_reply_that_never_thinks_is_all_content():
    assert split_reasoning("\nThe answer is 4.\n") == ("", "The answer is 4.")
    assert split_reasoning("It says </think> in the middle") == ("", "It says </think> in the middle")


def test_an_unclosed_thought_has_no_answer():
    assert split_reasoning("<think>\n5 + 5 = 10\n5 + 5") == ("5 + 5 = 10\n5 + 5", "")


def test_a_template_that_opens_the_thought_makes_the_first_token_reasoning():
    assert split_reasoning("7*6 = 42\n</think>\n\n42", opened_by_prompt=True) == ("7*6 = 42", "42")
    assert split_reasoning("<think>\n7*6 = 42\n</think>42", opened_by_prompt=True) == ("7*6 = 42", "42")
    assert split_reasoning("still thinking", opened_by_prompt=True) == ("still thinking", "")


def test_while_streaming_a_tag_cut_between_pieces_is_held_back():
    assert split_reasoning("<thi", final=False) == ("", "")
    assert split_reasoning("<think>\nso 4\n</th", final=False) == ("so 4", "")
    assert split_reasoning("<think>\nso 4\n</think>\n\nThe ", final=False) == ("so 4", "The")
    assert split_reasoning("<thx", final=False) == ("", "<thx")


@pytest.mark.parametrize("opened_by_prompt", [False, True])
@pytest.mark.parametrize("row", OUTPUTS, ids=[f"{r['id']}-{r['label']}" for r in OUTPUTS])
def test_streamed_deltas_of_a_real_reply_add_up_to_its_split(row, opened_by_prompt):
    text = row["output"]
    if opened_by_prompt:  # as DeepSeek-R1-Distill's template leaves it: the prompt holds "<think>\n"
        text = text.removeprefix("<think>\n")
    expected = split_reasoning(text, opened_by_prompt)
    assert expected[0], "every one of these replies thinks"
    assert bool(expected[1]) == ("</think>" in row["output"]), "a closed thought answers, an unclosed one does not"
    rng = random.Random(row["id"])
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 60))))
        stream = ReasoningStream(opened_by_prompt)
        deltas = [stream.feed(text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)])]
        deltas.append(stream.feed("", final=True))
        assert ("".join(d[0] for d in deltas), "".join(d[1] for d in deltas)) == expected
    # one character at a time too: every tag is cut at every place
    stream = ReasoningStream(opened_by_prompt)
    deltas = [stream.feed(char) for char in text] + [stream.feed("", final=True)]
    assert ("".join(d[0] for d in deltas), "".join(d[1] for d in deltas)) == expected
