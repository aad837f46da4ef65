"""Decode many sequences at once with llama.cpp's batch API: one model in memory, `n_parallel` sequences in flight,
a finished one replaced by the next waiting (continuous batching, as llama-server's parallel slots do).

Usage: ``engine = Engine(gguf, n_parallel=4, seq_ctx=1024, n_threads=2)``
``results, wall = engine.decode_all(jobs, max_tokens=512, sampling={...})``
(jobs: ``[{"key": …, "tokens": [prompt token ids], "seed": 3407, "budget": None}]``; results in the same order)

Evaluation is decode-bound: one sequence reads every weight for each token it makes; four read them once for
four tokens, so on a CPU as on a GPU the tokens per second of the whole batch grow with it (measured in
benchmarks/parallel_decoding.py). Each sequence has its own sampler chain, the one llama-cpp-python's
`create_completion` builds (repeat penalties over the last 64 generated tokens, then top-k 40, top-p, min-p 0.05,
temperature, a seeded draw; greedy at temperature 0).

Two cache layouts, a choice between exact and fast (measured by benchmarks/parallel_decoding.py, llama.cpp of
llama-cpp-python 0.3.36, 2 CPU cores):
- a cache per sequence (the default): a sequence's tokens depend on its prompt and seed only, the same to the bit
  as decoding it alone (tests/evaluate/test_batched.py), whatever `n_parallel`; but llama.cpp then splits each
  step by sequence, and 4 at once gave only 1.26x the tokens/s of one;
- one unified cache (`unified_kv`, llama-server's layout with parallel slots): 4 at once 1.57x, 8 at once 1.96x;
  but a prompt's logits move with where its cells land among the other sequences' (by up to 1.0 on SmolLM2, not
  with what those sequences say: a layout effect on the arithmetic, not a leak), so an answer near a tie can turn
  with `n_parallel`. Statistics over many problems stay comparable; single answers do not.
`flash_attn` (off by default): llama.cpp's fused attention, whose CPU kernel skips the masked cells the plain
attention multiplies through — 4 at once 1.11x instead of 0.87x in one benchmark run (README). Not exact either:
with a cache per sequence, 4 at once wrote other tokens than 1 at a time on some replies.

Think budget (s1's budget forcing; llama.cpp's `--reasoning-budget` ends a thought the same way): a job with
``"budget": {"think_tokens": B, "close": [token ids of "</think>" + an answer prefix], "answer_tokens": A,
"opened": prompt opened the thought}`` that has thought B tokens without closing gets the close tokens fed in as
if it had written them, then A more tokens to answer; `forced_close` says so in its result.
"""
from __future__ import annotations

import time
from collections import deque

from lib.export.gguf import gpu_offload

# llama-cpp-python's create_completion defaults, which 05's earlier one-at-a-time runs used
TOP_K, MIN_P, TYPICAL_P, PENALTY_LAST_N = 40, 0.05, 1.0, 64


def sampler_chain(n_vocab: int, sampling: dict, seed: int):
    """A llama.cpp sampler chain for one sequence (see the module docstring)."""
    from llama_cpp import _internals

    chain = _internals.LlamaSampler()
    chain.add_penalties(n_vocab, PENALTY_LAST_N, float(sampling.get("repeat_penalty", 1.0)), 0.0, 0.0)
    temperature = float(sampling.get("temperature", 0.0))
    if temperature == 0.0:
        chain.add_greedy()
        return chain
    chain.add_top_k(TOP_K)
    chain.add_typical(TYPICAL_P, 1)
    chain.add_top_p(float(sampling.get("top_p", 1.0)), 1)
    chain.add_min_p(MIN_P, 1)
    chain.add_temp(temperature)
    chain.add_dist(seed)
    return chain


