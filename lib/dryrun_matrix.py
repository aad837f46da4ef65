"""Dry-run every notebook for every recipe (what CI runs): no GPU, no download, real tokenizers.

Usage: ``python -m lib.dryrun_matrix [--jobs 2] [recipe …]``  (exit 1 if any notebook fails)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from lib.recipe import list_recipes
from lib.paths import RUNS_DIR
from lib.runner import StageFailed, run_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="default: every recipe in params/")
    parser.add_argument("--jobs", type=int, default=2, help="recipes run side by side (one kernel each)")
    args = parser.parse_args(argv)
    recipes = args.recipes or list_recipes()
    started = time.time()

    def one(recipe: str):
        try:
            return recipe, run_recipe(recipe, dry_run=True, log=lambda msg: print(msg, flush=True)), None
        except StageFailed as err:
            return recipe, None, str(err)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(one, recipes))
    failures = [(recipe, error) for recipe, _, error in outcomes if error]
    summary = {"recipes": len(recipes), "notebooks": sum(len(t or {}) for _, t, _ in outcomes),
               "failed": [r for r, _ in failures], "wall_seconds": round(time.time() - started, 1)}
    RUNS_DIR.mkdir(exist_ok=True)
    (RUNS_DIR / "dryrun_matrix.json").write_text(json.dumps(summary | {"timings": {r: t for r, t, _ in outcomes}},
                                                            indent=2))
    for recipe, error in failures:
        print(f"FAILED {recipe}: {error}", file=sys.stderr)
    print(json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
