"""k generations per problem from one GGUF file with llama.cpp, in a child process of its own.

Usage: ``samples, peak_rss_mib = generate_samples(Path("m-Q8_0.gguf"), problems, k=4, max_tokens=512)``

The child (``python -m lib.evaluate.generate …``) loads only llama.cpp, so its peak resident memory is the file's
cost on a device, and a crash in llama.cpp cannot take the caller down. The chat is rendered by the template
embedded in the GGUF (never a guessed built-in format: llama-cpp-python falls back on Llama-2's when a file has
none, which would judge a model on a chat it never saw), so a file without one is refused unless a plain prompt
format is given. Each sample records its text, completion tokens, why it stopped, its wall time and, for a
problem's first sample, the time to its first token (TTFT: prompt evaluation + one token). Sample j of every
problem uses seed `seed + j`: the same call gives the same samples.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib.conversation import plain_prompt
from lib.evaluate.batched import Engine
from lib.export.gguf import gpu_offload, render_chat, special_texts
from lib.evaluate.judging import part_lengths
from lib.jsonl import read_jsonl, write_jsonl
from lib.paths import atomic_write_text
from lib.think import THINK_CLOSE, THINK_OPEN

NO_TEMPLATE = 3  # the child's exit status for a GGUF without an embedded chat template


class GenerationError(RuntimeError):
    """llama.cpp could not judge the file (no template, not a GGUF, a prompt longer than the context): one line."""


def greedy(sampling: dict) -> bool:
    return float(sampling.get("temperature", 0.0)) == 0.0


def generate_samples(gguf: Path, problems: list[dict], k: int = 1, max_tokens: int = 512, n_ctx: int = 0,
                     n_threads: int = 2, sampling: dict | None = None, plain_format: str = "",
                     passive_wait: bool = False, n_parallel: int = 1, think_budget: int | None = None,
                     answer_prefix: str = "", answer_tokens: int = 64, unified_kv: bool = False,
                     template_kwargs: dict | None = None, flash_attn: bool = False) -> tuple[list[dict], dict]:
    """(samples in problem order, {"peak_rss_mib", "generation_seconds"} of the child); raises GenerationError
    with the child's reason.

    `sampling`: llama.cpp arguments (temperature, top_p, repeat_penalty, seed); temperature 0 is greedy, which
    only k = 1 makes sense with. `n_ctx`: context per sequence, 0 = room for the longest prompt plus `max_tokens`.
    `n_parallel`: sequences decoded at once (`lib.evaluate.batched`). `think_budget`: end a thought after this
    many tokens with "</think>" + `answer_prefix`, then allow `answer_tokens` more (None: no budget).
    `unified_kv`: one cache for all sequences; `flash_attn`: llama.cpp's fused attention (each faster, neither exact:
    `lib.evaluate.batched`). `template_kwargs`: extra variables of the chat template (the recipe's
    chat_template_kwargs).
    `passive_wait`: OpenMP threads sleep instead of spinning (for runs sharing the cores; ~3x slower alone).
    """
    sampling = dict(sampling or {"temperature": 0.0})
    if k < 1 or n_parallel < 1:
        raise GenerationError(f"k and the parallel sequences must be at least 1, not {k} and {n_parallel}")
    if k > 1 and greedy(sampling):
        raise GenerationError(f"k = {k} samples of a greedy decode are {k} copies: set a temperature > 0")
    if max_tokens < 1 or n_threads < 1 or float(sampling.get("temperature", 0.0)) < 0:
        raise GenerationError(f"max tokens ({max_tokens}) and threads ({n_threads}) must be >= 1 and the temperature "
                              f"({sampling.get('temperature')}) >= 0")
    if int(sampling.get("seed", 0)) < 0:
        raise GenerationError(f"seed {sampling['seed']} must be >= 0 (llama.cpp reads a negative seed as 'random')")
    if think_budget is not None and not 1 <= think_budget < max_tokens:
        raise GenerationError(f"a think budget of {think_budget} tokens never ends a thought within {max_tokens} "
                              "max tokens: use 1 <= budget < max tokens")
    gguf = Path(gguf)
    if not gguf.is_file():
        raise GenerationError(f"{gguf}: no such file")
    with open(gguf, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise GenerationError(f"{gguf}: not a GGUF file (it does not start with the GGUF magic)")
    with tempfile.TemporaryDirectory(prefix="thinkdistill-gen-") as work:
        work = Path(work)
        write_jsonl(work / "problems.jsonl", problems)
        command = [sys.executable, "-m", "lib.evaluate.generate", str(gguf), str(work / "problems.jsonl"),
                   str(work / "samples.jsonl"), "--k", str(k), "--max-tokens", str(max_tokens), "--n-ctx", str(n_ctx),
                   "--n-threads", str(n_threads), f"--sampling={json.dumps(sampling)}",
                   f"--plain-format={plain_format}", "--parallel", str(n_parallel), f"--answer-prefix={answer_prefix}",
                   "--answer-tokens", str(answer_tokens), f"--template-kwargs={json.dumps(template_kwargs or {})}"]
        if think_budget is not None:
            command += ["--think-budget", str(think_budget)]
        if unified_kv:
            command.append("--unified-kv")
        if flash_attn:
            command.append("--flash-attn")
        env = {k_: v for k_, v in os.environ.items() if k_ != "OMP_WAIT_POLICY"}
        if passive_wait:
            env["OMP_WAIT_POLICY"] = "passive"
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            raise GenerationError(reason.removeprefix("lib.evaluate.generate: error: "))
        return read_jsonl(work / "samples.jsonl"), json.loads((work / "rss.json").read_text())


def rendered_prompts(llm, problems: list[dict], plain_format: str, template_kwargs: dict | None = None) -> list[str]:
    """Each problem's prompt as llama-cpp-python renders it: the GGUF's own template (its BOS and EOS tokens) with
    the generation prompt and the recipe's `chat_template_kwargs` (Llama 3.2's date_string: without it the template
    writes today's date), or the recipe's plain format for a base model."""
    if plain_format:
        return [plain_prompt(plain_format, next(m["content"] for m in reversed(p["messages"]) if m["role"] == "user"))
                for p in problems]
    template, (bos, eos) = llm.metadata["tokenizer.chat_template"], special_texts(llm)
    return [render_chat(template, p["messages"], bos, eos, template_kwargs=template_kwargs) for p in problems]


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux VmHWM, which exec resets, unlike ru_maxrss), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def die_with_parent() -> None:
    """Linux: end this child when the process that started it dies (a notebook kernel restarted or killed
    mid-evaluation), instead of decoding on as an orphan that holds the cores (seen: one ran on for minutes)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request: it would never come
        sys.exit(1)


