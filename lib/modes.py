"""A real run or a dry-run: the one place the two differ, chosen once when a notebook builds its config.

Usage: ``cfg = make_run_config("mistral22b", dry_run=True)``  (the second cell of every notebook)

Stage code reads the same in every mode: it asks `cfg.mode` for the rows to read, the tokenizer, and the steps
that need real weights (train, merge, convert, evaluate). A dry-run gets the family's fixture tokenizer, the
recipe's shipped data sample, a handful of rows, and no weights at all: training is checked on the meta device,
nothing is merged, converted or generated. A --tiny run is a real run (the same functions, in the same order,
with the same arguments) of a tiny random model of the recipe's architecture family, found through the hub
(`lib.tiny`), on the shipped sample; what needs CUDA is replaced and named. This module sits above the stage
folders (it wires their functions into the modes); no stage imports it.
"""
from __future__ import annotations

import functools
from pathlib import Path

from lib.architectures import Architecture, load_architecture
from lib.data.pipeline import DataPolicy
from lib.evaluate.llama_runs import evaluate_files
from lib.export.gguf import convert_lora_to_gguf, convert_to_gguf, export_ggufs, lora_gguf_name
from lib.export.merge import merge_checked
from lib.grpo.plan import planned_step
from lib.grpo.settings import GrpoSettingsError, grpo_settings
from lib.grpo.train import grpo_args, grpo_backend, train_grpo
from lib.models import (PACKAGED_GGUF_MODELS, load_fixture_tokenizer, load_model_tokenizer, packaged_gguf,
                        resolve_base_model)
from lib.paths import RUN_MODEL_PREFIX, project_path, run_dir as default_run_dir
from lib.recipe import ParamsError, Recipe, list_recipes, load_recipe, recipe_source
from lib.rejects import reject_counts
from lib.run_config import RunConfig, read_manifest, set_seed, stage_file
from lib.teacher.config import TeacherConfigError, teacher_settings
from lib.teacher.generate import run_teacher
from lib.plan.recipe_plan import memory_plan
from lib.tiny import (PACKAGED_BASE_STAND_IN, TINY_EVAL_ROWS, TINY_TRAIN_ROWS, RssPeak, ensure_tiny_snapshot,
                      hub_id_of, recipe_tiny_spec, tiny_architecture, tiny_hub_cache, tiny_recipe, tiny_summary)
from lib.train.backends import (Backend, detect_backend, planned_backend, train_lora, training_facts,
                                validate_on_meta_device)

DRY_RUN_TRAIN_ROWS = 16  # enough to see masks and length stats, fast on any machine
DRY_RUN_EVAL_ROWS = 8


def make_run_config(model: str, dry_run: bool = False, run_dir: str = "", seed: int | None = None,
                    tiny: bool = False) -> RunConfig:
    """Validated config for recipe `model` (a params file's name); `run_dir` empty means
    `runs/<model>[-dry-run|-tiny]/`."""
    return config_for(load_recipe(model), dry_run, run_dir, seed, tiny)


def config_for(recipe: Recipe, dry_run: bool = False, run_dir: str = "", seed: int | None = None,
               tiny: bool = False) -> RunConfig:
    """`make_run_config` for a recipe already in hand (e.g. one with keys replaced, in tests)."""
    if dry_run and tiny:
        raise ValueError("dry_run and tiny exclude each other: a dry-run loads no weights, a --tiny run trains")
    check_recipe(recipe)
    set_seed(recipe.seed if seed is None else seed)
    mode = DryRun(recipe) if dry_run else TinyRun(recipe) if tiny else RealRun(recipe)
    folder = project_path(run_dir) if run_dir else default_run_dir(recipe.name, mode.name)
    folder.mkdir(parents=True, exist_ok=True)
    return RunConfig(mode.recipe, folder, mode)


def check_recipe(recipe: Recipe) -> None:
    """The checks of the keys whose valid values a stage owns, so a bad recipe stops at the first cell."""
    DataPolicy.from_recipe(recipe)
    check_run_references(recipe)
    if recipe.teacher_generation:
        try:
            teacher_settings(recipe.teacher_generation)
        except (TeacherConfigError, TypeError, ValueError) as err:
            raise ParamsError(f"{recipe_source(recipe)}: teacher_generation: {err}") from err
    if recipe.grpo:
        try:
            grpo_settings(recipe.grpo)
        except GrpoSettingsError as err:
            raise ParamsError(f"{recipe_source(recipe)}: grpo: {err}") from err


