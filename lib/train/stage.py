"""Stage 03: LoRA SFT (or logit distillation) on the masked examples 02 saved, or its exact dry-run check.

Usage: ``dataset, max_length = read_masked_examples(cfg); facts = run_training(cfg, dataset, max_length)``

Nothing is re-tokenised here: the examples and the max_length they fit are 02_masking's. In a dry-run the mode
builds the recipe's architecture on the meta device with its LoRA adapters and validates the TRL config.
Before anything trains, in every mode, the recipe's real-size memory plan on the backend a real run uses
(`planned_backend`) is checked against `vram_budget_gib`: a run that cannot fit stops here (`OverBudget`), unless
the recipe says `allow_over_budget: true`.
"""
from __future__ import annotations

import json

from lib.masking.dataset import example_lengths, read_masked
from lib.plan.budget import budget_verdict
from lib.plan.recipe_plan import memory_plan
from lib.recipe import ParamsError, Recipe
from lib.run_config import RunConfig, read_manifest, stage_file, write_manifest
from lib.train.backends import UNSLOTH, Backend, is_main_process, planned_backend, select_backend

STAGE = "03_train"


class OverBudget(ParamsError):
    """The recipe's memory plan exceeds its vram_budget_gib; the message names the params file, the largest parts
    of the plan and what to change."""


def read_masked_examples(cfg: RunConfig):
    """(the masked examples of 02 as a `datasets.Dataset`, the max_length 02 chose for them)."""
    return read_masked(stage_file(cfg, "02_masking", "masked")), read_manifest(cfg, "02_masking")["facts"]["max_length"]


def largest_micro_batch(dataset, examples_per_batch: int) -> tuple[int, int]:
    """(tokens, trained tokens) that one micro-batch of `dataset` can reach at most: the `examples_per_batch`
    longest examples together (a padding-free row holds their sum; a padded batch holds no more real tokens), and
    the most trained tokens any `examples_per_batch` of them have."""
    import numpy as np

    lengths, trained = example_lengths(dataset)
    k = min(examples_per_batch, len(lengths))
    return int(np.sort(lengths)[-k:].sum()), int(np.sort(trained)[-k:].sum())


def check_memory_budget(recipe: Recipe, max_length: int, planned: tuple[Backend, str] | None = None,
                        batch: tuple[int, int] | None = None) -> dict:
    """The plan's facts for the manifest; raises `OverBudget` when the real-size plan on the planned backend
    (`planned_backend`, or `planned`) exceeds vram_budget_gib, unless `allow_over_budget` (then the facts carry
    the message as a warning). On a GPU without Unsloth the message says when Unsloth's plan would fit.
    `batch`: the largest micro-batch the examples can make (`largest_micro_batch`); None: the recipe's worst case,
    per_device_train_batch_size x max_length tokens."""
    backend, how = planned or planned_backend(recipe)
    plan = memory_plan(recipe, max_length, backend, batch=batch)
    verdict = budget_verdict(plan, recipe)
    if verdict and backend.on_gpu and backend.name != UNSLOTH:
        unsloth = memory_plan(recipe, max_length, select_backend(recipe, has_cuda=True, has_unsloth=True))
        if unsloth.fits:
            verdict += (f" With Unsloth (pip install -e '.[gpu]' -c constraints-gpu.txt) the plan is "
                        f"{unsloth.total_bytes / 2**30:.2f} GiB: "
                        "within the budget.")
    if verdict and not recipe.allow_over_budget:
        raise OverBudget(verdict)
    facts = {"memory_plan_gib": plan.as_dict()["total_gib"], "memory_budget_gib": recipe.vram_budget_gib,
             "memory_plan_backend": f"{backend.name} ({how})",
             "memory_plan_tokens_per_micro_batch": plan.assumptions["tokens_per_step"]}
    return facts | ({"warning": f"allow_over_budget: true, so training goes on: {verdict}"} if verdict else {})


def run_training(cfg: RunConfig, dataset, max_length: int, restart: bool = False) -> dict:
    """Check the memory plan, then train (real run) or validate (dry-run); returns the facts also written to the
    stage manifest. A killed run continues from its last complete checkpoint; `restart` starts over instead."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    # padding-free rows hold real tokens only: the examples bound a micro-batch well below bs x max_length (a
    # dry-run's examples are a small sample, so it keeps the worst case)
    batch = (largest_micro_batch(dataset, recipe.per_device_train_batch_size)
             if recipe.padding_free and cfg.mode.name != "dry-run" else None)
    facts = check_memory_budget(recipe, max_length, batch=batch) | {"examples": len(dataset),
                                                                    "max_length": max_length}
    trained, produced = cfg.mode.train(cfg, dataset, max_length, out, restart)
    facts |= trained
    if is_main_process():  # data-parallel: one manifest
        write_manifest(cfg, STAGE, {"masked": stage_file(cfg, "02_masking", "masked")}, produced, facts)
    return facts


def train_log(cfg: RunConfig) -> list[dict]:
    """The trainer's log history of this run (loss per logged step); empty when nothing was trained."""
    path = cfg.run_dir / STAGE / "train_log.json"
    return json.loads(path.read_text()) if path.is_file() else []
