"""Judge one GGUF file on one benchmark: generate (llama.cpp, a child process), judge (math-verify), summarise.

Usage: ``summary = evaluate_benchmark(Path("m-Q8_0.gguf"), "gsm8k", n=200, k=4, max_tokens=512)``
(``python -m lib eval m-Q8_0.gguf --benchmark gsm8k --n 200 --k 4`` prints the same object)

The summary holds what `lib.evaluate.metrics.benchmark_summary` computes plus what was run (file, benchmark,
subset, sampling, threads) and the generating process's peak RSS; with `out_dir`, it is written to
``<out_dir>/<stem>.json`` (default stem: ``<file stem>.<benchmark>``) and every judged sample to
``<stem>.samples.jsonl`` beside it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from lib.evaluate.benchmarks import load_benchmark
from lib.evaluate.generate import generate_samples
from lib.evaluate.judging import judge_sample
from lib.evaluate.metrics import benchmark_summary
from lib.jsonl import write_jsonl
from lib.paths import atomic_write_text

# DeepSeek-R1's recommended sampling for its distilled models (and open-r1's evaluations)
DEFAULT_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "seed": 0}


def judge_samples(samples: list[dict], problems: list[dict]) -> list[dict]:
    """Each generated sample with its judgement against its problem's reference answer or checks."""
    by_id = {p["id"]: p for p in problems}
    return [{**s, **judge_sample(s["text"], by_id[s["problem_id"]]["answer"], s["prompt_opens_think"],
                                 by_id[s["problem_id"]].get("checks"))} for s in samples]


def benchmark_label(benchmark: str) -> str:
    """A file-name-safe name for the benchmark: its name, or a prompts file's stem."""
    return Path(benchmark).name.removesuffix(".gz").removesuffix(".jsonl") if benchmark.endswith(
        (".jsonl", ".jsonl.gz")) else benchmark


def evaluate_benchmark(gguf: Path, benchmark: str, n: int | None = None, k: int = 1, seed: int = 0,
                       max_tokens: int = 512, n_ctx: int = 0, n_threads: int = 2, sampling: dict | None = None,
                       system_prompt: str = "", plain_format: str = "", out_dir: Path | None = None,
                       stem: str = "", passive_wait: bool = False, n_parallel: int = 1,
                       think_budget: int | None = None, answer_prefix: str = "", unified_kv: bool = False,
                       template_kwargs: dict | None = None) -> dict:
    """The summary of `gguf` on `benchmark` (see the module docstring); GenerationError / BenchmarkError say why
    it could not run."""
    run = generate_benchmark(gguf, benchmark, n, k, seed, max_tokens, n_ctx, n_threads, sampling, system_prompt,
                             plain_format, passive_wait, n_parallel, think_budget, answer_prefix, unified_kv,
                             template_kwargs)
    return summarize_benchmark(run, out_dir, stem)


def generate_benchmark(gguf: Path, benchmark: str, n: int | None = None, k: int = 1, seed: int = 0,
                       max_tokens: int = 512, n_ctx: int = 0, n_threads: int = 2, sampling: dict | None = None,
                       system_prompt: str = "", plain_format: str = "", passive_wait: bool = False,
                       n_parallel: int = 1, think_budget: int | None = None, answer_prefix: str = "",
                       unified_kv: bool = False, template_kwargs: dict | None = None) -> dict:
    """The generating half (safe in a thread: no judging): the problems, their samples and how they were made."""
    started = time.perf_counter()
    sampling = dict(DEFAULT_SAMPLING if sampling is None else sampling)
    problems = load_benchmark(benchmark, n, seed, system_prompt)
    samples, child = generate_samples(Path(gguf), problems, k, max_tokens, n_ctx, n_threads, sampling, plain_format,
                                      passive_wait, n_parallel, think_budget, answer_prefix,
                                      unified_kv=unified_kv, template_kwargs=template_kwargs)
    return {"gguf": Path(gguf), "benchmark": benchmark, "problems": problems, "samples": samples, "k": k,
            "seed": seed, "sampling": sampling, "max_tokens": max_tokens, "threads": n_threads,
            "parallel": n_parallel, "unified_kv": unified_kv, "think_budget": think_budget, **child,
            "seconds": time.perf_counter() - started}


def summarize_benchmark(run: dict, out_dir: Path | None = None, stem: str = "", name: str = "",
                        one_chat: dict | None = None) -> dict:
    """The judging half: math-verify each sample, summarise, write the files. Main thread only: math-verify's
    timeouts use signal.alarm. `name`: what to call the benchmark (default: what was read, a name or a file).
    `one_chat`: the file's tokens/s and peak RSS serving one chat (`llama_runs.speed_benchmark`); they take the
    plain names, and this run's own (many sequences at once) keep them with the suffix `_batched`."""
    started = time.perf_counter()
    judged = judge_samples(run["samples"], run["problems"])
    gguf, benchmark = run["gguf"], run["benchmark"]
    summary = {"file": gguf.name, "file_bytes": gguf.stat().st_size, "benchmark": name or benchmark,
               **({"source": benchmark} if name and name != benchmark else {}),
               "subset": {"n": len(run["problems"]), "seed": run["seed"]}, "sampling": run["sampling"],
               "max_tokens": run["max_tokens"], "think_budget": run["think_budget"], "threads": run["threads"],
               "parallel_sequences": run["parallel"], "unified_kv": run["unified_kv"],
               **benchmark_summary(judged, run["k"]),
               "aggregate_tokens_per_second": round(sum(s["completion_tokens"] for s in judged)
                                                    / run["generation_seconds"], 2),
               "peak_rss_mib": run["peak_rss_mib"], "gpu_offload": run["gpu_offload"],
               "wall_seconds": round(run["seconds"] + time.perf_counter() - started, 1)}
    if one_chat is not None:
        summary["tokens_per_second_batched"] = summary.pop("tokens_per_second")
        summary["peak_rss_mib_batched"] = summary.pop("peak_rss_mib")
        summary |= one_chat
    if out_dir is not None:
        stem = stem or f"{gguf.stem}.{benchmark_label(benchmark)}"
        write_jsonl(Path(out_dir) / f"{stem}.samples.jsonl", judged)
        atomic_write_text(Path(out_dir) / f"{stem}.json", json.dumps(summary, indent=2))
    return summary
