"""Turn a notebook's scalar parameters (`model`, `dry_run`, `run_dir`) into one validated run config.

Usage: ``cfg = make_run_config("mistral22b", dry_run=True)``

This is the only place `dry_run` is interpreted: a dry run gets the family's fixture tokenizer, the recipe's
shipped data sample, a handful of rows and *no model source* (so nothing is downloaded or loaded); stages look
at the config, never at `dry_run`. Each stage reads and writes only under `cfg.run_dir/<stage>/`.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from lib.params import Recipe, load_recipe
from lib.paths import project_path, run_dir as default_run_dir

DRY_RUN_TRAIN_ROWS = 16  # enough to see masks and length stats, fast on any machine
DRY_RUN_EVAL_ROWS = 8


@dataclass(frozen=True)
class RunConfig:
    """What one run of the notebooks needs to know, derived from a recipe and the dry-run switch."""

    recipe: Recipe
    dry_run: bool
    run_dir: Path
    train_source: str  # file path or hub dataset name
    train_rows: int  # 0 = all
    eval_source: str
    eval_rows: int
    tokenizer_fixture: str | None  # set in dry-run: the family's real tokenizer shipped in fixtures/
    model_source: str | None  # None in dry-run: stages validate on the meta device instead of loading weights

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def summary(self) -> dict:
        return {"recipe": self.recipe.name, "dry_run": self.dry_run, "run_dir": str(self.run_dir),
                "train_source": self.train_source, "train_rows": self.train_rows or "all",
                "eval_rows": self.eval_rows, "tokenizer": self.tokenizer_fixture or "the model's own",
                "model": self.model_source or "not loaded (dry-run: meta device)", "hardware": self.recipe.hardware}


def make_run_config(model: str, dry_run: bool = False, run_dir: str = "", seed: int | None = None) -> RunConfig:
    """Validated config for recipe `model`; `run_dir` empty means `runs/<model>[-dry-run]/`."""
    recipe = load_recipe(model)
    set_seed(recipe.seed if seed is None else seed)
    folder = project_path(run_dir) if run_dir else default_run_dir(model, dry_run)
    folder.mkdir(parents=True, exist_ok=True)
    if dry_run:
        return RunConfig(recipe, True, folder, recipe.dry_run_dataset_path, DRY_RUN_TRAIN_ROWS,
                         recipe.eval_dataset_path, DRY_RUN_EVAL_ROWS, recipe.tokenizer_fixture, None)
    return RunConfig(recipe, False, folder, recipe.dataset_path, recipe.train_rows, recipe.eval_dataset_path,
                     recipe.eval_rows, None, recipe.model_name_or_path)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (if imported) so reruns give the same split and the same training."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import numpy
        numpy.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:
        pass


def write_manifest(cfg: RunConfig, stage: str, consumed: dict, produced: dict, facts: dict | None = None) -> Path:
    """`<run_dir>/<stage>/manifest.json`: what the stage read, wrote and measured (paths relative to run_dir)."""
    def rel(value):
        return str(Path(value).relative_to(cfg.run_dir)) if str(value).startswith(str(cfg.run_dir)) else str(value)
    manifest = {"stage": stage, "config": cfg.summary(), "consumed": {k: rel(v) for k, v in consumed.items()},
                "produced": {k: rel(v) for k, v in produced.items()}, "facts": facts or {}}
    path = cfg.stage_dir(stage) / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str))
    return path


def read_manifest(cfg: RunConfig, stage: str) -> dict:
    """The manifest an earlier stage wrote; a clear error if that stage has not run in this run_dir."""
    path = cfg.run_dir / stage / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run notebook {stage} for {cfg.recipe.name} first "
                                f"(python -m lib run {cfg.recipe.name}{' --dry-run' if cfg.dry_run else ''} "
                                f"--stages {stage[:2]})")
    return json.loads(path.read_text())
