"""Command line: ``python -m lib {run,plan,recipes,mask,data,teacher,gpu-check,eval,serve,push} …`` (see README for
examples)."""
from __future__ import annotations

import argparse
import json
import sys

from lib import gpu_check
from lib.data.filters import reply_matches_reference
from lib.data.rows import read_reasoning_rows
from lib.evaluate import cli as eval_cli
from lib.export import push
from lib.masking.check import run_data_check, run_mask_check
from lib.plan.recipe_plan import recipe_plan
from lib.recipe import ParamsError, list_recipes, load_recipe
from lib.runner import StageFailed, run_recipe
from lib.serve import cli as serve_cli
from lib.teacher import cli as teacher_cli
from lib.train.backends import TRANSFORMERS, UNSLOTH, BackendError, planned_backend, select_backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib", description="thinkdistill pipeline commands")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks for a recipe with papermill into runs/RECIPE/")
    run.add_argument("recipe")
    run.add_argument("--dry-run", action="store_true", help="no GPU, no download: validate everything")
    run.add_argument("--tiny", action="store_true",
                     help="the real chain on CPU with a tiny random model of the recipe's family (runs/RECIPE-tiny)")
    run.add_argument("--stages", help="comma-separated stage prefixes, e.g. 01,03 (default: all)")
    run.add_argument("--run-dir", default="", help="output folder (default runs/RECIPE[-dry-run|-tiny])")
    run.add_argument("--restart", action="store_true",
                     help="03 starts training at step 0, deleting its checkpoints (default: continue a killed run)")
    plan = sub.add_parser("plan", help="print the backend, memory plan, 04's RAM/disk and GGUF sizes as one JSON "
                                       "object")
    plan.add_argument("recipe")
    plan.add_argument("--backend", choices=[UNSLOTH, TRANSFORMERS],
                      help="plan this stack on the recipe's GPU (default: the one a real run uses, planned_backend)")
    sub.add_parser("recipes", help="list the recipes in params/")
    mask = sub.add_parser("mask", help="inspect response-only loss masks").add_subparsers(dest="mask_command",
                                                                                         required=True)
    check = mask.add_parser(
        "check", help="print what the mask trains for each conversation of a JSONL file, one JSON line each",
        description="One JSON line per conversation: id, n_tokens, n_trained, trained_text (+ untrained_turns). "
                    "Stops at the first problem: exit 1 with FILE:LINE: reason for a conversation the template "
                    "cannot mask or a malformed line (lines printed before it are valid), exit 2 for a set-up "
                    "error (tokenizer folder, template file, --template-kwargs, missing input file).")
    check.add_argument("--tokenizer", required=True, metavar="DIR", help="local tokenizer folder")
    check.add_argument("--conversations", required=True, metavar="FILE.jsonl",
                       help='lines of {"id": ..., "messages": [{"role": ..., "content": ...}]} (id optional)')
    check.add_argument("--chat-template", metavar="FILE.jinja", help="use this template instead of the tokenizer's")
    check.add_argument("--last-turn-only", action="store_true", help="train only the last assistant reply")
    check.add_argument("--template-kwargs", metavar="JSON", help='e.g. \'{"date_string": "26 Jul 2024"}\'')
    data = sub.add_parser("data", help="audit reasoning-trace data").add_subparsers(dest="data_command", required=True)
    data_check = data.add_parser(
        "check", help="audit a data file in any supported schema and print one JSON object",
        description="Reads PATH (JSONL[.gz], JSON, Parquet, CSV, or a dataset folder / hub name) and prints one JSON "
                    "object: rows read, kept, rejected per reason (first line numbers), duplicates, contaminated, "
                    "answer verification, token lengths and how many examples the recipe's max_length would cut. "
                    "Exit 0 when the file could be read, 2 with a one-line reason when it could not.")
    data_check.add_argument("path", help="file, dataset folder, or hub dataset name")
    data_check.add_argument("--recipe", help="measure lengths with this recipe's tokenizer, template, max_length")
    data_check.add_argument("--format", help="schema instead of auto-detection (see lib.data.schemas.SCHEMAS)")
    data_check.add_argument("--split", default="train", help="split of a dataset folder / hub dataset")
    data_check.add_argument("--config", help="config of a hub dataset")
    data_check.add_argument("--no-verify", action="store_true", help="skip answer verification (math-verify)")
    data_check.add_argument("--rejects", metavar="FILE.jsonl", help="also write every reject with its reason here")
    teacher = sub.add_parser("teacher", help="generate reasoning traces with a teacher model").add_subparsers(
        dest="teacher_command", required=True)
    teacher_cli.add_arguments(teacher.add_parser(
        "generate", help="run a recipe's teacher_generation block (resumable; prints one JSON line)"))
    gpu_check.add_arguments(sub.add_parser(
        "gpu-check", help="train a shrunk Llama-3.2 on every GPU path here; loss, peak memory vs plan as JSON",
        description="Real training steps on each path this machine can run (LoRA, distillation, NF4 QLoRA, 8-bit "
                    "optimizers, Unsloth), each in its own process; prints one JSON report. Exit 0 when every path "
                    "that could run ran and its loss fell, 1 otherwise, 2 when the check could not start."))
    eval_cli.add_arguments(sub.add_parser(
        "eval", help="judge a GGUF on a benchmark with llama.cpp: pass@1 with a 95 %% interval, maj@k, closure, loops",
        description="Generates K samples per problem with llama.cpp (the chat template embedded in the file), "
                    "judges the answers with math-verify and prints one JSON object: pass@1 (mean over the K samples, "
                    "95 %% bootstrap interval over problems), maj@K, pass@K, </think> closure, truncation and loop "
                    "rates, think/answer lengths, tokens/s, time to first token, peak RSS. Exit 2 with one line for "
                    "bad input."))
    serve_cli.add_arguments(sub.add_parser(
        "serve", help="an OpenAI-compatible chat server on a recipe's exported GGUF, the thought in reasoning_content",
        description="Serves POST /v1/chat/completions (streamed or not), GET /v1/models and GET /health on the "
                    "recipe's exported file with llama.cpp: the GGUF's own chat template, the recipe's template "
                    "variables and evaluation sampling as defaults (a request may override them), the <think> block "
                    "in message.reasoning_content and the answer in message.content (llama.cpp's --reasoning-format "
                    "deepseek). Prints one JSON line once it listens. Exit 2 with one line when it cannot start (no "
                    "exported file, no chat template, port in use)."))
    push.add_arguments(sub.add_parser(
        "push", help="upload a recipe's GGUF files and model card to a Hugging Face model repository",
        description="Uploads runs/RECIPE/04_merge_export/gguf/ (the .gguf files, their Ollama Modelfiles, README.md) "
                    "in one commit, creating the repository if needed. The token is read from HF_TOKEN only. "
                    "--dry-run prints the files as JSON and needs no token. Exit 2 with one line for what to fix "
                    "here, 1 when the hub cannot be reached or refuses."))
    args = parser.parse_args(argv)

    if args.command == "data":
        return run_data_check(args)
    if args.command == "mask":  # the check needs no recipe
        return run_mask_check(args.tokenizer, args.conversations, args.chat_template, args.last_turn_only,
                              args.template_kwargs)
    if args.command == "teacher":
        return teacher_cli.main(args, read_reasoning_rows, reply_matches_reference)
    if args.command == "gpu-check":
        return gpu_check.main(args)
    if args.command == "eval":
        return eval_cli.main(args)
    if args.command == "serve":
        return serve_cli.run(args)
    if args.command == "push":
        return push.run(args)
    try:
        if args.command == "recipes":
            print("\n".join(list_recipes()))
        elif args.command == "plan":
            print(json.dumps(plan_on_backend(load_recipe(args.recipe), args.backend), indent=2))
        else:
            try:
                timings = run_recipe(args.recipe, args.dry_run, args.stages, args.run_dir, tiny=args.tiny,
                                     restart=args.restart, live=True)
            except StageFailed as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            print(json.dumps({"recipe": args.recipe, "dry_run": args.dry_run, "tiny": args.tiny, "seconds": timings}))
    except (ParamsError, ValueError, BackendError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def plan_on_backend(recipe, backend: str | None) -> dict:
    """`recipe_plan` on the backend a real run uses (`planned_backend`), or on `backend` on the recipe's GPU."""
    if backend is None:
        return recipe_plan(recipe, *planned_backend(recipe))
    chosen = select_backend(recipe, has_cuda=True, has_unsloth=backend == UNSLOTH)
    return recipe_plan(recipe, chosen, f"--backend {backend}: the recipe's GPU with this stack")


if __name__ == "__main__":
    sys.exit(main())
