"""``python -m lib eval GGUF --benchmark gsm8k|math500|aime24|FILE.jsonl [--n N] [--k K] [--max-tokens M]``.

Usage: ``add_arguments(subparsers.add_parser("eval"))``, then ``sys.exit(main(args))``

Prints one JSON object (`lib.evaluate.benchmark_eval.evaluate_benchmark`'s summary). Exit 0 when the file was
judged, 2 with one line ``error: …`` when it could not be: a benchmark that does not exist, a prompts file with a
malformed line (FILE:LINE), a file that is not a GGUF or has no chat template, k > 1 with greedy decoding.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lib.evaluate.benchmark_eval import DEFAULT_SAMPLING, evaluate_benchmark
from lib.evaluate.benchmarks import BENCHMARKS, BenchmarkError
from lib.evaluate.generate import GenerationError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `eval`."""
    parser.add_argument("gguf", type=Path, help="the GGUF file to judge")
    parser.add_argument("--benchmark", required=True, metavar="NAME|FILE.jsonl",
                        help=f"{', '.join(BENCHMARKS)}, or a JSONL file of {{\"id\", \"prompt\" or \"messages\", "
                             f"\"answer\"}} lines")
    parser.add_argument("--n", type=int, default=None, help="judge N problems drawn with --seed (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="draws the subset and seeds the sampling (default 0)")
    parser.add_argument("--k", type=int, default=1, help="samples per problem: pass@1 is their mean (default 1)")
    parser.add_argument("--max-tokens", type=int, default=512, help="generation budget per sample (default 512)")
    parser.add_argument("--temperature", type=float, default=DEFAULT_SAMPLING["temperature"],
                        help="0 = greedy (k must be 1); default 0.6, DeepSeek-R1's")
    parser.add_argument("--top-p", type=float, default=DEFAULT_SAMPLING["top_p"], help="default 0.95")
    parser.add_argument("--repeat-penalty", type=float, default=1.0,
                        help="llama.cpp's; default 1.0 (none; the CPU recipes' 05 uses 1.1)")
    parser.add_argument("--system", default="", help="a system prompt before every problem")
    parser.add_argument("--template-kwargs", default="{}", metavar="JSON",
                        help='variables of the chat template, e.g. \'{"date_string": "26 Jul 2024"}\' (Llama 3.2 '
                             "writes today's date without it)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    parser.add_argument("--parallel", type=int, default=4,
                        help="sequences decoded at once, continuous batching (default 4)")
    parser.add_argument("--unified-kv", action="store_true",
                        help="one KV cache for all sequences: faster, but an answer near a tie may turn with "
                             "--parallel (default: a cache per sequence, the same tokens as one at a time)")
    parser.add_argument("--flash-attn", action="store_true",
                        help="llama.cpp's fused attention: faster with several sequences at once, other arithmetic "
                             "than the default (answers can turn at a near-tie)")
    parser.add_argument("--n-ctx", type=int, default=0,
                        help="context per sequence (default: the longest prompt + budget); memory is this x --parallel")
    parser.add_argument("--think-budget", type=int, metavar="TOKENS",
                        help="end a thought after TOKENS tokens with </think> (+ --answer-prefix) and let it answer")
    parser.add_argument("--answer-prefix", default="", help='written after a forced </think>, e.g. "The answer is"')
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="also write DIR/<file>.<benchmark>.json and every judged sample (.samples.jsonl)")


def main(args: argparse.Namespace) -> int:
    """Judge the file, print its summary as one JSON object."""
    if args.parallel < 1:
        print(f"error: --parallel {args.parallel}: decode at least 1 sequence at a time", file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} is a file: name a folder for the JSON and the samples", file=sys.stderr)
        return 2
    try:
        template_kwargs = json.loads(args.template_kwargs)
        assert isinstance(template_kwargs, dict)
    except (json.JSONDecodeError, AssertionError):
        print(f"error: --template-kwargs {args.template_kwargs!r} is not a JSON object, e.g. "
              '\'{"date_string": "26 Jul 2024"}\'', file=sys.stderr)
        return 2
    sampling = {"temperature": args.temperature, "repeat_penalty": args.repeat_penalty}
    if args.temperature:
        sampling |= {"top_p": args.top_p, "seed": args.seed}
    try:
        summary = evaluate_benchmark(args.gguf, args.benchmark, args.n, args.k, args.seed, args.max_tokens,
                                     args.n_ctx, args.threads, sampling, args.system, out_dir=args.out,
                                     n_parallel=args.parallel, think_budget=args.think_budget,
                                     answer_prefix=args.answer_prefix, unified_kv=args.unified_kv,
                                     template_kwargs=template_kwargs, flash_attn=args.flash_attn)
    except (BenchmarkError, GenerationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
