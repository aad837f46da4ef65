"""Stage 02 (and the input of 03): response-only masks for every training row, with the length policy applied.

Usage: ``tok = tokenizer_for(cfg); masked = mask_rows(cfg, rows, tok); masked.stats``
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lib.masking import MaskedExample, MaskingError, build_masked_example, build_plain_example, mask_stats
from lib.reasoning_data import to_chat_messages
from lib.run_config import RunConfig

STAGE = "02_masking"


def tokenizer_for(cfg: RunConfig):
    """The family's fixture tokenizer in a dry-run, the model's own otherwise (same template either way)."""
    from lib.tokenizer_loading import load_fixture_tokenizer, load_model_tokenizer

    if cfg.tokenizer_fixture:
        return load_fixture_tokenizer(cfg.tokenizer_fixture)
    from lib.base_model import resolve_base_model

    return load_model_tokenizer(resolve_base_model(cfg.model_source), cfg.recipe.trust_remote_code)


def mask_row(row: dict, tokenizer, cfg: RunConfig) -> MaskedExample:
    """One canonical row -> masked example, in the recipe's chat format."""
    recipe = cfg.recipe
    if recipe.chat_format == "plain":
        user = next(m["content"] for m in row["messages"] if m["role"] == "user")
        reply = row["messages"][-1]
        return build_plain_example(user, reply["think"], reply["answer"], tokenizer, recipe.plain_format, row["id"])
    messages = to_chat_messages(row, recipe.system_prompt)
    return build_masked_example(messages, tokenizer, recipe.chat_template_kwargs, recipe.assistant_turns, row["id"])


@dataclass
class MaskedRows:
    examples: list[MaskedExample]
    ids: list[str]
    dropped_overlong: list[tuple[str, int]] = field(default_factory=list)  # (id, tokens)
    stats: dict = field(default_factory=dict)


def mask_rows(cfg: RunConfig, rows: list[dict], tokenizer) -> MaskedRows:
    """Mask every row; examples over `max_length` are dropped (policy drop) or stop the run (policy raise).

    Nothing is truncated: a cut example would lose its `</think>`, its answer or its end-of-turn token, and
    the model would never learn to stop.
    """
    recipe = cfg.recipe
    kept, ids, dropped = [], [], []
    for row in rows:
        example = mask_row(row, tokenizer, cfg)
        if len(example.input_ids) > recipe.max_length:
            if recipe.overlong_policy == "raise":
                raise MaskingError(
                    f"sample {row['id']} has {len(example.input_ids)} tokens > max_length {recipe.max_length} "
                    f"({recipe.name}). Raise max_length, or set overlong_policy: drop to skip such samples "
                    "(they are counted, never cut)")
            dropped.append((row["id"], len(example.input_ids)))
            continue
        kept.append(example)
        ids.append(row["id"])
    stats = mask_stats(kept, recipe.max_length)
    stats.update({"dropped_overlong": len(dropped), "max_length": recipe.max_length})
    return MaskedRows(kept, ids, dropped, stats)


def length_histogram(masked: MaskedRows, path, max_length: int, title: str):
    """Token-length histogram of the kept examples with the max_length line (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    lengths = [len(e.input_ids) for e in masked.examples] + [n for _, n in masked.dropped_overlong]
    ax.hist(lengths, bins=30, color="#4c72b0")
    ax.axvline(max_length, color="#c44e52", linestyle="--", label=f"max_length {max_length}")
    ax.set(xlabel="tokens per example", ylabel="examples", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trained_fraction_table(masked: MaskedRows, limit: int = 10) -> list[dict]:
    """Per-sample rows for the stats table: id, tokens, trained tokens, trained fraction."""
    return [{"id": i, "tokens": len(e.input_ids), "trained": e.n_trained,
             "trained_fraction": round(e.n_trained / len(e.input_ids), 3)}
            for i, e in list(zip(masked.ids, masked.examples))[:limit]]
