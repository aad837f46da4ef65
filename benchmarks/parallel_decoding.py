"""Aggregate tokens/s of llama.cpp decoding 1 sequence at a time vs N at once, same file, same problems, same seeds.

Usage: ``python benchmarks/parallel_decoding.py [GGUF] [--n 16] [--parallel 4] [--max-tokens 256] [--rounds 2]
[--unified-kv] [--flash-attn]``
(default GGUF: the demo's distilled Q8_0, runs/smollm2_135m/04_merge_export/gguf/smollm2_135m-Q8_0.gguf)

Both sides run in this one process's children, one after the other (never two at once: they would share the
cores), alternating over `--rounds`, threads spinning (OMP_WAIT_POLICY unset), the recipe's sampling. Prints per
side: aggregate tokens/s (all generated tokens / wall time of the decoding), closure and pass@1 on the problems,
then the ratio. Writes runs/benchmarks/parallel_decoding_<N>[_unified][_flash].json. `--unified-kv`: one cache for
all sequences (see lib.evaluate.batched: faster, not exact). `--flash-attn`: llama.cpp's fused attention on both
sides (its CPU kernel skips the masked cells that the plain attention multiplies through).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `lib` when run as a plain script

from lib.evaluate.benchmark_eval import generate_benchmark, summarize_benchmark  # noqa: E402
from lib.paths import atomic_write_text, runs_root  # noqa: E402
from lib.recipe import load_recipe  # noqa: E402

DEMO_Q8 = runs_root() / "smollm2_135m" / "04_merge_export" / "gguf" / "smollm2_135m-Q8_0.gguf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", nargs="?", type=Path, default=DEMO_Q8)
    parser.add_argument("--benchmark", default="gsm8k")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--unified-kv", action="store_true", help="one KV cache for all sequences (faster, not exact)")
    parser.add_argument("--flash-attn", action="store_true", help="llama.cpp's fused attention, on both sides")
    args = parser.parse_args()
    if not args.gguf.is_file():
        sys.exit(f"{args.gguf} not found: run `python -m lib run smollm2_135m` (make demo) first, or name a GGUF")
    sampling = load_recipe("smollm2_135m").eval_sampling()
    sides = {1: [], args.parallel: []}
    for _ in range(args.rounds):
        for parallel in sides:
            run = generate_benchmark(args.gguf, args.benchmark, args.n, 1, 0, args.max_tokens, 0, args.threads,
                                     sampling, n_parallel=parallel, unified_kv=args.unified_kv,
                                     flash_attn=args.flash_attn)
            sides[parallel].append(summarize_benchmark(run))
    rows = {}
    for parallel, summaries in sides.items():
        speeds = [s["aggregate_tokens_per_second"] for s in summaries]
        rows[parallel] = {"aggregate_tokens_per_second": statistics.median(speeds), "runs": speeds,
                          "closure_rate": [s["closure_rate"] for s in summaries],
                          "pass@1": [s["pass@1"]["mean"] for s in summaries],
                          "tokens": [s["completion_tokens"]["mean"] for s in summaries]}
        print(f"{parallel} sequence(s) at once: {rows[parallel]['aggregate_tokens_per_second']:.1f} tok/s "
              f"(runs {speeds}), closure {rows[parallel]['closure_rate']}, pass@1 {rows[parallel]['pass@1']}")
    ratio = rows[args.parallel]["aggregate_tokens_per_second"] / rows[1]["aggregate_tokens_per_second"]
    print(f"ratio {args.parallel} at once / 1 at a time: {ratio:.2f}x  ({args.gguf.name}, {args.benchmark} "
          f"n={args.n}, max {args.max_tokens} tokens, {args.threads} threads, "
          f"{'one unified KV cache' if args.unified_kv else 'a KV cache per sequence'}"
          f"{', flash attention' if args.flash_attn else ''})")
    suffix = ("_unified" if args.unified_kv else "") + ("_flash" if args.flash_attn else "")
    out = runs_root() / "benchmarks" / f"parallel_decoding_{args.parallel}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"file": args.gguf.name, "benchmark": args.benchmark, "n": args.n,
                                       "max_tokens": args.max_tokens, "threads": args.threads,
                                       "unified_kv": args.unified_kv, "flash_attn": args.flash_attn,
                                       "sides": {str(k): v for k, v in rows.items()}, "ratio": round(ratio, 3)},
                                      indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
