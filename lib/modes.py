"""A real run or a dry-run: the one place the two differ, chosen once when a notebook builds its config.

Usage: ``cfg = make_run_config("mistral22b", dry_run=True)``  (the second cell of every notebook)

Stage code reads the same in both modes: it asks `cfg.mode` for the rows to read, the tokenizer, and the steps
that need real weights (train, merge, convert, evaluate). A dry-run gets the family's fixture tokenizer, the
recipe's shipped data sample, a handful of rows, and no weights at all: training is checked on the meta device,
nothing is merged, converted or generated. This module sits above the stage folders (it wires their functions
into the two modes); no stage imports it.
"""
from __future__ import annotations

import functools
from pathlib import Path

from lib.data.pipeline import DataPolicy
from lib.evaluate.llama_runs import evaluate_files
from lib.export.gguf import convert_to_gguf, export_ggufs
from lib.export.merge import merge_checked
from lib.models import (PACKAGED_GGUF_MODELS, load_fixture_tokenizer, load_model_tokenizer, packaged_gguf,
                        resolve_base_model)
from lib.paths import project_path, run_dir as default_run_dir
from lib.plan.recipe_plan import export_quant_types
from lib.recipe import ParamsError, Recipe, load_recipe, recipe_source
from lib.run_config import RunConfig, set_seed
from lib.teacher.config import TeacherConfigError, teacher_settings
from lib.teacher.generate import generate_traces, trace_reject_counts, write_kept_traces
from lib.train.backends import detect_backend, train_lora, training_facts, validate_on_meta_device

DRY_RUN_TRAIN_ROWS = 16  # enough to see masks and length stats, fast on any machine
DRY_RUN_EVAL_ROWS = 8


def make_run_config(model: str, dry_run: bool = False, run_dir: str = "", seed: int | None = None) -> RunConfig:
    """Validated config for recipe `model` (a params file's name); `run_dir` empty means `runs/<model>[-dry-run]/`."""
    return config_for(load_recipe(model), dry_run, run_dir, seed)


def config_for(recipe: Recipe, dry_run: bool = False, run_dir: str = "", seed: int | None = None) -> RunConfig:
    """`make_run_config` for a recipe already in hand (e.g. one with keys replaced, in tests)."""
    check_recipe(recipe)
    set_seed(recipe.seed if seed is None else seed)
    folder = project_path(run_dir) if run_dir else default_run_dir(recipe.name, dry_run)
    folder.mkdir(parents=True, exist_ok=True)
    return RunConfig(recipe, folder, DryRun(recipe) if dry_run else RealRun(recipe))


def check_recipe(recipe: Recipe) -> None:
    """The checks of the keys whose valid values a stage owns, so a bad recipe stops at the first cell."""
    DataPolicy.from_recipe(recipe)
    if recipe.teacher_generation:
        try:
            teacher_settings(recipe.teacher_generation)
        except (TeacherConfigError, TypeError, ValueError) as err:
            raise ParamsError(f"{recipe_source(recipe)}: teacher_generation: {err}") from err


class RealRun:
    """Everything for real: the recipe's data, its model (resolved once), training, export and llama.cpp runs."""

    name, cli_flag = "real", ""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.train_source, self.train_rows = recipe.dataset_path, recipe.train_rows
        self.eval_source, self.eval_rows = recipe.eval_dataset_path, recipe.eval_rows

    @functools.cached_property
    def model_path(self) -> str:
        """`model_name_or_path` resolved once (`lib.models`): a folder transformers loads, or a hub id."""
        return resolve_base_model(self.recipe.model_name_or_path)

    def summary(self) -> dict:
        return {"train_source": self.train_source, "train_rows": self.train_rows or "all",
                "eval_rows": self.eval_rows, "tokenizer": "the model's own",
                "model": self.recipe.model_name_or_path}

    def tokenizer(self):
        return load_model_tokenizer(self.model_path, self.recipe.trust_remote_code)

    def generate_traces(self, settings, prompts: list[dict], verify) -> dict:
        output = project_path(settings.output)
        report = generate_traces(prompts, settings.teacher, output, verify)
        kept = write_kept_traces(output, settings.kept_path)
        return {"summary": report.summary(), "kept_total": len(kept), "rejected_total": trace_reject_counts(output),
                "kept_file": str(settings.kept_path)}

    def train(self, recipe: Recipe, dataset, max_length: int, out: Path) -> dict:
        backend = detect_backend(recipe)
        teacher = resolve_base_model(recipe.teacher_model_name_or_path) if recipe.teacher_model_name_or_path else ""
        result = train_lora(recipe, self.model_path, dataset, max_length, out, backend, teacher_path=teacher)
        return training_facts(result, backend)

    def merge(self, recipe: Recipe, adapter_dir: Path, out: Path, probe_texts: list[str]) -> dict:
        return merge_checked(self.model_path, adapter_dir, out, probe_texts, recipe.torch_dtype)

    def convert(self, recipe: Recipe, merged_dir: Path, gguf_dir: Path) -> dict[str, Path]:
        return export_ggufs(recipe.name, merged_dir, gguf_dir, export_quant_types(recipe), recipe.eval_n_threads)

    def base_gguf(self, recipe: Recipe, out: Path) -> Path:
        """The untrained model as a GGUF: the packaged file itself, or a fresh F16 conversion of the base."""
        if recipe.model_name_or_path in PACKAGED_GGUF_MODELS:
            return packaged_gguf(recipe.model_name_or_path)
        target = out / f"{recipe.name}-base-F16.gguf"
        return target if target.is_file() else convert_to_gguf(Path(self.model_path), target)

    def evaluate(self, recipe: Recipe, runs: list[dict], prompts: Path, out: Path) -> list[dict]:
        return evaluate_files(recipe, runs, prompts, out)


class DryRun:
    """No GPU, no download, no weights: the family's real tokenizer on a few shipped rows, the meta device."""

    name, cli_flag = "dry-run", " --dry-run"

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.train_source, self.train_rows = recipe.dry_run_dataset_path, DRY_RUN_TRAIN_ROWS
        self.eval_source, self.eval_rows = recipe.eval_dataset_path, DRY_RUN_EVAL_ROWS

    def summary(self) -> dict:
        return {"train_source": self.train_source, "train_rows": self.train_rows, "eval_rows": self.eval_rows,
                "tokenizer": f"fixtures/tokenizers/{self.recipe.tokenizer_fixture}",
                "model": "not loaded (dry-run: meta device)"}

    def tokenizer(self):
        return load_fixture_tokenizer(self.recipe.tokenizer_fixture)

    def generate_traces(self, settings, prompts: list[dict], verify) -> dict:
        return {"teacher": settings.teacher.served_model, "prompts": settings.prompts, "prompt_rows": len(prompts),
                "output": settings.output, "status": "validated; no request is sent in a dry-run"}

    def train(self, recipe: Recipe, dataset, max_length: int, out: Path) -> dict:
        return validate_on_meta_device(recipe, max_length, out)

    def merge(self, recipe: Recipe, adapter_dir: Path | None, out: Path, probe_texts: list[str]) -> dict:
        return {"mode": "dry-run (no weights: nothing merged or converted, sizes are estimates)"}

    def convert(self, recipe: Recipe, merged_dir: Path, gguf_dir: Path) -> dict[str, Path]:
        return {}

    def base_gguf(self, recipe: Recipe, out: Path) -> None:
        return None

    def evaluate(self, recipe: Recipe, runs: list[dict], prompts: Path, out: Path) -> list[dict]:
        return []
