"""Answer verification, duplicate removal and decontamination (lib.data.filters): pure, offline."""
from __future__ import annotations

import random
import threading

import pytest

from lib.data.filters import (
    Decontaminator, DuplicateFilter, reply_matches_reference, minhash_sketch, ngrams, sketch_similarity, words,
)


def row(prompt: str, think: str = "Let me add the numbers.", answer: str = "The answer is 4.", rid: str = "r"):
    return {"id": rid, "messages": [{"role": "user", "content": prompt},
                                    {"role": "assistant", "think": think, "answer": answer}]}


@pytest.mark.parametrize("reference, reply", [
    ("72", "The answer is 72."),
    ("1,000", "So the total is $\\boxed{1000}$."),
    ("\\frac{1}{2}", "Therefore $\\boxed{0.5}$"),
    ("3\\sqrt{13}", "The distance is $\\boxed{\\sqrt{117}}$."),
    ("(3, \\frac{\\pi}{2})", "The final answer is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$"),
    ("\\boxed{14/3}", "$\\frac{14}{3}$"),
    ("no", "No. 91 = 7 × 13, so it is composite."),
    ("Evelyn", "So the winner is evelyn."),
    ("18 dollars", "\\boxed{18}"),  # a unit in the reference: compared as the number
    ("18 dollars", "She has 18 dollars left."),
    ("\\text{Evelyn}", "The answer is Evelyn."),
    ("José", "The answer is José."),
    ("-3", "The answer is \u22123."),  # Unicode minus
    ("A", "The answer is A."),
])
def test_equivalent_answers_match(reference, reply):
    assert reply_matches_reference(reference, reply)


@pytest.mark.parametrize("reference, reply", [
    ("72", "The answer is 73."),
    ("72", "I think 72, or maybe 75"),  # the last stated answer counts, as for a grader
    ("72", ""),
    ("", "The answer is 72."),
    ("3\\sqrt{13}", "$\\boxed{3}$"),  # a bare '3\sqrt{13}' read as plain text would be 3: the reference is LaTeX
    ("no", "Nothing is left over: 91 is prime? Not quite."),  # "no" only as a whole word
    ("A", "Let me think. This is a trap. \\boxed{D}"),  # a word answer is looked for in the final answer only
    ("B", "B is wrong, so \\boxed{A}"),
    ("Evelyn", "Not Evelyn; the answer is Maria."),
])
def test_different_or_missing_answers_do_not_match(reference, reply):
    assert not reply_matches_reference(reference, reply)


def test_answers_match_works_off_the_main_thread():
    """math-verify's signal-based timeout only works in the main thread; the teacher stage verifies in workers."""
    results = []
    worker = threading.Thread(target=lambda: results.append(reply_matches_reference("72", "The answer is 72.")))
    worker.start()
    worker.join()
    assert results == [True]


def test_exact_duplicates_ignore_case_and_spacing_and_name_the_first_row():
    seen = DuplicateFilter()
    assert seen.check(row("What is 2+2?", rid="a")) is None
    assert seen.check(row("what is  2+2?\n", rid="b")) == ("exact duplicate", "a")


def test_a_lightly_edited_copy_is_a_near_duplicate_but_a_new_trace_for_the_same_problem_is_not():
    problem = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
               "How many clips did Natalia sell altogether in April and May?")
    think = ("In May she sold 48 / 2 = 24 clips. Together that is 48 + 24 = 72 clips. I should double-check: "
             "half of 48 is 24, and 48 plus 24 is 72, so the total over the two months is 72 clips.")
    seen = DuplicateFilter(near_threshold=0.8)
    assert seen.check(row(problem, think, "The answer is 72.", "a")) is None
    edited = think.replace("double-check", "double check").replace("so the total", "hence the total")
    assert seen.check(row(problem, edited, "The answer is 72.", "b")) == ("near duplicate", "a")
    other = ("April: 48 clips. May is half of April, so 24 clips. Summing the months gives 72 clips in all, "
             "which I verify by counting up from 48 by 24.")
    assert seen.check(row(problem, other, "The answer is 72.", "c")) is None


def test_near_duplicate_detection_can_be_switched_off():
    seen = DuplicateFilter(near_threshold=0)
    assert seen.check(row("What is 2+2? Please explain carefully.", rid="a")) is None
    assert seen.check(row("What is 2+2? Please explain carefully!", rid="b")) is None
    assert seen.check(row("what is 2+2? please explain carefully.", rid="c")) == ("exact duplicate", "a")