def check_run_references(recipe: Recipe) -> None:
    """A model named ``run:RECIPE`` must name a recipe that exists and has a model of its own (not another
    ``run:``), with no revision (the run's merged folder is what it is): checked in every mode, at the start."""
    for key, revision_key in (("model_name_or_path", "revision"), ("teacher_model_name_or_path", "teacher_revision")):
        name = getattr(recipe, key)
        if not name.startswith(RUN_MODEL_PREFIX):
            continue
        other, known = name.removeprefix(RUN_MODEL_PREFIX), list_recipes()
        if other not in known:
            raise ParamsError(f"{recipe_source(recipe)}: {key}: {name!r} names no recipe (params/{other}.yaml not "
                              f"found); known: {', '.join(known)}")
        if other == recipe.name or load_recipe(other).model_name_or_path.startswith(RUN_MODEL_PREFIX):
            raise ParamsError(f"{recipe_source(recipe)}: {key}: {name!r} must name a recipe that trains a model of "
                              "its own (not itself, nor another run: reference)")
        if getattr(recipe, revision_key):
            raise ParamsError(f"{recipe_source(recipe)}: {revision_key} is for hub ids; {key} is {name!r}, the "
                              f"merged model of that run: remove {revision_key}")


def teacher_not_called(settings, why: str) -> dict:
    """01's teacher-generation facts when the mode validates the settings but calls no teacher."""
    return {"teacher": settings.teacher.served_model, "prompts": settings.prompts, "rows": settings.rows or "all",
            "output": settings.output, "status": f"validated; {why}"}


