"""`make bench-eval`: 05 at full size on the CPU demo's files — base, F16, Q8_0, Q4_K_M (+ the no-penalty
ablation and the merged HF model) on the 50 held-out problems, GSM8K 200, MATH-500 50 and AIME24 30, k = 4 each,
the quant ladder and the think-budget curve at 16/32/64/128 tokens on every distilled file.

Usage: ``python benchmarks/full_eval.py [--run-dir runs/smollm2_135m-full-eval] [--sizes gsm8k=200,math500=50]``

The demo's run (runs/smollm2_135m, 01-04) is linked, not copied, into a run folder of its own (hard links: no
extra disk), so the demo's own 05 stays as it is; the recipe is the demo's params file with the full-size keys
(FULL_SIZE) in a params folder of its own (THINKDISTILL_PARAMS). Prints the wall time and the results table;
everything else is in <run-dir>/05_eval_edge/ (results.json, the executed notebook).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
RECIPE = "smollm2_135m"
FULL_SIZE = {"eval_benchmarks": {"heldout": 0, "gsm8k": 200, "math500": 50, "aime24": 30}, "eval_k": 4,
             "eval_max_tokens": 512, "eval_think_budgets": [16, 32, 64, 128], "eval_think_budget_files": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=PROJECT / "runs" / f"{RECIPE}-full-eval")
    parser.add_argument("--sizes", default="", help="override benchmark sizes, e.g. gsm8k=20,math500=5 (a trial)")
    parser.add_argument("--k", type=int, default=FULL_SIZE["eval_k"])
    parser.add_argument("--max-tokens", type=int, default=FULL_SIZE["eval_max_tokens"])
    parser.add_argument("--source", type=Path, default=PROJECT / "runs" / RECIPE,
                        help="the run whose 01-04 are judged (a trial of the mechanics: runs/smollm2_135m-tiny)")
    args = parser.parse_args()
    demo = args.source
    if demo == PROJECT / "runs" / RECIPE and not (demo / "04_merge_export" / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "lib", "run", RECIPE, "--stages", "01,02,03,04"], cwd=PROJECT,
                       check=True)
    if not args.run_dir.exists():  # the demo's 01-04, hard-linked
        for stage in ("01_data", "02_masking", "03_train", "04_merge_export"):
            shutil.copytree(demo / stage, args.run_dir / stage, copy_function=os.link)
    params = yaml.safe_load((PROJECT / "params" / f"{RECIPE}.yaml").read_text())
    params |= FULL_SIZE | {"eval_k": args.k, "eval_max_tokens": args.max_tokens}
    for item in filter(None, args.sizes.split(",")):
        name, size = item.split("=")
        params["eval_benchmarks"][name] = int(size)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / f"{RECIPE}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lib", "run", RECIPE, "--stages", "05", "--run-dir", str(args.run_dir)],
                       cwd=PROJECT, check=True, env={**os.environ, "THINKDISTILL_PARAMS": folder,
                                                     "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - started
    results = json.loads((args.run_dir / "05_eval_edge" / "results.json").read_text())
    print(f"05 at {json.dumps(params['eval_benchmarks'])}, k = {params['eval_k']}: {wall / 60:.1f} min wall")
    print("| file | benchmark | problems x k | budget | pass@1 [95 % CI] | closure | loops | think p50 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["results"]:
        p = r["pass@1"]
        print(f"| {r['label']} | {r['benchmark']} | {r['problems']} x {r['k']} | {r.get('think_budget') or '-'} | "
              f"{100 * p['mean']:.1f} % [{100 * p['low']:.1f}-{100 * p['high']:.1f}] | "
              f"{100 * r['closure_rate']:.0f} % | {100 * r['loop_rate']:.0f} % | {r['think_tokens'].get('p50')} |")
    print("flagged:", results["flagged"] or "none")


if __name__ == "__main__":
    main()
