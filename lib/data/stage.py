"""Stage 01: the training set and the held-out prompts in canonical form, audited, with every removal counted.

Usage: ``splits = build_splits(cfg); save_splits(cfg, splits)``

The training source streams through `lib.data.pipeline` (schema → answer verification → duplicates →
decontamination). Token lengths and the overlong policy belong to 02_masking, which reads `train.jsonl` from here.
The optional teacher step (`teacher_traces`) writes traces a recipe can then name as its `dataset_path`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from lib.conversation import overlap_report, prompt_key
from lib.data.filters import reply_matches_reference
from lib.data.pipeline import DataPolicy, PipelineResult, check_reject_fraction, run_pipeline
from lib.data.rows import read_reasoning_rows, source_id_prefix
from lib.data.schemas import convert_rows
from lib.data.sources import iter_records
from lib.jsonl import write_jsonl
from lib.rejects import Reject, reject_counts
from lib.run_config import RunConfig, write_manifest
from lib.teacher.config import teacher_settings

STAGE = "01_data"


@dataclass
class Splits:
    train: list[dict]
    heldout: list[dict]
    audit: PipelineResult
    heldout_rejects: list[Reject] = field(default_factory=list)
    train_rejects: list[Reject] = field(default_factory=list)
    removed_overlap: int = 0

    def report(self) -> dict:
        return {"train_rows": len(self.train), "heldout_rows": len(self.heldout),
                "train_audit": self.audit.report.as_dict(),
                "heldout_rejects": reject_counts(self.heldout_rejects),
                "train_rows_removed_for_overlap_with_heldout": self.removed_overlap}


def build_splits(cfg: RunConfig) -> Splits:
    """Audit the recipe's training source and sample the held-out prompts; never let a held-out prompt train.

    Held-out prompts are a seeded sample of the evaluation file (GSM8K *test*); training rows that overlap an
    evaluation set are removed by decontamination, and a verbatim check against the sample guards that anyway.
    """
    recipe, mode = cfg.recipe, cfg.mode
    policy = DataPolicy.from_recipe(recipe)
    train_rejects: list[Reject] = []
    records = iter_records(mode.train_source, recipe.dataset_split, recipe.dataset_config)
    converted = convert_rows(records, policy.schema, policy.field_mapping, source_id_prefix(mode.train_source))
    audit = run_pipeline(converted, policy, limit=mode.train_rows, on_reject=train_rejects.append,
                         source=mode.train_source)
    check_reject_fraction(audit.report, recipe.max_reject_fraction, recipe.name)
    pool, heldout_rejects = read_reasoning_rows(mode.eval_source, "gsm8k")
    heldout = random.Random(recipe.seed).sample(pool, k=min(mode.eval_rows, len(pool)))
    train = audit.kept
    overlap = overlap_report(heldout, train)  # counts train rows whose prompt is a held-out prompt
    if overlap:
        held = {prompt_key(h) for h in heldout}
        train = [t for t in train if prompt_key(t) not in held]
    if not train:
        raise ValueError(f"{mode.train_source}: no usable training rows "
                         f"({dict(audit.report.rejected.most_common())})")
    return Splits(train, heldout, audit, heldout_rejects, train_rejects, overlap)


def save_splits(cfg: RunConfig, splits: Splits) -> dict:
    """Write train/heldout/rejects JSONL and the stage manifest; return the manifest facts."""
    out = cfg.stage_dir(STAGE)
    files = {"train": out / "train.jsonl", "heldout": out / "heldout.jsonl", "rejects": out / "rejects.jsonl"}
    write_jsonl(files["train"], splits.train)
    write_jsonl(files["heldout"], splits.heldout)
    write_jsonl(files["rejects"], [r.__dict__ for r in splits.train_rejects + splits.heldout_rejects])
    facts = splits.report()
    write_manifest(cfg, STAGE, {"train_source": cfg.mode.train_source, "eval_source": cfg.mode.eval_source}, files,
                   facts)
    return facts


def teacher_traces(cfg: RunConfig) -> dict | None:
    """Run the optional teacher step (`teacher_generation` in the recipe); None when the recipe has none.

    Kept traces (complete, closed `</think>`, answer verified by math-verify) are written as chat messages with
    `reasoning_content` to `<output stem>.kept.jsonl`, which a recipe's `dataset_path` can name. A dry-run or a
    --tiny run only validates the block (no prompt is read, no request sent). Prompts are any source 01 reads (file
    or hub name).
    """
    if not cfg.recipe.teacher_generation:
        return None
    settings = teacher_settings(cfg.recipe.teacher_generation)
    return cfg.mode.generate_traces(settings, read_reasoning_rows, reply_matches_reference)