class RealRun:
    """Everything for real: the recipe's data, its model (resolved once), training, export and llama.cpp runs."""

    name, cli_flag = "real", ""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.train_source, self.train_rows = recipe.dataset_path, recipe.train_rows
        self.eval_source, self.eval_rows = recipe.eval_dataset_path, recipe.eval_rows

    def resolve(self, model_name_or_path: str, revision: str = "", teacher: bool = False,
                weights: bool = True) -> str:
        """A model name of the recipe as a local folder (`lib.models.resolve_base_model`): a hub id is downloaded
        once into the Hugging Face cache (`weights=False`: its configs and tokenizer only)."""
        return resolve_base_model(model_name_or_path, revision, weights=weights)

    @functools.cached_property
    def model_path(self) -> str:
        """`model_name_or_path` resolved once: the folder every step loads (training, merge, GGUF conversion)."""
        return self.resolve(self.recipe.model_name_or_path, self.recipe.revision)

    def backend(self) -> Backend:
        return detect_backend(self.recipe)

    def architecture(self) -> Architecture:
        """The shapes this run trains and exports (04's size estimates and 05's KV cache are of these)."""
        return load_architecture(self.recipe.architecture)

    def base_model_name(self) -> str:
        """The name 05's base GGUF is made from (`base_model_gguf`)."""
        return self.recipe.model_name_or_path

    def summary(self) -> dict:
        return {"train_source": self.train_source, "train_rows": self.train_rows or "all",
                "eval_rows": self.eval_rows, "tokenizer": "the model's own",
                "model": self.recipe.model_name_or_path}

    def tokenizer(self):
        """The model's own tokenizer; before the weights are needed, from the configs and tokenizer files alone
        (checking a recipe's masks in 02 must not download the whole model first)."""
        recipe = self.recipe
        folder = self.__dict__.get("model_path") or self.resolve(recipe.model_name_or_path, recipe.revision,
                                                                 weights=False)
        return load_model_tokenizer(folder, recipe.trust_remote_code)

    def generate_traces(self, settings, read_prompts, verify) -> dict:
        prompts, rejects = read_prompts(settings.prompts, settings.prompts_format, limit=settings.rows)
        return run_teacher(settings, prompts, verify) | {"prompt_rejects": reject_counts(rejects)}

    def train(self, cfg: RunConfig, dataset, max_length: int, out: Path, restart: bool = False) -> tuple[dict, dict]:
        """Train (`train_lora`); on a CPU also measure this process's peak RSS (`cpu_memory`)."""
        recipe, backend = cfg.recipe, self.backend()
        teacher = (self.resolve(recipe.teacher_model_name_or_path, recipe.teacher_revision, teacher=True)
                   if recipe.teacher_model_name_or_path else "")
        with RssPeak() as rss:
            result = train_lora(recipe, self.model_path, dataset, max_length, out, backend, teacher_path=teacher,
                                restart=restart)
        facts = training_facts(result, backend)
        if not backend.on_gpu and result.largest_batch:
            facts["cpu_memory"] = self.cpu_memory(backend, result.largest_batch, rss)
        return facts, {"adapter": result.adapter_dir, "train_log": out / "train_log.json"}

    def teacher_architecture(self) -> Architecture | None:
        return load_architecture(self.recipe.teacher_architecture) if self.recipe.teacher_architecture else None

    def cpu_memory(self, backend: Backend, largest_batch: tuple[int, int], rss: RssPeak) -> dict:
        """The memory plan of the largest micro-batch this run trained next to the process's measured peak RSS
        (the plan counts the process itself: `cpu_runtime`). The plan at max_length is the worst case; this is
        the one a measurement can be held against."""
        plan = memory_plan(self.recipe, backend=backend, architecture=self.architecture(),
                           teacher_architecture=self.teacher_architecture(), batch=largest_batch).as_dict()
        peak = rss.peak / 2**30
        return {"largest_micro_batch_tokens": largest_batch[0], "its_trained_tokens": largest_batch[1],
                "plan_gib": plan["total_gib"], "peak_rss_gib": round(peak, 3),
                "plan_error": round(plan["total_gib"] / peak - 1, 3) if peak else None,
                "rss_before_training_gib": round(rss.before / 2**30, 3), "plan_components_gib": plan["components_gib"]}

    def merge(self, cfg: RunConfig, merged_dir: Path, probe_texts: list[str], adapter: Path | None = None) -> dict:
        """03's adapter merged into the base (or `adapter`: 06's, which continued 03's on the same base)."""
        adapter = adapter or stage_file(cfg, "03_train", "adapter")
        trained_in_4bit = read_manifest(cfg, "03_train")["facts"].get("load_in_4bit", False)  # what 03 really did
        return merge_checked(self.model_path, adapter, merged_dir, probe_texts, cfg.recipe.torch_dtype,
                             trained_in_4bit=trained_in_4bit)

    def convert(self, cfg: RunConfig, merged_dir: Path, gguf_dir: Path, name: str = "") -> dict[str, Path]:
        recipe = cfg.recipe
        return export_ggufs(name or recipe.name, merged_dir, gguf_dir, recipe.gguf_files(), recipe.eval_n_threads)

    def grpo(self, cfg: RunConfig, settings, prompts: list[dict], out: Path, sft_adapter: Path | None,
             restart: bool = False) -> tuple[dict, dict]:
        """GRPO for real (`lib.grpo.train`): (facts, produced)."""
        if settings.start_from == "sft" and sft_adapter is None:
            raise FileNotFoundError(f"{cfg.run_dir / '03_train'}: no adapter to start GRPO from (grpo.start_from: "
                                    f"sft): run 03 (python -m lib run {cfg.recipe.name}{self.cli_flag} --stages 03)")
        backend = grpo_backend(self.backend(), cfg.recipe)
        plan = planned_step(cfg.recipe, settings, prompts, self.tokenizer(), backend, self.architecture())
        with RssPeak() as rss:
            result = train_grpo(cfg.recipe, settings, self.model_path, prompts, out, backend, sft_adapter, restart)
        facts = {"steps": result.steps, "seconds": round(result.seconds, 1),
                 "seconds_per_step": round(result.seconds / max(1, result.steps), 2),
                 "resumed_from": result.resumed_from, "backend": backend.as_dict(), "memory_plan": plan,
                 **({} if backend.on_gpu else {"peak_rss_gib": round(rss.peak / 2**30, 3)})}
        return facts, {"adapter": result.adapter_dir, "log": out / "grpo_log.json"}

    def convert_adapter(self, cfg: RunConfig, gguf_dir: Path) -> Path:
        return convert_lora_to_gguf(stage_file(cfg, "03_train", "adapter"), Path(self.model_path),
                                    gguf_dir / lora_gguf_name(cfg.recipe.name))

    def judged_files(self, cfg: RunConfig, out: Path) -> dict[str, Path]:
        """The untrained base as a GGUF (`base_model_gguf`), then the files 04 exported that the recipe judges."""
        recipe = cfg.recipe
        base = base_model_gguf(self.base_model_name(), self.model_path, out / f"{recipe.name}-base-F16.gguf")
        return {"base": base} | {f"distilled-{q}": stage_file(cfg, "04_merge_export", q) for q in recipe.judged_files()}

    def evaluate(self, cfg: RunConfig, runs: list[dict], benchmarks: dict[str, tuple[str, int | None]],
                 out: Path) -> list[dict]:
        return evaluate_files(cfg.recipe, runs, benchmarks, out)


def base_model_gguf(model_name_or_path: str, model_folder: str, target: Path) -> Path:
    """The untrained base model as a GGUF: a packaged model's own file, else an F16 conversion of its resolved
    folder (a hub id's snapshot, or a local folder) written once to `target`."""
    if model_name_or_path in PACKAGED_GGUF_MODELS:
        return packaged_gguf(model_name_or_path)
    return target if target.is_file() else convert_to_gguf(Path(model_folder), target)


