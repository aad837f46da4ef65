"""The shipped benchmarks, subsets by size and seed, and prompts files with the line a problem is on."""
import json

import pytest

from lib.eval_sets import BOXED_INSTRUCTION
from lib.evaluate.benchmarks import BenchmarkError, load_benchmark


@pytest.mark.parametrize("name, size, first_answer", [("gsm8k", 1319, "18"), ("math500", 500, None),
                                                      ("aime24", 30, "204")])
def test_every_shipped_benchmark_loads_whole_with_answers(name, size, first_answer):
    problems = load_benchmark(name)
    assert len(problems) == size == len({p["id"] for p in problems})
    assert all(p["answer"] and p["messages"][-1]["role"] == "user" for p in problems)
    if first_answer:
        assert problems[0]["answer"] == first_answer
    assert problems[0]["messages"][-1]["content"].endswith(BOXED_INSTRUCTION) == (name != "gsm8k")


def test_a_subset_is_drawn_by_seed_and_kept_in_file_order():
    whole = [p["id"] for p in load_benchmark("gsm8k")]
    first, again, other = (load_benchmark("gsm8k", n=20, seed=s) for s in (1, 1, 2))
    assert first == again and first != other
    ids = [p["id"] for p in first]
    assert ids == sorted(ids, key=whole.index) and len(set(ids)) == 20


def test_a_system_prompt_comes_first():
    assert load_benchmark("aime24", n=1, system_prompt="Be brief.")[0]["messages"][0] == {
        "role": "system", "content": "Be brief."}


def test_a_prompts_file_reads_prompts_and_chats(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "q1", "prompt": "2+2?", "answer": 4}) + "\n\n"
                    + json.dumps({"messages": [{"role": "user", "content": "3+3?"}]}) + "\n")
    problems = load_benchmark(str(path))
    assert problems == [{"id": "q1", "messages": [{"role": "user", "content": "2+2?"}], "answer": "4"},
                        {"id": "line-3", "messages": [{"role": "user", "content": "3+3?"}], "answer": None}]


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a"}', '{"prompt": "b"'], r"p\.jsonl:2: malformed JSON"),
    (['["a"]'], r"p\.jsonl:1: not a JSON object"),
    (['{"answer": 3}'], r'p\.jsonl:1: needs "prompt"'),
    (['{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}'],
     r"p\.jsonl:1: \"messages\" must end with a user turn"),
    (['{"messages": [{"role": "robot", "content": "x"}]}'], r'p\.jsonl:1: each turn'),
    (['{"id": 1, "prompt": "a"}', '{"id": 1, "prompt": "b"}'], r"p\.jsonl:2: id '1' appears twice"),
    ([], r"p\.jsonl: no prompts"),
])
def test_a_bad_prompts_file_names_the_line(tmp_path, lines, message):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchmarkError, match=message):
        load_benchmark(str(path))


def test_an_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(BenchmarkError, match="unknown benchmark 'gsm9k': use one of gsm8k, math500, aime24"):
        load_benchmark("gsm9k")
    with pytest.raises(BenchmarkError, match="no such prompts file"):
        load_benchmark("missing.jsonl")
