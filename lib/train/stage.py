"""Stage 03: LoRA SFT (or logit distillation) on the masked examples 02 saved, or its exact dry-run check.

Usage: ``dataset, max_length = read_masked_examples(cfg); facts = run_training(cfg, dataset, max_length)``

Nothing is re-tokenised here: the examples and the max_length they fit are 02_masking's. In a dry-run the mode
builds the recipe's architecture on the meta device with its LoRA adapters and validates the TRL config.
"""
from __future__ import annotations

import json

from lib.masking.dataset import read_masked
from lib.plan.recipe_plan import memory_plan
from lib.run_config import RunConfig, read_manifest, stage_file, write_manifest

STAGE = "03_train"


def read_masked_examples(cfg: RunConfig):
    """(the masked examples of 02 as a `datasets.Dataset`, the max_length 02 chose for them)."""
    return read_masked(stage_file(cfg, "02_masking", "masked")), read_manifest(cfg, "02_masking")["facts"]["max_length"]


def run_training(cfg: RunConfig, dataset, max_length: int) -> dict:
    """Train (real run) or validate (dry-run); returns the facts also written to the stage manifest."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    facts = {"memory_plan_gib": memory_plan(recipe, max_length).as_dict()["total_gib"], "examples": len(dataset),
             "max_length": max_length}
    trained, produced = cfg.mode.train(cfg, dataset, max_length, out)
    facts |= trained
    write_manifest(cfg, STAGE, {"masked": stage_file(cfg, "02_masking", "masked")}, produced, facts)
    return facts


def train_log(cfg: RunConfig) -> list[dict]:
    """The trainer's log history of this run (loss per logged step); empty when nothing was trained."""
    path = cfg.run_dir / STAGE / "train_log.json"
    return json.loads(path.read_text()) if path.is_file() else []
