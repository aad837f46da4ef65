"""Stage 02: response-only masks for every training row, the length audit and the overlong policy, saved once.

Usage: ``rows = read_rows(cfg); masked = mask_rows(cfg.recipe, rows, cfg.mode.tokenizer()); save_masked(cfg, masked)``

This is the only place the training set is tokenised: 03 trains from `02_masking/masked.parquet` and the
`max_length` written beside it. Nothing is ever truncated: an example over `max_length` would lose its `</think>`,
its answer or its end-of-turn token, and the model would never learn to stop; `overlong_policy` raises, drops
(counted) or fits `max_length` to a percentile of the lengths.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lib.conversation import to_chat_messages
from lib.jsonl import read_jsonl, write_jsonl
from lib.masking.dataset import write_masked
from lib.masking.lengths import (CHUNK, OVERLONG, LengthAudit, LengthDecision, decide_max_length,
                                 length_summary)
from lib.masking.masker import mask_all
from lib.masking.templates import MaskedExample, MaskingError, build_masked_example, end_of_turn_tokens, mask_stats
from lib.plan.recipe_plan import memory_plan
from lib.recipe import Recipe
from lib.rejects import Reject, reject_counts, reject_samples
from lib.run_config import RunConfig, stage_file, write_manifest

STAGE = "02_masking"

def read_rows(cfg: RunConfig) -> list[dict]:
    """The training rows 01_data kept, in order (a row's line in that file is its line in 02's rejects)."""
    return read_jsonl(stage_file(cfg, "01_data", "train"))

@dataclass
class MaskedRows:
    """Every row's fate: a masked example that fits `decision.max_length`, or a reject (with its reason)."""

    examples: list[MaskedExample]
    ids: list[str]
    decision: LengthDecision
    lengths: dict[str, int]  # id -> tokens, for every example the template could mask
    rejects: list[Reject] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

def mask_rows(recipe: Recipe, rows: list[dict], tokenizer) -> MaskedRows:
    """Mask every row (one batched tokenizer call per chunk) and apply the recipe's overlong policy.

    A row the template cannot mask is a reject (counted against `max_reject_fraction`); an example over the
    chosen max_length is dropped and counted (policies drop and fit) or stops the run (raise).
    """
    audit = LengthAudit(lambda chunk: mask_all(chunk, tokenizer, recipe), end_of_turn_tokens(tokenizer))
    for line, row in enumerate(rows, start=1):
        audit.add(line, row)
        if recipe.overlong_policy == "raise" and line % CHUNK == 0:  # no need to mask the rest: the run stops
            decide_max_length(audit.lengths(), recipe.max_length, "raise", recipe.fit_percentile, recipe.name)
    audit.finish()
    bad = len(audit.rejects) / max(1, len(rows))
    if bad > recipe.max_reject_fraction:
        raise MaskingError(f"{len(audit.rejects)} of {len(rows)} rows ({bad:.1%}) cannot be masked by the chat "
                           f"template (> max_reject_fraction {recipe.max_reject_fraction:g} of {recipe.name}); "
                           f"first: {audit.rejects[0].id}: {audit.rejects[0].detail}")
    decision = decide_max_length(audit.lengths(), recipe.max_length, recipe.overlong_policy, recipe.fit_percentile,
                                 recipe.name)
    kept, ids, rejects = [], [], list(audit.rejects)
    for line, row_id, example, tokens in audit.measured:
        if tokens > decision.max_length:
            rejects.append(Reject(line, row_id, OVERLONG, f"{tokens} tokens > {decision.max_length}"))
            continue
        kept.append(example)
        ids.append(row_id)
    if not kept:
        raise MaskingError(f"{recipe.name}: no training example left: {len(rows)} rows from 01, {len(audit.rejects)} "
                           f"the template cannot mask, {decision.over} longer than max_length {decision.max_length} "
                           f"(overlong_policy {recipe.overlong_policy}). Raise max_length or check the chat template")
    stats = mask_stats(kept, decision.max_length) | {"dropped_overlong": decision.over,
                                                     "cannot_mask": len(audit.rejects),
                                                     "max_length": decision.max_length}
    return MaskedRows(kept, ids, decision, {row_id: tokens for _, row_id, _, tokens in audit.measured}, rejects,
                      stats)

def memory_at_max_length(recipe: Recipe, decision: LengthDecision) -> dict:
    """Planned training memory (GiB) at the recipe's max_length and at the chosen one (they differ under fit)."""
    cost = {f"recipe max_length {recipe.max_length}": memory_plan(recipe).as_dict()["total_gib"]}
    if decision.max_length != recipe.max_length:
        fitted = memory_plan(recipe, decision.max_length).as_dict()["total_gib"]
        cost[f"fitted max_length {decision.max_length}"] = fitted
    return {"total_gib": cost, "hardware": recipe.hardware, "vram_budget_gib": recipe.vram_budget_gib}

def save_masked(cfg: RunConfig, masked: MaskedRows) -> dict:
    """Write masked.parquet (what 03 trains on), rejects.jsonl and the manifest (with max_length); return facts."""
    out = cfg.stage_dir(STAGE)
    files = {"masked": out / "masked.parquet", "rejects": out / "rejects.jsonl"}
    write_masked(files["masked"], masked.ids, masked.examples)
    write_jsonl(files["rejects"], [r.__dict__ for r in masked.rejects])
    facts = {**masked.stats, "length_policy": masked.decision.__dict__,
             "lengths": length_summary(list(masked.lengths.values()), cfg.recipe.max_length),
             "rejected_per_reason": reject_counts(masked.rejects),
             "reject_samples": reject_samples(masked.rejects),
             "memory_at_max_length": memory_at_max_length(cfg.recipe, masked.decision)}
    write_manifest(cfg, STAGE, {"train": stage_file(cfg, "01_data", "train")}, files, facts)
    return facts

def turn_type_examples(recipe: Recipe, rows: list[dict], tokenizer) -> dict[str, MaskedExample]:
    """One masked example per turn type the recipe can meet, for the notebook's coloured views.

    The first training row as it is trained; with a chat template also the first two rows joined into one
    two-turn conversation, masked with `assistant_turns: all` and `last` (shows how this template treats history).
    """
    examples = {"single turn (as trained)": mask_all(rows[:1], tokenizer, recipe)[0]}
    if recipe.chat_format == "plain" or len(rows) < 2:
        return examples
    first, second = (to_chat_messages(row, recipe.system_prompt) for row in rows[:2])
    conversation = first + [m for m in second if m["role"] != "system"]
    for turns in ("all", "last"):
        examples[f"two turns, assistant_turns: {turns}"] = build_masked_example(
            conversation, tokenizer, recipe.chat_template_kwargs, turns, f"{rows[0]['id']}+{rows[1]['id']}")
    return examples
