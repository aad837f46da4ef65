"""Stage 01: the training set and the held-out prompts in canonical form, audited, with every removal counted.

Usage: ``splits = build_splits(cfg); save_splits(cfg, splits); splits.report()``

The training source streams through `lib.data_pipeline` (schema → verification → duplicates → decontamination
→ token lengths with the recipe's tokenizer and chat template → length policy). Stage 01 decides the max_length
training uses (it differs from the recipe's only under `overlong_policy: fit`); later stages read it back with
`with_data_length(cfg)`.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

from lib.data_pipeline import DataPolicy, PipelineResult, check_reject_fraction, run_pipeline
from lib.reasoning_data import (Reject, overlap_report, prompt_key, read_jsonl, read_reasoning_rows, reject_counts,
                                 source_id_prefix, write_jsonl)
from lib.run_config import RunConfig, read_manifest, write_manifest

STAGE = "01_data"


@dataclass
class Splits:
    train: list[dict]
    heldout: list[dict]
    audit: PipelineResult
    heldout_rejects: list[Reject] = field(default_factory=list)
    train_rejects: list[Reject] = field(default_factory=list)
    removed_overlap: int = 0
    memory_cost: dict = field(default_factory=dict)

    @property
    def max_length(self) -> int:
        return self.audit.decision.max_length

    def report(self) -> dict:
        return {"train_rows": len(self.train), "heldout_rows": len(self.heldout), "max_length": self.max_length,
                "train_audit": self.audit.report.as_dict(),
                "heldout_rejects": reject_counts(self.heldout_rejects),
                "train_rows_removed_for_overlap_with_heldout": self.removed_overlap,
                "memory_at_max_length": self.memory_cost}


def build_splits(cfg: RunConfig, tokenizer=None) -> Splits:
    """Audit the recipe's training source and sample the held-out prompts; never let a held-out prompt train.

    `tokenizer` defaults to the recipe's (`lib.stage_masking.tokenizer_for`): lengths are measured as trained.
    Held-out prompts are a seeded sample of the evaluation file (GSM8K *test*); training rows that overlap an
    evaluation set are removed by decontamination, and a verbatim check against the sample guards that anyway.
    """
    from lib.data_schemas import convert_rows
    from lib.data_sources import iter_records
    from lib.masking import end_of_turn_tokens
    from lib.stage_masking import mask_all, tokenizer_for

    recipe = cfg.recipe
    tokenizer = tokenizer if tokenizer is not None else tokenizer_for(cfg)
    policy = DataPolicy.from_recipe(recipe)
    train_rejects: list[Reject] = []
    records = iter_records(cfg.train_source, recipe.dataset_split, recipe.dataset_config)
    converted = convert_rows(records, policy.schema, policy.field_mapping, source_id_prefix(cfg.train_source))
    audit = run_pipeline(converted, policy, lambda rows: mask_all(rows, tokenizer, recipe),
                         end_of_turn_tokens(tokenizer), limit=cfg.train_rows, on_reject=train_rejects.append,
                         source=cfg.train_source)
    check_reject_fraction(audit.report, recipe.max_reject_fraction, recipe.name)
    pool, heldout_rejects = read_reasoning_rows(cfg.eval_source, "gsm8k")
    heldout = random.Random(recipe.seed).sample(pool, k=min(cfg.eval_rows, len(pool)))
    train = audit.kept
    overlap = overlap_report(heldout, train)  # counts train rows whose prompt is a held-out prompt
    if overlap:
        held = {prompt_key(h) for h in heldout}
        train = [t for t in train if prompt_key(t) not in held]
    if not train:
        raise ValueError(f"{cfg.train_source}: no usable training rows "
                         f"({dict(audit.report.rejected.most_common())})")
    return Splits(train, heldout, audit, heldout_rejects, train_rejects, overlap, memory_cost(recipe, audit))


def memory_cost(recipe, audit: PipelineResult) -> dict:
    """Planned training memory at the recipe's max_length and at the one stage 01 chose (they differ under fit)."""
    from lib.params import with_overrides
    from lib.plan import memory_plan

    chosen = audit.decision.max_length
    cost = {f"recipe max_length {recipe.max_length}": memory_plan(recipe).as_dict()["total_gib"]}
    if chosen != recipe.max_length:
        cost[f"fitted max_length {chosen}"] = memory_plan(with_overrides(recipe, max_length=chosen)).as_dict()[
            "total_gib"]
    return {"total_gib": cost, "hardware": recipe.hardware, "vram_budget_gib": recipe.vram_budget_gib}


def save_splits(cfg: RunConfig, splits: Splits) -> dict:
    """Write train/heldout/rejects JSONL, the length histogram and the stage manifest; return the manifest facts."""
    from lib.length_audit import length_histogram

    out = cfg.stage_dir(STAGE)
    files = {"train": out / "train.jsonl", "heldout": out / "heldout.jsonl", "rejects": out / "rejects.jsonl",
             "lengths": out / "lengths.png"}
    write_jsonl(files["train"], splits.train)
    write_jsonl(files["heldout"], splits.heldout)
    write_jsonl(files["rejects"], [r.__dict__ for r in splits.train_rejects + splits.heldout_rejects])
    length_histogram(list(splits.audit.lengths.values()), splits.audit.decision, files["lengths"], cfg.recipe.name)
    facts = splits.report()
    write_manifest(cfg, STAGE, {"train_source": cfg.train_source, "eval_source": cfg.eval_source}, files, facts)
    return facts