class TinyRun(RealRun):
    """A real run of a tiny random model of the recipe's own architecture family (`lib.tiny`), on CPU.

    The model is written once as a hub-style snapshot under the recipe's own `model_name_or_path` and found by the
    same download call a GPU run makes (offline, in the tiny hub cache); the tokenizer and chat template are the
    recipe's fixture. What needs CUDA (NF4, 8-bit optimizers, Unsloth) is replaced and named (`Backend.stand_ins`).
    """

    name, cli_flag = "tiny", " --tiny"

    def __init__(self, recipe: Recipe):
        super().__init__(tiny_recipe(recipe))
        self.train_source, self.train_rows = recipe.dry_run_dataset_path, TINY_TRAIN_ROWS
        self.eval_source, self.eval_rows = recipe.eval_dataset_path, TINY_EVAL_ROWS

    def resolve(self, model_name_or_path: str, revision: str = "", teacher: bool = False,
                weights: bool = True) -> str:
        repo_id, spec = hub_id_of(model_name_or_path), recipe_tiny_spec(self.recipe, teacher)
        ensure_tiny_snapshot(repo_id, revision, spec, tiny_hub_cache(spec))
        return resolve_base_model(repo_id, revision, hub_cache=tiny_hub_cache(spec), offline=True, weights=weights)

    def generate_traces(self, settings, read_prompts, verify) -> dict:
        """Validated, not run: the teacher is a real model (a server or a GGUF), not part of the tiny chain."""
        return teacher_not_called(settings, "a --tiny run calls no teacher (run without --tiny to generate traces)")

    def backend(self) -> Backend:
        return detect_backend(self.recipe, stand_ins_allowed=True)

    def architecture(self) -> Architecture:
        return tiny_architecture(self.recipe)

    def teacher_architecture(self) -> Architecture | None:
        return tiny_architecture(self.recipe, teacher=True) if self.recipe.teacher_architecture else None

    def base_model_name(self) -> str:
        return hub_id_of(self.recipe.model_name_or_path)  # a packaged model's tiny stand-in is a hub snapshot

    def summary(self) -> dict:
        return {"train_source": self.train_source, "train_rows": self.train_rows, "eval_rows": self.eval_rows,
                **tiny_summary(self.recipe), "stand_ins": list(self.backend().stand_ins)
                + ([PACKAGED_BASE_STAND_IN] if self.recipe.model_name_or_path in PACKAGED_GGUF_MODELS else [])}


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

    def architecture(self) -> Architecture:
        return load_architecture(self.recipe.architecture)

    def generate_traces(self, settings, read_prompts, verify) -> dict:
        return teacher_not_called(settings, "no prompt is read and no request sent in a dry-run")

    def train(self, cfg: RunConfig, dataset, max_length: int, out: Path, restart: bool = False) -> tuple[dict, dict]:
        return validate_on_meta_device(cfg.recipe, max_length, out), {}

    def merge(self, cfg: RunConfig, merged_dir: Path, probe_texts: list[str], adapter: Path | None = None) -> dict:
        return {"mode": "dry-run (no weights: nothing merged or converted, sizes are estimates)"}

    def convert(self, cfg: RunConfig, merged_dir: Path, gguf_dir: Path, name: str = "") -> dict[str, Path]:
        return {}

    def grpo(self, cfg: RunConfig, settings, prompts: list[dict], out: Path, sft_adapter: Path | None,
             restart: bool = False) -> tuple[dict, dict]:
        """No weights: TRL's arguments built and checked, the memory plan of one step (`lib.grpo.plan`)."""
        from trl import GRPOConfig  # validates the arguments as a real run's trainer will

        backend = grpo_backend(planned_backend(cfg.recipe)[0], cfg.recipe)
        GRPOConfig(**grpo_args(cfg.recipe, settings, out / "checkpoints", backend) | {"use_cpu": True, "bf16": False,
                                                                                       "fp16": False})
        plan = planned_step(cfg.recipe, settings, prompts, self.tokenizer(), backend, self.architecture())
        return {"memory_plan": plan, "status": "dry-run: planned, not trained"}, {}

    def convert_adapter(self, cfg: RunConfig, gguf_dir: Path) -> None:
        return None

    def judged_files(self, cfg: RunConfig, out: Path) -> dict[str, Path]:
        return {}

    def evaluate(self, cfg: RunConfig, runs: list[dict], benchmarks: dict[str, tuple[str, int | None]],
                 out: Path) -> list[dict]:
        return []
