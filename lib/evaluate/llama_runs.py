"""Judge every file of a run on every benchmark the recipe names, then time each file alone.

Usage: ``results = evaluate_files(recipe, runs, benchmarks, out_dir)``
(runs: ``[{"label", "path", "sampling"[, "think_budget", "benchmarks", "engine"]}]``; benchmarks:
``{name: (source, n)}``, source a benchmark name or a prompts file; a run with "benchmarks" is judged on those only)

Each (file, benchmark) is `lib.evaluate.benchmark_eval`'s generate (llama.cpp in a child process, so its peak
RSS is its own) then summarise: ``<label>.<benchmark>.json`` and its judged samples (``….samples.jsonl``) beside
it. Each file decodes `eval_sequences` sequences at once (`lib.evaluate.batched`); files may also share the CPU
(`eval_parallel` at a time, threads split, OpenMP threads waiting passively so they do not steal the cores from
each other); speed is measured afterwards one file at a time on `eval_speed_threads` with spinning threads,
what a device running only this model would see (2 threads gave 124 tok/s spinning vs 34 passive on SmolLM2 Q8_0).
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from lib.evaluate.benchmark_eval import LLAMA_CPP, TRANSFORMERS, generate_benchmark, summarize_benchmark
from lib.evaluate.benchmarks import load_benchmark
from lib.evaluate.generate import generate_samples
from lib.paths import atomic_write_text
from lib.progress import Progress
from lib.recipe import Recipe

SPEED_PROBLEMS, SPEED_MAX_TOKENS = 3, 128


def speed_benchmark(gguf: Path, problems: list[dict], n_threads: int, sampling: dict, n_ctx: int = 0,
                    plain_format: str = "", max_tokens: int = SPEED_MAX_TOKENS,
                    template_kwargs: dict | None = None) -> dict:
    """Generation tokens/s and peak RSS of one file serving one chat (`problems` one at a time, one sample each),
    alone, threads spinning: what a device running only this model sees."""
    samples, child = generate_samples(gguf, problems, 1, max_tokens, n_ctx, n_threads, sampling, plain_format,
                                      template_kwargs=template_kwargs)
    seconds = sum(s["seconds"] for s in samples)
    return {"tokens_per_second": round(sum(s["completion_tokens"] for s in samples) / seconds, 2),
            "speed_prompts": len(samples), "speed_threads": n_threads, "peak_rss_mib": child["peak_rss_mib"]}


def evaluate_files(recipe: Recipe, runs: list[dict], benchmarks: dict[str, tuple[str, int | None]],
                   out: Path) -> list[dict]:
    """One summary per (run, benchmark), benchmarks outer, each with its label, benchmark name and the file's
    speed alone."""
    plain = recipe.plain_format if recipe.chat_format == "plain" else ""
    threads = max(1, recipe.eval_n_threads // recipe.eval_parallel)
    jobs = [(run, name, source, n) for name, (source, n) in benchmarks.items() for run in runs
            if name in run.get("benchmarks", benchmarks)]

    def generate(job) -> dict:
        run, _, source, n = job
        return generate_benchmark(run["path"], source, n, recipe.eval_k, recipe.seed, recipe.eval_max_tokens,
                                  recipe.eval_n_ctx, threads, run["sampling"], recipe.system_prompt, plain,
                                  passive_wait=recipe.eval_parallel > 1, n_parallel=recipe.eval_sequences,
                                  think_budget=run.get("think_budget"), answer_prefix=recipe.eval_answer_prefix,
                                  unified_kv=recipe.eval_unified_kv, template_kwargs=recipe.chat_template_kwargs,
                                  engine=run.get("engine", LLAMA_CPP))

    timed = [run for run in runs  # each GGUF timed once alone (not its think-budget runs, not the HF model)
             if run.get("think_budget") is None and run.get("engine") != TRANSFORMERS]
    progress = Progress(len(jobs) + len(timed), "05 evaluation", unit="run")
    with ThreadPoolExecutor(max_workers=recipe.eval_parallel) as pool:  # judging stays in this (the main) thread
        futures = {pool.submit(generate, job): job for job in jobs}
        for future in as_completed(futures):
            run, name, _, _ = futures[future]
            progress.advance(f"{run['label']} on {name} {'failed' if future.exception() else 'decoded'}")
        generated = [future.result() for future in futures]  # in `jobs` order; a failed job raises here
    speed_threads = recipe.eval_speed_threads or recipe.eval_n_threads
    first_source, first_n = next(iter(benchmarks.values()))
    speed_problems = load_benchmark(first_source, first_n, recipe.seed, recipe.system_prompt)[:SPEED_PROBLEMS]
    speeds = {}
    for run in timed:
        with progress.step(f"{run['label']} timed alone"):
            speeds[run["label"]] = speed_benchmark(run["path"], speed_problems, speed_threads, run["sampling"],
                                                   recipe.eval_n_ctx, plain,
                                                   template_kwargs=recipe.chat_template_kwargs)
        atomic_write_text(out / f"{run['label']}.speed.json", json.dumps(speeds[run["label"]], indent=2))
    results = [{"label": run["label"], **summarize_benchmark(made, out, f"{run['label']}.{name}", name,
                                                             speeds.get(run["label"]))}
               for (run, name, _, _), made in zip(jobs, generated)]
    return results
