"""Run every notebook for every recipe, as a dry-run (what CI runs on every change) or --tiny (the real chain of
each recipe with a tiny model of its family): no GPU, no download.

Usage: ``python -m lib.dryrun_matrix [--tiny] [--jobs N] [recipe …]``  (exit 1 if any notebook fails)

Writes `runs/dryrun_matrix.json` (or `runs/tiny_matrix.json`): wall time per stage of each recipe and, for --tiny,
what each recipe's run reported (`lib.report.tiny_report`): its GGUF files, the stand-ins for CUDA-only parts, the
training memory plan of the tiny model next to the peak RSS measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from lib.paths import atomic_write_text, run_dir, runs_root
from lib.recipe import list_recipes
from lib.report import tiny_report
from lib.runner import StageFailed, run_recipe


# Two recipes side by side: dry-runs wait on kernels and imports, so two overlap well on 2 cores. Tiny runs also
# compute, so side by side each gets its share of the cores (`threads_per_job`, through OMP_NUM_THREADS: torch's and
# a tiny run's llama.cpp thread counts): spinning 2 threads each on 2 cores, 05 of llama32_1b_kd and llama32_3b took
# 264 s and 238 s side by side against 19 s and 21 s one after the other; with a core each, 11 tiny chains took 934 s.
DEFAULT_JOBS = 2


def usable_cores() -> int:
    """The cores this process may run on (a container's or cpuset's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """The cores each of `jobs` side-by-side runs may use (at least one)."""
    return max(1, (cores or usable_cores()) // jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="default: every recipe in params/")
    parser.add_argument("--tiny", action="store_true", help="the real chain with tiny models instead of dry-runs")
    parser.add_argument("--jobs", type=int, default=None,
                        help=f"recipes run side by side, one kernel each (default {DEFAULT_JOBS})")
    args = parser.parse_args(argv)
    recipes = args.recipes or list_recipes()
    jobs = min(args.jobs or DEFAULT_JOBS, len(recipes))  # one recipe alone keeps every core
    mode = "tiny" if args.tiny else "dry-run"
    if args.tiny and jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # the kernels inherit it (lib.tiny.tiny_threads)
        os.environ["OMP_NUM_THREADS"] = str(threads_per_job(jobs))
    started = time.time()

    def one(recipe: str):
        try:
            timings = run_recipe(recipe, dry_run=not args.tiny, tiny=args.tiny,
                                 log=lambda msg: print(msg, flush=True))
            return recipe, timings, None
        except StageFailed as err:
            return recipe, None, str(err)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(one, recipes))
    failures = [(recipe, error) for recipe, _, error in outcomes if error]
    summary = {"mode": mode, "recipes": len(recipes), "notebooks": sum(len(t or {}) for _, t, _ in outcomes),
               "failed": [r for r, _ in failures], "wall_seconds": round(time.time() - started, 1)}
    details = {"timings": {r: t for r, t, _ in outcomes}}
    if args.tiny:
        details["reports"] = {r: tiny_report(run_dir(r, mode)) for r, t, _ in outcomes if t}
    runs_root().mkdir(parents=True, exist_ok=True)
    name = "tiny_matrix.json" if args.tiny else "dryrun_matrix.json"
    atomic_write_text(runs_root() / name, json.dumps(summary | details, indent=2))
    for recipe, error in failures:
        print(f"FAILED {recipe}: {error}", file=sys.stderr)
    print(json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