def test_sketch_similarity_tracks_jaccard_of_the_shingles():
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(500)]
    text = " ".join(rng.choice(vocabulary) for _ in range(400))
    assert sketch_similarity(minhash_sketch(text), minhash_sketch(text)) == 1.0
    unrelated = " ".join(rng.choice(vocabulary) for _ in range(400))
    assert sketch_similarity(minhash_sketch(text), minhash_sketch(unrelated)) < 0.2
    half = text[:len(text) // 2] + unrelated[len(unrelated) // 2:]
    assert 0.2 < sketch_similarity(minhash_sketch(text), minhash_sketch(half)) < 0.6


def test_sketches_are_stable_across_processes():
    """No salted hash(): the same text gives the same sketch in every run, so the same rows are removed."""
    assert minhash_sketch("Natalia sold clips to 48 of her friends")[:4].tolist() == \
        minhash_sketch("natalia  sold clips to 48 of her friends")[:4].tolist()
    import subprocess
    import sys
    code = "from lib.data.filters import minhash_sketch; print(minhash_sketch('a fixed text here').tolist())"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(runs) == 1


def test_words_and_ngrams():
    assert words("Compute $\\dbinom{16}{5}$.") == ["compute", "dbinom", "16", "5"]
    assert ngrams(["a", "b", "c"], 2) == {("a", "b"), ("b", "c")}
    assert ngrams(["a"], 8) == {("a",)}
    assert ngrams([], 8) == set()


EVAL = {"math500": ["Compute $\\dbinom{16}{5}$.", "Simplify 2.",
                    "If $x + y = 10$ and $x - y = 2$, what is the value of $x$ in this system of equations?"],
        "gsm8k_test": ["Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning."]}


def test_a_prompt_covering_enough_of_an_eval_problem_is_contaminated():
    guard = Decontaminator(EVAL, ngram=8)
    copied = row("Solve: if x + y = 10 and x - y = 2, what is the value of x? Show work.")
    owner, shared = guard.check(copied)
    assert owner == "math500:3" and shared.startswith("7 of its 12 8-grams (58%), e.g.")
    renamed = row("Mary's ducks lay 16 eggs per day. She eats three for breakfast every morning. How many left?")
    assert guard.check(renamed)[0] == "gsm8k_test:1"


def test_a_stock_phrase_is_not_contamination_unless_min_overlap_is_zero():
    problems = {"gsm8k_test": ["Sam buys 4 pens and 3 pads for school this week. Each pen costs $2 and each pad "
                               "costs $5 at the shop. How much money will she have left over if she had $40?"]}
    prompt = row("Ann earns $12 a day for 6 days. How much money will she have left over after paying $30 rent?")
    assert Decontaminator(problems, ngram=8).check(prompt) is None  # 1 of 30 8-grams: a stock phrase
    owner, shared = Decontaminator(problems, ngram=8, min_overlap=0).check(prompt)  # open-r1's any-8-gram rule
    assert owner == "gsm8k_test:1" and "how much money will she have left over" in shared


def test_short_eval_problems_match_inside_longer_prompts_from_four_words_and_whole_below():
    guard = Decontaminator(EVAL, ngram=8)
    assert guard.check(row("Please compute $\\binom{16}{5}$ … no wait, compute $\\dbinom{16}{5}$ quickly"))[0] \
        == "math500:1"
    assert guard.check(row("Simplify 2.")) == ("math500:2", "the whole problem: 'simplify 2'")
    assert guard.check(row("Simplify 2 x + 3 x for me.")) is None  # two words are too common to search inside


def test_an_unrelated_prompt_is_clean_and_only_user_turns_are_checked():
    guard = Decontaminator(EVAL, ngram=8)
    assert guard.check(row("What is the capital of France?")) is None
    leaked_in_reply = row("What is 2+2?", think="Janet's ducks lay 16 eggs per day. She eats three for breakfast")
    assert guard.check(leaked_in_reply) is None


def test_shipped_eval_sets_load_and_a_gsm8k_test_question_is_caught():
    guard = Decontaminator.from_eval_sets(["gsm8k_test", "math500", "aime24"])
    assert guard.sizes == {"gsm8k_test": 1319, "math500": 500, "aime24": 30}
    from lib.paths import project_path
    from lib.jsonl import read_jsonl
    question = read_jsonl(project_path("data/gsm8k/test.jsonl.gz"))[0]["question"]
    assert guard.check(row(question))[0] == "gsm8k_test:1"
    with pytest.raises(ValueError, match="unknown evaluation set"):
        Decontaminator.from_eval_sets(["mmlu"])


def test_near_duplicates_are_found_across_sketch_blocks():
    """Sketches are stored in blocks of 4,096 rows: a copy of a row in a later block is still found."""
    rng = random.Random(1)
    seen = DuplicateFilter(near_threshold=0.8)
    texts = [" ".join(f"w{rng.randrange(10_000)}" for _ in range(40)) for _ in range(4_200)]
    assert all(seen.check(row(text, rid=f"r{i}")) is None for i, text in enumerate(texts))
    assert seen.check(row(texts[4_150] + " !", rid="copy")) == ("near duplicate", "r4150")
    assert seen.check(row(texts[7] + " ?", rid="copy2")) == ("near duplicate", "r7")


def test_an_eight_word_stock_phrase_prompt_is_not_a_whole_problem():
    guard = Decontaminator.from_eval_sets(["gsm8k_test"])
    assert guard.check(row("How much money will she have left over?")) is None


def test_an_n_gram_shared_by_two_problems_counts_for_both():
    shared = "the farmer has seven cows and nine sheep in the barn"
    problems = {"gsm8k_test": [f"{shared} today.", f"Yesterday {shared} and two goats, how many animals?"]}
    guard = Decontaminator(problems, ngram=8, min_overlap=0.5)
    owner, _ = guard.check(row(f"Yesterday {shared} and two goats, how many animals in total?"))
    assert owner == "gsm8k_test:2"  # its grams were not all credited to problem 1
