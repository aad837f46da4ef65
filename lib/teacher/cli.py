"""``python -m lib teacher generate --recipe R [--rows N]``: run a recipe's `teacher_generation` block from a shell.

Usage: ``add_arguments(subparsers.add_parser("generate"))``, then ``sys.exit(main(args, read_reasoning_rows,
reply_matches_reference))``

Reading prompts in any schema and verifying answers belong to the data stage, which this package may not
import: `lib/__main__.py` passes them in. Prints one JSON line (this run's counts, the file's totals, where the
kept traces went). Exit 0 when every prompt has a reply, 1 when some requests failed (they are in the failure
log; run the command again to retry them), 2 with a one-line ``error: …`` for a problem in the recipe, its
block or its prompts, or an output another run is writing.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from lib.recipe import load_recipe
from lib.rejects import reject_counts
from lib.teacher.config import teacher_settings
from lib.teacher.generate import PromptFormatError, run_teacher
from lib.teacher.store import OutputLockedError
from lib.teacher.verdicts import Verify

ReadPrompts = Callable[..., tuple[list, list]]  # (path, prompts_format, limit=N) -> (canonical rows, rejects)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `teacher generate`."""
    parser.add_argument("--recipe", required=True, help="recipe in params/ whose teacher_generation block to run")
    parser.add_argument("--rows", type=int, default=None, metavar="N",
                        help="ask only the first N prompts (default: the block's rows; 0 = all)")


def main(args: argparse.Namespace, read_prompts: ReadPrompts, verify: Verify | None) -> int:
    """Generate the recipe's traces, write the kept ones beside the output, print one JSON summary line."""
    try:
        recipe = load_recipe(args.recipe)
        if not recipe.teacher_generation:
            raise ValueError(f"recipe {args.recipe!r} has no teacher_generation block (README: Data)")
        try:
            settings = teacher_settings(recipe.teacher_generation)
        except (ValueError, TypeError) as err:
            raise ValueError(f"recipe {args.recipe!r}: teacher_generation: {err}") from err
        rows = settings.rows if args.rows is None else args.rows
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise ValueError(f"rows: {rows!r} must be an integer >= 0 (0 = all prompts)")
        prompts, prompt_rejects = read_prompts(settings.prompts, settings.prompts_format, limit=rows)
    # ValueError: ParamsError, TeacherConfigError, a missing key or an unknown prompts schema; TypeError: an
    # unknown TeacherConfig field in the block; OSError: a prompts file that cannot be read.
    except (ValueError, TypeError, OSError) as err:
        return _error(err)
    try:
        summary = run_teacher(settings, prompts, verify, progress=sys.stderr.isatty())
    # Raised before the first request: a prompt that cannot be sent, or another run writing the same output.
    # Anything later (a failed request is not an exception) is a bug, shown with its traceback.
    except (PromptFormatError, OutputLockedError) as err:
        return _error(err)
    print(json.dumps({"recipe": args.recipe, **summary, "prompt_rejects": reject_counts(prompt_rejects)},
                     ensure_ascii=False))
    return 1 if summary["failed"] else 0


def _error(err: Exception) -> int:
    print(f"error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
    return 2
