"""Data-stage scale: ingest + validate + verify + deduplicate + decontaminate + length-audit 100,000 rows.

Usage: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/data_ingest.py [--rows 100000] [--recipe smollm2_135m]``

Synthesises a JSONL of `--rows` triplet rows from GSM8K train (numbers and names varied so rows differ, the
answer stated in the solution so verification has work), with a share of faults mixed in (malformed JSON,
empty thinking, a missing field, invalid UTF-8, exact copies), then runs `python -m lib data check` on it in a
fresh process, once with answer verification and once without, and reports rows/s and the process's peak RSS
(VmHWM), next to the same check on the first 1,000 rows (imports + tokenizer: what the rows add is the
difference). Lengths are measured with the recipe's tokenizer and chat template, batched (one fast-tokenizer call per
256 rows). One JSON object is printed and written to `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `lib` when run as a plain script

from lib.data.rows import read_reasoning_rows  # noqa: E402

NAMES = "Ava Ben Cai Dana Eli Fay Gus Hana Ivo Jin Kai Lea Milo Nia Omar Pia Quin Rosa Sami Tara".split()
FAULTS = 0.02  # share of faulty rows (split evenly over the five kinds)


def synthesise(path: Path, rows: int, seed: int = 0) -> dict:
    """Write `rows` JSONL lines; return how many of each fault were planted."""
    rng = random.Random(seed)
    base, _ = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k")
    planted = {"malformed JSON": 0, "empty thinking": 0, "missing field": 0, "invalid UTF-8": 0, "exact copy": 0}
    previous = None
    with open(path, "wb") as out:
        for i in range(rows):
            source = base[i % len(base)]
            shift = rng.randint(1, 9)
            name = rng.choice(NAMES)
            problem = _vary(source["messages"][0]["content"], shift, name)
            thinking = _vary(source["messages"][1]["think"], shift, name) + f" (check {i})"
            row = {"problem": problem, "thinking": thinking, "solution": f"The answer is {source['answer']}.",
                   "answer": source["answer"]}
            line = json.dumps(row, ensure_ascii=False).encode()
            if rng.random() < FAULTS:
                kind = rng.choice(list(planted))
                planted[kind] += 1
                if kind == "malformed JSON":
                    line = line[:len(line) // 2]
                elif kind == "empty thinking":
                    line = json.dumps({**row, "thinking": "  "}).encode()
                elif kind == "missing field":
                    line = json.dumps({k: v for k, v in row.items() if k != "solution"}).encode()
                elif kind == "invalid UTF-8":
                    line = line.replace(b"The answer", b"The \xff answer")
                elif previous is not None:
                    line = previous
            out.write(line + b"\n")
            previous = line
    return planted


def _vary(text: str, shift: int, name: str) -> str:
    """Same problem shape, other numbers and a name in front: a new row, not a near-duplicate."""
    return f"{name}: " + re.sub(r"\d+", lambda m: str(int(m.group()) + shift), text)


def run_check(path: Path, recipe: str, verify: bool) -> dict:
    """`python -m lib data check` in a fresh process (its own peak RSS), timed from outside too."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = ("import json; from lib.masking.check import data_check_report as data_check\n"
            "from lib.evaluate.llama_runs import peak_rss_mib\n"
            f"report = data_check({str(path)!r}, {recipe!r}, verify_answers={verify})\n"
            "report['peak_rss_mib'] = peak_rss_mib(); print(json.dumps(report))")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["wall_seconds_with_imports"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--recipe", default="smollm2_135m")
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "data_ingest.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.jsonl"
        planted = synthesise(path, args.rows)
        size_mib = round(path.stat().st_size / 2 ** 20, 1)
        baseline = Path(tmp) / "first_1000.jsonl"
        with open(path, "rb") as source, open(baseline, "wb") as first:
            first.writelines(line for _, line in zip(range(1000), source))
        runs = {"with answer verification": run_check(path, args.recipe, verify=True),
                "without answer verification": run_check(path, args.recipe, verify=False),
                # the same process on 1,000 rows: imports + tokenizer, so the difference is what rows cost
                "baseline: first 1,000 rows, without verification": run_check(baseline, args.recipe, verify=False)}
    keep = ("rows_read", "kept", "rejected_per_reason", "contaminated", "answer_verification", "seconds",
            "rows_per_s", "peak_rss_mib", "wall_seconds_with_imports")
    result = {"rows": args.rows, "file_mib": size_mib, "recipe": args.recipe, "planted_faults": planted,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "runs": {name: {k: report[k] for k in keep} | {"lengths": report["lengths"]}
                       for name, report in runs.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
