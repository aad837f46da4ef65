"""Judge one GGUF file on one benchmark: generate (llama.cpp, a child process), judge (math-verify), summarise.

Usage: ``summary = evaluate_benchmark(Path("m-Q8_0.gguf"), "gsm8k", n=200, k=4, max_tokens=512)``
(``python -m lib eval m-Q8_0.gguf --benchmark gsm8k --n 200 --k 4`` prints the same object)

The summary holds what `lib.evaluate.metrics.benchmark_summary` computes plus what was run (file, benchmark,
subset, sampling, threads) and the generating process's peak RSS; with `out_dir`, it is written to
``<out_dir>/<label>.<benchmark>.json`` and every judged sample to ``….samples.jsonl`` beside it.
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
    """Each generated sample with its judgement against its problem's reference answer."""
    answers = {p["id"]: p["answer"] for p in problems}
    return [{**s, **judge_sample(s["text"], answers[s["problem_id"]], s["prompt_opens_think"])} for s in samples]


def benchmark_label(benchmark: str) -> str:
    """A file-name-safe name for the benchmark: its name, or a prompts file's stem."""
    return Path(benchmark).name.removesuffix(".gz").removesuffix(".jsonl") if benchmark.endswith(
        (".jsonl", ".jsonl.gz")) else benchmark


def evaluate_benchmark(gguf: Path, benchmark: str, n: int | None = None, k: int = 1, seed: int = 0,
                       max_tokens: int = 512, n_ctx: int = 0, n_threads: int = 2, sampling: dict | None = None,
                       system_prompt: str = "", plain_format: str = "", out_dir: Path | None = None,
                       label: str = "", passive_wait: bool = False) -> dict:
    """The summary of `gguf` on `benchmark` (see the module docstring); GenerationError / BenchmarkError say why
    it could not run."""
    started = time.perf_counter()
    sampling = dict(DEFAULT_SAMPLING if sampling is None else sampling)
    problems = load_benchmark(benchmark, n, seed, system_prompt)
    samples, peak_rss = generate_samples(Path(gguf), problems, k, max_tokens, n_ctx, n_threads, sampling,
                                         plain_format, passive_wait)
    judged = judge_samples(samples, problems)
    summary = {"file": Path(gguf).name, "file_bytes": Path(gguf).stat().st_size, "benchmark": benchmark,
               "subset": {"n": len(problems), "seed": seed}, "sampling": sampling, "max_tokens": max_tokens,
               "threads": n_threads, **benchmark_summary(judged, k), "peak_rss_mib": peak_rss,
               "wall_seconds": round(time.perf_counter() - started, 1)}
    if out_dir is not None:
        stem = f"{label or Path(gguf).stem}.{benchmark_label(benchmark)}"
        write_jsonl(Path(out_dir) / f"{stem}.samples.jsonl", judged)
        atomic_write_text(Path(out_dir) / f"{stem}.json", json.dumps(summary, indent=2))
    return summary
