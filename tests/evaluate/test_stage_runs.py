"""05's pieces around the judge: which runs are made, the peak RSS each child reports, replies whose thought the
prompt opened. (Judging itself: test_judging.py; the numbers: test_metrics.py.)"""
from lib.evaluate.judging import judge_sample, reply_text
from lib.evaluate.stage import evaluation_runs


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

    from lib.evaluate.generate import peak_rss_mib

    ballast = bytearray(300 * 2**20)  # this process: > 300 MiB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    child = subprocess.run([sys.executable, "-c", "from lib.evaluate.generate import peak_rss_mib; print(peak_rss_mib())"],
                           capture_output=True, text=True, check=True)
    assert peak_rss_mib() > 300
    assert float(child.stdout) < 150
    del ballast


def test_a_reply_whose_think_the_prompt_opened_is_judged_with_that_opening():
    """DeepSeek-R1-Distill's generation prompt ends with `<think>\n`: the model writes only the rest of the block.
    Judged as generated, it would never open (or close) its thinking."""
    generated = "2 + 3 = 5.\n</think>\n\nThe answer is 5."
    assert judge_sample(generated, "5")["closed_think"] is False  # the bug: the opening is in the prompt
    judged = judge_sample(generated, "5", prompt_opens_think=True)
    assert (judged["opened_think"], judged["closed_think"], judged["answer_key"], judged["correct"]) == (
        True, True, "5", True)
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


def test_a_file_too_large_for_the_machine_is_not_judged_and_a_large_base_is_judged_as_q8_0(tmp_path):
    from lib.evaluate.stage import fitting_files

    def file(name, size):
        (tmp_path / name).write_bytes(b"\0" * size)
        return tmp_path / name

    files = {"base": file("r-base-F16.gguf", 900), "distilled-F16": file("r-F16.gguf", 900),
             "distilled-Q4_K_M": file("r-Q4_K_M.gguf", 300)}
    kept, skipped = fitting_files(files, kv_bytes=100, available_bytes=1000,
                                  quantize=lambda path: file(path.name.replace("F16", "Q8_0"), 480))
    assert {label: path.name for label, path in kept.items()} == {"base": "r-base-Q8_0.gguf",
                                                                  "distilled-Q4_K_M": "r-Q4_K_M.gguf"}
    assert list(skipped) == ["distilled-F16"] and "r-F16.gguf needs 0.0 GiB" in skipped["distilled-F16"]
    assert fitting_files(files, 100, 10**6) == (files, {})
