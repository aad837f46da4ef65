"""Stage 03 without its notebook, in every process of a data-parallel launch.

Usage: ``accelerate launch --config_file accelerate/ddp.yaml -m lib.train_launch RECIPE [--restart]``
(or ``torchrun --nproc_per_node N -m lib.train_launch RECIPE``), after ``python -m lib run RECIPE --stages 01,02``;
then ``python -m lib run RECIPE --stages 04,05``.

Each process reads 02's examples and runs 03's `run_training`; the Trainer shards the batches, and the main process
alone writes the adapter, the training log and 03's manifest (`lib.train.backends.is_main_process`). A run that
is launched again continues from its last complete checkpoint, as the notebook does. Its own entry point (not a
`python -m lib` command) because unsloth must be imported before transformers when it will train, and only here.
"""
import lib.train.unsloth_first  # noqa: F401, I001  first: see lib.train.unsloth_first

import argparse
import json
import os
import sys

from lib.modes import make_run_config
from lib.recipe import ParamsError
from lib.run_config import StaleStage
from lib.train.backends import BackendError, is_main_process
from lib.train.stage import read_masked_examples, run_training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.train_launch", description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--tiny", action="store_true", help="the recipe's --tiny run (runs/RECIPE-tiny)")
    parser.add_argument("--run-dir", default="", help="the run folder 01 and 02 wrote (default runs/RECIPE[-tiny])")
    parser.add_argument("--restart", action="store_true", help="start at step 0, deleting the checkpoints")
    args = parser.parse_args(argv)
    sharded = [v for v in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
               if os.environ.get(v, "").lower() in ("1", "true")]
    if sharded:  # rank 0 alone saves the adapter: with sharded weights it would write a partial one, silently
        print(f"error: {sharded[0]} is set, but lib.train_launch saves the adapter from rank 0 only and does not yet "
              "gather sharded (FSDP / ZeRO-3) weights: launch with accelerate/ddp.yaml", file=sys.stderr)
        return 2
    try:
        cfg = make_run_config(args.recipe, run_dir=args.run_dir, tiny=args.tiny)
        dataset, max_length = read_masked_examples(cfg)
        facts = run_training(cfg, dataset, max_length, restart=args.restart)
    except (ParamsError, BackendError, FileNotFoundError, StaleStage) as err:  # each names its fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_main_process():
        print(json.dumps(facts, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