def load_splits(cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) written by stage 01 in this run folder."""
    read_manifest(cfg, STAGE)
    folder = cfg.run_dir / STAGE
    return read_jsonl(folder / "train.jsonl"), read_jsonl(folder / "heldout.jsonl")


def with_data_length(cfg: RunConfig) -> RunConfig:
    """`cfg` with the max_length stage 01 chose for this run (the recipe's own unless `overlong_policy: fit`)."""
    from lib.params import with_overrides

    facts = read_manifest(cfg, STAGE)["facts"]
    if "max_length" not in facts:
        raise ValueError(f"{cfg.run_dir / STAGE}: written by an older 01_data without a length audit; run "
                         f"01_data again (python -m lib run {cfg.recipe.name} --stages 01)")
    chosen = facts["max_length"]
    if chosen == cfg.recipe.max_length:
        return cfg
    return dataclasses.replace(cfg, recipe=with_overrides(cfg.recipe, max_length=chosen))


def rejects_table(splits: Splits, samples: int = 3) -> str:
    """Markdown: each reject reason with its count and the first few source lines and details."""
    report = splits.audit.report
    if not report.rejected and not splits.heldout_rejects:
        return "No row was rejected or removed."
    lines = ["| reason | rows | first lines (detail) |", "|---|---|---|"]
    for reason, count in report.rejected.most_common():
        shown = "; ".join(f"{s['line']} ({_short(s['detail'])})" if s["detail"] else str(s["line"])
                          for s in report.samples.get(reason, [])[:samples])
        lines.append(f"| {reason} | {count} | {shown} |")
    for reason, count in reject_counts(splits.heldout_rejects).items():
        lines.append(f"| held-out: {reason} | {count} | |")
    return "\n".join(lines)


def _short(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


@dataclass(frozen=True)
class TeacherSettings:
    """The recipe's `teacher_generation` block: which prompts, where the traces go, and the teacher itself."""

    prompts: str  # a source with reference answers, any schema (e.g. data/gsm8k/train.jsonl.gz)
    output: str  # append-only traces JSONL (resumable); kept traces go to <output stem>.kept.jsonl
    prompts_format: str
    rows: int  # 0 = all prompts
    teacher: object  # lib.teacher_generation.TeacherConfig

    @property
    def kept_path(self) -> Path:
        from lib.paths import project_path

        out = project_path(self.output)
        return out.with_name(out.name.removesuffix(".jsonl") + ".kept.jsonl")


def teacher_settings(block: dict) -> TeacherSettings:
    """Validate a `teacher_generation` block; errors name the missing or wrong field."""
    from lib.teacher_generation import TeacherConfig

    settings = dict(block)
    missing = [key for key in ("prompts", "output") if not settings.get(key)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (prompts: a file with reference answers; output: the "
                         "traces JSONL)")
    if "api_key" in settings:
        raise ValueError("api_key is never written in a recipe: set api_key_env to the name of the environment "
                         "variable that holds it")
    prompts, output = settings.pop("prompts"), settings.pop("output")
    prompts_format, rows = settings.pop("prompts_format", "auto"), settings.pop("rows", 0)
    return TeacherSettings(prompts, output, prompts_format, rows, TeacherConfig(**settings))


def teacher_traces(cfg: RunConfig):
    """Run the optional teacher stage (`teacher_generation` in the recipe) and show what it kept and why.

    Kept traces (complete, closed `</think>`, answer verified by math-verify) are written as chat messages with
    `reasoning_content` to `<output stem>.kept.jsonl`, which a recipe's `dataset_path` can name. A dry-run only
    validates the block: no request is sent.
    """
    from IPython.display import JSON, Markdown

    if not cfg.recipe.teacher_generation:
        return Markdown("_No teacher configured: this recipe trains on its `dataset_path`. Set `teacher_generation` "
                        "in its params file to generate traces first (README: Data)._")
    settings = teacher_settings(cfg.recipe.teacher_generation)
    if cfg.dry_run:
        return JSON({"teacher": settings.teacher.served_model, "prompts": settings.prompts,
                     "output": settings.output, "status": "validated; no request is sent in a dry-run"})
    from lib.data_filters import reply_matches_reference
    from lib.paths import project_path
    from lib.teacher_generation import generate_traces, kept_canonical_rows, trace_reject_counts

    prompts, rejects = read_reasoning_rows(settings.prompts, settings.prompts_format, limit=settings.rows)
    report = generate_traces(prompts, settings.teacher, project_path(settings.output), reply_matches_reference)
    kept = kept_canonical_rows(project_path(settings.output))
    write_jsonl(settings.kept_path, [_as_chat_messages(row) for row in kept])
    return JSON({"summary": report.summary(), "prompt_rejects": reject_counts(rejects), "kept_total": len(kept),
                 "rejected_total": trace_reject_counts(project_path(settings.output)),
                 "kept_file": str(settings.kept_path)})


def _as_chat_messages(row: dict) -> dict:
    """A canonical row as chat messages whose reply carries `reasoning_content` (the `messages` schema)."""
    *prompt, reply = row["messages"]
    return {**row, "messages": [*prompt, {"role": "assistant", "reasoning_content": reply["think"],
                                          "content": reply["answer"]}]}
