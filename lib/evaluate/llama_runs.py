"""Judge a GGUF file the way it will be used: llama.cpp, the chat template embedded in the file.

Usage: ``summary = evaluate_gguf(Path("model-Q8_0.gguf"), prompts_file, out_dir, max_tokens=384)``

Each file runs in its own child process (`python -m lib.evaluate.llama_runs …`) so its peak RSS is its own and a
crash in llama.cpp cannot take the notebook down. Per prompt: did the model open and close `<think>`, how
long did it think (tokens), is the final number right; per file: closure rate, accuracy, mean think length
and peak RSS. Speed is measured separately (`speed_benchmark`): one file at a time with all threads, so
tokens/s is what a device running only this model would see, even when the accuracy runs share the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from concurrent.futures import ThreadPoolExecutor

from lib.conversation import plain_prompt
from lib.evaluate.answers import answers_match, extract_final_answer
from lib.jsonl import read_jsonl, write_jsonl
from lib.paths import atomic_write_text
from lib.recipe import Recipe
from lib.think import THINK_OPEN, think_and_answer


def score_output(text: str, reference: str | None) -> dict:
    """Pure per-output judgement: opened/closed think, final answer, correctness."""
    think, _ = think_and_answer(text)
    predicted = extract_final_answer(text)
    return {"opened_think": THINK_OPEN in text, "closed_think": think is not None,
            "predicted": predicted, "correct": bool(reference is not None and answers_match(predicted, reference))}


def reply_text(generated: str, prompt_opens_think: bool) -> str:
    """The reply a user sees: what the model generated, behind the `<think>` its generation prompt wrote when the
    template opens the block itself (DeepSeek-R1-Distill); judged as such, its opening and closing count."""
    if prompt_opens_think and not generated.lstrip().startswith(THINK_OPEN):
        return f"{THINK_OPEN}\n{generated}"
    return generated


def summarize(records: list[dict]) -> dict:
    """Aggregate per-prompt records into the numbers the report shows (pure)."""
    n = len(records)
    closed = [r for r in records if r["closed_think"]]
    gen_tokens = sum(r["completion_tokens"] for r in records)
    gen_seconds = sum(r["seconds"] for r in records)
    return {
        "prompts": n,
        "opened_think_rate": round(sum(r["opened_think"] for r in records) / max(1, n), 4),
        "closure_rate": round(len(closed) / max(1, n), 4),
        "accuracy": round(sum(r["correct"] for r in records) / max(1, n), 4),
        "mean_think_tokens": round(sum(r["think_tokens"] for r in closed) / max(1, len(closed)), 1),
        "hit_max_tokens": sum(r["finish_reason"] == "length" for r in records),
        "tokens_per_second": round(gen_tokens / max(1e-9, gen_seconds), 2),
    }


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: model weights (mmap'd pages touched) + KV cache + Python.

    Linux's VmHWM belongs to the address space, which exec replaces; `ru_maxrss` survives exec and would report
    the forking parent's peak (the notebook kernel, ~250 MiB) for any file smaller than that.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux, bytes on macOS


def run_prompts(gguf_path: Path, prompts: list[dict], max_tokens: int, n_ctx: int, n_threads: int,
                plain_prompt_format: str = "", sampling: dict | None = None) -> list[dict]:
    """Generate for each prompt with llama-cpp-python (in this process).

    `sampling` holds llama.cpp sampling arguments (temperature, top_p, repeat_penalty, seed); empty = greedy.
    A fixed seed makes sampled runs repeatable.
    """
    sampling = dict(sampling or {"temperature": 0.0})
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                          seed=0, verbose=False)
    records = []
    for item in prompts:
        start = time.perf_counter()
        if plain_prompt_format:  # base models: the recipe's plain format, no chat template
            user = next(m["content"] for m in item["messages"] if m["role"] == "user")
            out = llm.create_completion(plain_prompt(plain_prompt_format, user), max_tokens=max_tokens,
                                        **sampling)
            text = out["choices"][0]["text"]
        else:
            out = llm.create_chat_completion(item["messages"], max_tokens=max_tokens, **sampling)
            text = out["choices"][0]["message"]["content"] or ""
        seconds = time.perf_counter() - start
        reply = reply_text(text, item.get("prompt_opens_think", False))
        think, _ = think_and_answer(reply)
        think_tokens = len(llm.tokenize(think.encode(), add_bos=False, special=False)) if think else 0
        records.append({"id": item["id"], "reference": item.get("answer"), "output": text,
                        "completion_tokens": out["usage"]["completion_tokens"], "seconds": round(seconds, 3),
                        "finish_reason": out["choices"][0]["finish_reason"], "think_tokens": think_tokens,
                        **score_output(reply, item.get("answer"))})
    return records


def evaluate_gguf(gguf_path: Path, prompts_file: Path, out_dir: Path, label: str, max_tokens: int = 384,
                  n_ctx: int = 2048, n_threads: int = 2, plain_prompt_format: str = "",
                  sampling: dict | None = None) -> dict:
    """Evaluate one GGUF in a child process; returns its summary (also written to `out_dir/<label>.json`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / f"{label}.json"
    command = [sys.executable, "-m", "lib.evaluate.llama_runs", str(gguf_path), str(prompts_file), str(out_dir), label,
               "--max-tokens", str(max_tokens), "--n-ctx", str(n_ctx), "--n-threads", str(n_threads),
               "--plain-format", plain_prompt_format, "--sampling", json.dumps(sampling or {})]
    # passive OpenMP waiting: accuracy runs may share the cores with another run, and spinning threads would
    # steal them. (Alone, spinning is faster: 2 threads gave 124 tok/s active vs 34 passive on SmolLM2 Q8_0.)
    env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"evaluating {gguf_path.name} failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(summary_path.read_text())


def speed_benchmark(gguf_path: Path, prompts_file: Path, out_dir: Path, label: str, n_prompts: int = 3,
                    max_tokens: int = 128, n_ctx: int = 2048, n_threads: int = 2,
                    plain_prompt_format: str = "", sampling: dict | None = None) -> dict:
    """Generation tokens/s of one file on the first `n_prompts` prompts, run alone in a child process."""
    command = [sys.executable, "-m", "lib.evaluate.llama_runs", str(gguf_path), str(prompts_file), str(out_dir), label,
               "--max-tokens", str(max_tokens), "--n-ctx", str(n_ctx), "--n-threads", str(n_threads),
               "--plain-format", plain_prompt_format, "--sampling", json.dumps(sampling or {}),
               "--bench", str(n_prompts)]
    # run alone, with llama.cpp's default (spinning) thread wait: the speed a dedicated device would see
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmarking {gguf_path.name} failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads((out_dir / f"{label}.speed.json").read_text())


def evaluate_files(recipe: Recipe, runs: list[dict], prompts: Path, out: Path) -> list[dict]:
    """Judge every run (label, path, sampling) on the prompts, then time each file alone; one summary per run.

    Accuracy runs may share the CPU (`eval_parallel` files at a time, threads split between them); speed is
    measured one file at a time, as a device running only this model would see it.
    """
    plain = recipe.plain_format if recipe.chat_format == "plain" else ""
    threads = max(1, recipe.eval_n_threads // recipe.eval_parallel)
    with ThreadPoolExecutor(max_workers=recipe.eval_parallel) as pool:
        results = list(pool.map(lambda run: evaluate_gguf(run["path"], prompts, out, run["label"],
                                                          recipe.eval_max_tokens, recipe.eval_n_ctx, threads, plain,
                                                          run["sampling"]), runs))
    speed_threads = recipe.eval_speed_threads or recipe.eval_n_threads
    for result, run in zip(results, runs):
        result["tokens_per_second_shared_cpu"] = result.pop("tokens_per_second")
        result.update(speed_benchmark(run["path"], prompts, out, run["label"], n_ctx=recipe.eval_n_ctx,
                                      n_threads=speed_threads, plain_prompt_format=plain, sampling=run["sampling"]))
    return results


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("prompts", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("label")
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-threads", type=int, default=2)
    parser.add_argument("--plain-format", default="")
    parser.add_argument("--sampling", default="{}", help="JSON of llama.cpp sampling arguments; {} = greedy")
    parser.add_argument("--bench", type=int, default=0, help="speed only: first N prompts, writes LABEL.speed.json")
    args = parser.parse_args(argv)
    prompts, sampling = read_jsonl(args.prompts), json.loads(args.sampling)
    if args.bench:
        records = run_prompts(args.gguf, prompts[:args.bench], args.max_tokens, args.n_ctx, args.n_threads,
                              args.plain_format, sampling)
        speed = {"tokens_per_second": summarize(records)["tokens_per_second"], "speed_prompts": len(records),
                 "speed_threads": args.n_threads}
        atomic_write_text(args.out_dir / f"{args.label}.speed.json", json.dumps(speed, indent=2))
        return
    started = time.perf_counter()
    records = run_prompts(args.gguf, prompts, args.max_tokens, args.n_ctx, args.n_threads, args.plain_format,
                          sampling)
    write_jsonl(args.out_dir / f"{args.label}.outputs.jsonl", records)
    summary = {"label": args.label, "file": args.gguf.name, "file_bytes": args.gguf.stat().st_size,
               "sampling": sampling or {"temperature": 0.0}, "threads": args.n_threads,
               **summarize(records), "wall_seconds": round(time.perf_counter() - started, 1),
               "peak_rss_mib": peak_rss_mib()}
    atomic_write_text(args.out_dir / f"{args.label}.json", json.dumps(summary, indent=2))


if __name__ == "__main__":
    _main()