class Engine:
    """A loaded model and a context sized for `n_parallel` sequences of at most `seq_ctx` tokens each."""

    def __init__(self, gguf: str, n_parallel: int, seq_ctx: int, n_threads: int, n_batch: int = 512,
                 unified_kv: bool = False, flash_attn: bool = False):
        import llama_cpp
        from llama_cpp import _internals

        self.llama_cpp, self.n_parallel, self.n_batch = llama_cpp, n_parallel, n_batch
        model_params = llama_cpp.llama_model_default_params()
        # every layer on the GPU with a GPU build of llama.cpp (a GPU user's 05), none on a CPU build; each result
        # says which (gpu_offload)
        model_params.n_gpu_layers = -1 if gpu_offload() else 0
        self.model = _internals.LlamaModel(path_model=gguf, params=model_params, verbose=False)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = seq_ctx * n_parallel
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_parallel
        # a cache per sequence (seq_ctx cells each) unless `unified_kv`: see the module docstring
        params.kv_unified = unified_kv
        params.n_threads = params.n_threads_batch = n_threads
        # off as llama-cpp-python's Llama sets it (its default): the same attention arithmetic as its completions
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self.ctx = _internals.LlamaContext(model=self.model, params=params, verbose=False)
        self.batch = _internals.LlamaBatch(n_tokens=max(n_batch, n_parallel), embd=0, n_seq_max=n_parallel,
                                           verbose=False)
        self.seq_ctx = seq_ctx

    def _add(self, token: int, position: int, seq: int, logits: bool) -> int:
        b, i = self.batch.batch, self.batch.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i] = token, position, 1, seq, logits
        b.n_tokens = i + 1
        return i

    def _prefill(self, tokens: list[int], seq: int) -> int:
        """Evaluate a prompt into sequence `seq` (in chunks of n_batch); the batch index of its last logits."""
        self.llama_cpp.llama_memory_seq_rm(self.ctx.memory, seq, -1, -1)
        last = 0
        for start in range(0, len(tokens), self.n_batch):
            self.batch.reset()
            chunk = tokens[start:start + self.n_batch]
            for offset, token in enumerate(chunk):
                last = self._add(token, start + offset, seq, start + offset == len(tokens) - 1)
            self.ctx.decode(self.batch)
        return last

    def decode_all(self, jobs: list[dict], max_tokens: int, sampling: dict) -> tuple[list[dict], float]:
        """(one result per job, in order: token ids, finish reason, seconds, time to first token; the wall time
        of the whole run)."""
        n_vocab, vocab = self.model.n_vocab(), self.model.vocab
        waiting = deque(enumerate(jobs))
        free, active, results = list(range(self.n_parallel))[::-1], {}, [None] * len(jobs)
        started = time.perf_counter()

        def sampled(seq: int, state: dict, index: int) -> None:
            if state["forced"]:  # budget forcing: the next token is written for the model
                token = state["forced"].popleft()
                state["sampler"].accept(token)
            else:
                token = state["sampler"].sample(self.ctx, index)  # llama_sampler_sample also accepts the token
            now = time.perf_counter()
            state["ttft"] = state["ttft"] if state["ttft"] is not None else now - state["start"]
            if self.llama_cpp.llama_vocab_is_eog(vocab, token):
                finish(seq, state, "stop", now)
                return
            state["tokens"].append(token)
            if state["budget"]:
                over_budget(state, token)
            if len(state["tokens"]) >= state["limit"] or state["position"] >= self.seq_ctx:  # no cell for it
                finish(seq, state, "length", now)

        def over_budget(state: dict, token: int) -> None:
            """Follow the thought; when it has run `think_tokens` without closing, queue the close."""
            budget = state["budget"]
            state["text"] = (state["text"] + self.model.detokenize([token], special=True))[-32:]  # the tail is enough
            if state["think_start"] is None and b"<think>" in state["text"]:
                state["think_start"] = len(state["tokens"])
            if state["closed"] or b"</think>" in state["text"]:
                state["closed"] = True
                return
            if state["think_start"] is not None and len(state["tokens"]) - state["think_start"] >= budget[
                    "think_tokens"]:
                state["forced"].extend(budget["close"])
                state["closed"], state["forced_close"] = True, True
                state["limit"] = len(state["tokens"]) + len(budget["close"]) + budget["answer_tokens"]

        def finish(seq: int, state: dict, reason: str, now: float) -> None:
            results[state["index"]] = {"tokens": state["tokens"], "finish_reason": reason,
                                       "seconds": round(now - state["start"], 4),
                                       "ttft_seconds": round(state["ttft"], 4), "forced_close": state["forced_close"]}
            del active[seq]
            free.append(seq)

        while waiting or active:
            while waiting and free:  # a free slot takes the next job: its prompt, then its first token
                seq = free.pop()
                index, job = waiting.popleft()
                budget = job.get("budget")
                state = {"index": index, "start": time.perf_counter(), "ttft": None, "tokens": [],
                         "position": len(job["tokens"]), "sampler": sampler_chain(n_vocab, sampling, job["seed"]),
                         "limit": max_tokens, "budget": budget, "forced": deque(), "forced_close": False,
                         "text": b"", "closed": False, "think_start": 0 if budget and budget["opened"] else None}
                if len(job["tokens"]) >= self.seq_ctx:
                    raise ValueError(f"prompt {job['key']} has {len(job['tokens'])} tokens, the context per "
                                     f"sequence {self.seq_ctx}")
                active[seq] = state
                sampled(seq, state, self._prefill(job["tokens"], seq))
            if not active:
                continue
            self.batch.reset()  # one step: the last token of every sequence in flight, together
            indices = {seq: self._add(state["tokens"][-1], state["position"], seq, True)
                       for seq, state in active.items()}
            self.ctx.decode(self.batch)
            for seq, state in list(active.items()):
                state["position"] += 1
                sampled(seq, state, indices[seq])
        return results, time.perf_counter() - started

    def text(self, tokens: list[int]) -> str:
        """Generated tokens as text, special tokens written out (a vocabulary whose `<think>` is a control token
        would otherwise hide the thought); the end-of-generation token is never among them."""
        return self.model.detokenize(tokens, special=True).decode("utf-8", errors="ignore")