def _main(argv: list[str] | None = None) -> None:
    die_with_parent()
    parser = argparse.ArgumentParser(prog="lib.evaluate.generate", description=__doc__.splitlines()[0])
    parser.add_argument("gguf")
    parser.add_argument("problems", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--n-ctx", type=int, default=0)
    parser.add_argument("--n-threads", type=int, default=2)
    parser.add_argument("--sampling", default="{}")
    parser.add_argument("--plain-format", default="")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--unified-kv", action="store_true")
    parser.add_argument("--flash-attn", action="store_true")
    parser.add_argument("--template-kwargs", default="{}")
    parser.add_argument("--think-budget", type=int, default=None)
    parser.add_argument("--answer-prefix", default="")
    parser.add_argument("--answer-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    import llama_cpp

    problems, sampling = read_jsonl(args.problems), json.loads(args.sampling)
    vocab = llama_cpp.Llama(args.gguf, vocab_only=True, verbose=False)  # template and tokenizer, no weights
    if not vocab.metadata.get("tokenizer.chat_template") and not args.plain_format:
        parser.exit(NO_TEMPLATE, f"{args.gguf}: the GGUF has no chat template (tokenizer.chat_template): export it "
                                 "again with 04, which embeds the tokenizer's, or judge it with a plain prompt "
                                 "format\n")
    prompts = rendered_prompts(vocab, problems, args.plain_format, json.loads(args.template_kwargs))
    longest = max(len(vocab.tokenize(p.encode(), add_bos=False, special=True)) for p in prompts)
    close_tokens = vocab.tokenize(f"\n{THINK_CLOSE}\n\n{args.answer_prefix}".rstrip(" ").encode(), add_bos=False,
                                  special=True)
    # a forced close ends the thought as training wrote it ("…\n</think>\n\n" + the answer), "</think>" a special
    # token where the vocabulary has one
    extra = 0 if args.think_budget is None else len(close_tokens) + args.answer_tokens  # a forced close + answer
    n_ctx = args.n_ctx or -(-(longest + args.max_tokens + extra + 16) // 256) * 256  # the longest fits, in 256s
    engine = Engine(args.gguf, args.parallel, n_ctx, args.n_threads, unified_kv=args.unified_kv,
                    flash_attn=args.flash_attn)
    jobs, opens = [], []
    for problem, prompt in zip(problems, prompts):
        tokens = vocab.tokenize(prompt.encode(), add_bos=bool(args.plain_format), special=True)
        opens.append(not args.plain_format and prompt.rstrip().endswith(THINK_OPEN))
        budget = None if args.think_budget is None else {
            "think_tokens": args.think_budget, "close": close_tokens, "answer_tokens": args.answer_tokens,
            "opened": opens[-1]}
        jobs += [{"key": f"{problem['id']}#{j}", "tokens": tokens, "seed": int(sampling.get("seed", 0)) + j,
                  "budget": budget} for j in range(args.k)]
    try:
        results, wall = engine.decode_all(jobs, args.max_tokens, sampling)
    except ValueError as error:  # a prompt longer than the context
        parser.exit(2, f"{error}; pass a larger --n-ctx\n")
    count_tokens = lambda part: len(vocab.tokenize(part.encode(), add_bos=False, special=False))  # noqa: E731
    samples = []
    for number, result in enumerate(results):
        problem, j = problems[number // args.k], number % args.k
        text = engine.text(result["tokens"])
        samples.append({"problem_id": problem["id"], "sample": j, "prompt_opens_think": opens[number // args.k],
                        "text": text, "completion_tokens": len(result["tokens"]),
                        "finish_reason": result["finish_reason"], "seconds": result["seconds"],
                        "ttft_seconds": result["ttft_seconds"] if j == 0 else None,
                        "forced_close": result["forced_close"], "think_budget": args.think_budget,
                        **part_lengths(text, opens[number // args.k], count_tokens)})
    write_jsonl(args.out, samples)
    atomic_write_text(args.out.parent / "rss.json", json.dumps({"peak_rss_mib": peak_rss_mib(),
                                                               "generation_seconds": round(wall, 3),
                                                               "gpu_offload": gpu_offload()}))


if __name__ == "__main__":
    _main()
