"""One run of the notebooks: the recipe, the run folder, the mode (real or dry-run), and the stage manifests.

Usage: ``cfg = make_run_config("mistral22b", dry_run=True)`` (from `lib.modes`, which picks the mode);
``write_manifest(cfg, "02_masking", consumed, produced, facts)``; ``path = stage_file(cfg, "01_data", "train")``

Data goes one way: each stage reads what earlier stages wrote under `runs/<recipe>/<stage>/` (found through their
manifests) and writes only under its own folder, with a manifest saying what it read, wrote and measured.
`RunMode` is the one place a dry-run differs from a real run: stage code calls the mode and never asks which it is.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lib.paths import atomic_write_text
from lib.recipe import Recipe


# the notebooks of a run, in pipeline order (notebooks/<stage>.ipynb, runs/<recipe>/<stage>/); 06_grpo runs only
# for a recipe with a grpo: section
STAGES = ("01_data", "02_masking", "03_train", "04_merge_export", "05_eval_edge", "06_grpo")
GRPO_STAGE = "06_grpo"


class RunMode(Protocol):
    """What differs between a real run, a dry-run and a --tiny run, as named steps (implemented in `lib.modes`)."""

    name: str  # "real", "dry-run" or "tiny": shown, never branched on
    cli_flag: str  # what `python -m lib run` needs to repeat this mode ("", " --dry-run" or " --tiny")
    train_source: str  # file path or hub dataset name
    train_rows: int  # 0 = all
    eval_source: str
    eval_rows: int

    def summary(self) -> dict: ...
    def tokenizer(self) -> Any: ...
    def architecture(self) -> Any: ...  # the lib.architectures.Architecture this run trains and exports
    def generate_traces(self, settings, read_prompts, verify) -> dict: ...
    def train(self, cfg: RunConfig, dataset, max_length: int, out: Path) -> tuple[dict, dict]: ...  # facts, produced
    def merge(self, cfg: RunConfig, merged_dir: Path, probe_texts: list[str]) -> dict: ...
    def convert(self, cfg: RunConfig, merged_dir: Path, gguf_dir: Path) -> dict[str, Path]: ...
    def convert_adapter(self, cfg: RunConfig, gguf_dir: Path) -> Path | None: ...  # 03's LoRA as a GGUF adapter
    def judged_files(self, cfg: RunConfig, out: Path) -> dict[str, Path]: ...  # label -> GGUF: base + judged exports
    def evaluate(self, cfg: RunConfig, runs: list[dict], benchmarks: dict[str, tuple[str, int | None]],
                 out: Path) -> list[dict]: ...


@dataclass(frozen=True)
class RunConfig:
    """What one run of the notebooks needs to know: the validated recipe, where it writes, and how it runs."""

    recipe: Recipe
    run_dir: Path
    mode: RunMode

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def summary(self) -> dict:
        return {"recipe": self.recipe.name, "mode": self.mode.name, "run_dir": str(self.run_dir),
                "hardware": self.recipe.hardware, **self.mode.summary()}


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


def fingerprint(path: Path) -> list[int]:
    """(size, modification time in ns) of a file: cheap to take even for a 13 GB GGUF, and changed by every rewrite
    (the pipeline writes by rename), so a stage can tell that a file it consumed was written anew since."""
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def write_manifest(cfg: RunConfig, stage: str, consumed: dict, produced: dict, facts: dict | None = None) -> Path:
    """`<run_dir>/<stage>/manifest.json`: what the stage read (with the fingerprint of each file it read), wrote and
    measured (paths relative to run_dir)."""
    def rel(value):
        return str(Path(value).relative_to(cfg.run_dir)) if str(value).startswith(str(cfg.run_dir)) else str(value)
    manifest = {"stage": stage, "config": cfg.summary(), "consumed": {k: rel(v) for k, v in consumed.items()},
                "consumed_fingerprints": {k: fingerprint(v) for k, v in consumed.items()  # the pipeline's own files
                                          if str(v).startswith(str(cfg.run_dir)) and Path(v).is_file()},
                "produced": {k: rel(v) for k, v in produced.items()}, "facts": facts or {}}
    path = cfg.stage_dir(stage) / "manifest.json"
    atomic_write_text(path, json.dumps(manifest, indent=2, default=str))
    return path


def read_manifest(cfg: RunConfig, stage: str) -> dict:
    """The manifest an earlier stage wrote; a clear error if that stage has not run in this run_dir."""
    path = cfg.run_dir / stage / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run notebook {stage} for {cfg.recipe.name} first "
                                f"(python -m lib run {cfg.recipe.name}{cfg.mode.cli_flag} --stages {stage[:2]})")
    return json.loads(path.read_text())


class StaleStage(RuntimeError):
    """A stage's output was computed from files that an earlier stage has written anew since."""


def stage_file(cfg: RunConfig, stage: str, key: str) -> Path:
    """The file an earlier stage produced under `key` (from its manifest), after checking that the files that stage
    consumed are still the ones it read: 03 never trains on masks of an older 01, 05 never judges stale files."""
    manifest = read_manifest(cfg, stage)
    rerun = f"run {stage} again (python -m lib run {cfg.recipe.name}{cfg.mode.cli_flag} --stages {stage[:2]})"
    produced = manifest["produced"]
    if key not in produced:
        raise FileNotFoundError(f"{cfg.run_dir / stage}: its manifest lists no {key!r} (it has {sorted(produced)}); "
                                f"it was written by an older version or another mode: {rerun}")
    for name, seen in manifest.get("consumed_fingerprints", {}).items():
        path = Path(manifest["consumed"][name])
        path = path if path.is_absolute() else cfg.run_dir / path
        if not path.is_file() or fingerprint(path) != seen:
            raise StaleStage(f"{cfg.run_dir / stage} was computed from {path}, which has been written anew (or "
                             f"removed) since: {rerun}")
    return cfg.run_dir / produced[key]
