"""Answer extraction, numeric matching and the per-file evaluation summary."""
from lib.evaluate.answers import answers_match, extract_final_answer
from lib.think import think_and_answer
from lib.evaluate.llama_runs import score_output, summarize
from lib.evaluate.stage import evaluation_runs


def test_answer_after_think_wins_over_numbers_inside_think():
    text = "<think>\n48 / 2 = 24, 48 + 24 = 72\n</think>\n\nThe answer is 72."
    assert extract_final_answer(text) == "72"
    assert think_and_answer(text)[0] == "48 / 2 = 24, 48 + 24 = 72"


def test_unclosed_think_uses_whole_text_and_reports_no_think():
    think, rest = think_and_answer("<think> 3 + 4 = 7 and then")
    assert think is None and rest.startswith("<think>")
    assert extract_final_answer("<think> 3 + 4 = 7 and then") == "7"


def test_commas_dollars_and_trailing_period_are_normalised():
    assert extract_final_answer("It costs $1,200.") == "1200"
    assert answers_match("1200", "1,200") and answers_match("72.0", "72")
    assert not answers_match("71", "72") and not answers_match(None, "72")


def test_score_output_flags():
    scored = score_output("<think>\nx\n</think>\nThe answer is 5.", "5")
    assert scored == {"opened_think": True, "closed_think": True, "predicted": "5", "correct": True}
    assert score_output("The answer is 5.", "6")["correct"] is False
    assert score_output("The answer is 5.", None)["correct"] is False


def test_summarize_rates_and_speed():
    base = {"completion_tokens": 10, "seconds": 1.0, "finish_reason": "stop", "think_tokens": 4}
    records = [base | score_output("<think>a</think> 1", "1"), base | score_output("<think>a", "2"),
               base | {"finish_reason": "length"} | score_output("no think 3", "3")]
    summary = summarize(records)
    assert summary["prompts"] == 3
    assert summary["closure_rate"] == round(1 / 3, 4)
    assert summary["opened_think_rate"] == round(2 / 3, 4)
    assert summary["accuracy"] == round(2 / 3, 4)
    assert summary["mean_think_tokens"] == 4.0  # averaged over closed outputs only
    assert summary["hit_max_tokens"] == 1
    assert summary["tokens_per_second"] == 10.0


FILES = {"base": "b.gguf", "distilled-F16": "f16.gguf", "distilled-Q8_0": "q8.gguf"}


def test_evaluation_runs_add_the_no_penalty_ablation_only_when_a_penalty_is_used():
    penalised = {"temperature": 0.6, "repeat_penalty": 1.1, "seed": 1}
    runs = evaluation_runs(FILES, penalised, "Q8_0")
    assert [r["label"] for r in runs] == [*FILES, "distilled-Q8_0-no-repeat-penalty"]
    assert runs[-1] == {"label": "distilled-Q8_0-no-repeat-penalty", "path": "q8.gguf",
                        "sampling": {"temperature": 0.6, "repeat_penalty": 1.0, "seed": 1}}
    assert all(r["sampling"] == penalised for r in runs[:-1])
    assert [r["label"] for r in evaluation_runs(FILES, {"repeat_penalty": 1.0}, "Q8_0")] == list(FILES)
    assert [r["label"] for r in evaluation_runs(FILES, penalised, "")] == list(FILES)


def test_peak_rss_is_this_process_not_a_forking_parent(tmp_path):
    # A child started from a big parent must report its own peak: ru_maxrss survives exec and would not.
    import subprocess
    import sys

    from lib.evaluate.llama_runs import peak_rss_mib

    ballast = bytearray(300 * 2**20)  # this process: > 300 MiB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    child = subprocess.run([sys.executable, "-c", "from lib.evaluate.llama_runs import peak_rss_mib; print(peak_rss_mib())"],
                           capture_output=True, text=True, check=True)
    assert peak_rss_mib() > 300
    assert float(child.stdout) < 150
    del ballast


def test_a_reply_whose_think_the_prompt_opened_is_judged_with_that_opening():
    """DeepSeek-R1-Distill's generation prompt ends with `<think>\n`: the model writes only the rest of the block.
    Judged as generated, it would never open (or close) its thinking."""
    from lib.evaluate.llama_runs import reply_text

    generated = "2 + 3 = 5.\n</think>\n\nThe answer is 5."
    assert score_output(generated, "5")["closed_think"] is False  # the bug: the opening is in the prompt
    scored = score_output(reply_text(generated, prompt_opens_think=True), "5")
    assert scored == {"opened_think": True, "closed_think": True, "predicted": "5", "correct": True}
    assert reply_text("<think>x</think>y", prompt_opens_think=True) == "<think>x</think>y"  # not twice
    assert reply_text(generated, prompt_opens_think=False) == generated


def test_only_a_template_that_opens_think_in_its_prompt_is_marked():
    from lib.conversation import generation_prompt_opens_think
    from lib.models import load_fixture_tokenizer

    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    assert generation_prompt_opens_think(load_fixture_tokenizer("r1_distill_qwen"), messages)
    assert not generation_prompt_opens_think(load_fixture_tokenizer("qwen3"), messages)
    assert not generation_prompt_opens_think(load_fixture_tokenizer("llama3_2"), messages,
                                             {"date_string": "26 Jul 2024"})
