"""Stage 01: build the training set and the held-out prompts in canonical form, with every reject counted.

Usage: ``splits = build_splits(cfg); splits.report()``
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from lib.reasoning_data import (Reject, overlap_report, prompt_key, read_jsonl, read_reasoning_rows, reject_counts,
                                 write_jsonl)
from lib.run_config import RunConfig, read_manifest, write_manifest

STAGE = "01_data"


@dataclass
class Splits:
    train: list[dict]
    heldout: list[dict]
    train_rejects: list[Reject] = field(default_factory=list)
    heldout_rejects: list[Reject] = field(default_factory=list)
    removed_overlap: int = 0

    def report(self) -> dict:
        return {"train_rows": len(self.train), "heldout_rows": len(self.heldout),
                "train_rejects": reject_counts(self.train_rejects),
                "heldout_rejects": reject_counts(self.heldout_rejects),
                "train_rows_removed_for_overlap_with_heldout": self.removed_overlap}


def build_splits(cfg: RunConfig) -> Splits:
    """Read the recipe's training source and held-out source; never let a held-out prompt into training.

    Held-out prompts are a seeded sample of the evaluation file (GSM8K *test*), so they are disjoint from the
    training file by construction; a verbatim-overlap check removes any that slipped in anyway, and counts it.
    """
    recipe = cfg.recipe
    train, train_rejects = read_reasoning_rows(cfg.train_source, recipe.dataset_format, limit=cfg.train_rows,
                                               split=recipe.dataset_split, config=recipe.dataset_config)
    pool, heldout_rejects = read_reasoning_rows(cfg.eval_source, "gsm8k")
    heldout = random.Random(recipe.seed).sample(pool, k=min(cfg.eval_rows, len(pool)))
    overlap = overlap_report(heldout, train)  # counts train rows whose prompt is a held-out prompt
    if overlap:
        held = {prompt_key(h) for h in heldout}
        train = [t for t in train if prompt_key(t) not in held]
    if not train:
        raise ValueError(f"{cfg.train_source}: no usable training rows ({reject_counts(train_rejects)})")
    return Splits(train, heldout, train_rejects, heldout_rejects, overlap)


def save_splits(cfg: RunConfig, splits: Splits) -> dict:
    """Write train/heldout/rejects JSONL and the stage manifest; return the manifest facts."""
    out = cfg.stage_dir(STAGE)
    files = {"train": out / "train.jsonl", "heldout": out / "heldout.jsonl", "rejects": out / "rejects.jsonl"}
    write_jsonl(files["train"], splits.train)
    write_jsonl(files["heldout"], splits.heldout)
    write_jsonl(files["rejects"], [r.__dict__ for r in splits.train_rejects + splits.heldout_rejects])
    facts = splits.report()
    write_manifest(cfg, STAGE, {"train_source": cfg.train_source, "eval_source": cfg.eval_source}, files, facts)
    return facts


def load_splits(cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) written by stage 01 in this run folder."""
    read_manifest(cfg, STAGE)
    folder = cfg.run_dir / STAGE
    return read_jsonl(folder / "train.jsonl"), read_jsonl(folder / "heldout.jsonl")
