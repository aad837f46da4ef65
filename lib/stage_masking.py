"""Stage 02 (and the input of 03): response-only masks for every training row, with the length policy applied.

Usage: ``tok = tokenizer_for(cfg); masked = mask_rows(cfg, rows, tok); masked.stats``
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lib.masking import (
    MaskedExample, MaskingError, build_masked_example, build_masked_examples, build_plain_example, mask_stats,
)
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
    return mask_all([row], tokenizer, cfg.recipe)[0]


def mask_all(rows: list[dict], tokenizer, recipe) -> list[MaskedExample]:
    """Canonical rows -> masked examples in the recipe's chat format (chat templates: one tokenizer call a batch)."""
    if recipe.chat_format == "plain":
        examples = []
        for row in rows:
            roles = [m["role"] for m in row["messages"]]
            if roles != ["user", "assistant"]:  # the pattern has one problem and one reply, nothing else
                raise MaskingError(f"sample {row['id']}: plain_format takes one user turn and one reply; this row "
                                   f"has {' -> '.join(roles)} (use a chat template, or single-turn data)")
            user = row["messages"][0]["content"]
            reply = row["messages"][-1]
            examples.append(build_plain_example(user, reply["think"], reply["answer"], tokenizer,
                                                recipe.plain_format, row["id"]))
        return examples
    conversations = [to_chat_messages(row, recipe.system_prompt) for row in rows]
    return build_masked_examples(conversations, tokenizer, recipe.chat_template_kwargs, recipe.assistant_turns,
                                 [row["id"] for row in rows])


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
    for row, example in zip(rows, mask_all(rows, tokenizer, recipe)):
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


def turn_type_examples(cfg: RunConfig, rows: list[dict], tokenizer) -> dict[str, MaskedExample]:
    """One masked example per turn type the recipe can meet, for the notebook's coloured views.

    The first training row as it is trained; with a chat template also the first two rows joined into one
    two-turn conversation, masked with `assistant_turns: all` and `last` (shows how this template treats history).
    """
    examples = {"single turn (as trained)": mask_row(rows[0], tokenizer, cfg)}
    if cfg.recipe.chat_format == "plain" or len(rows) < 2:
        return examples
    first, second = (to_chat_messages(row, cfg.recipe.system_prompt) for row in rows[:2])
    conversation = first + [m for m in second if m["role"] != "system"]
    for turns in ("all", "last"):
        examples[f"two turns, assistant_turns: {turns}"] = build_masked_example(
            conversation, tokenizer, cfg.recipe.chat_template_kwargs, turns, f"{rows[0]['id']}+{rows[1]['id']}")
    return examples


def example_browser(masked: MaskedRows, tokenizer):
    """A slider over every masked example with its coloured view (live in JupyterLab; static notebooks show the
    widget's text only, which is why the notebook also prints fixed examples)."""
    import ipywidgets as widgets

    from lib.masking import colored_html

    slider = widgets.IntSlider(value=0, min=0, max=max(0, len(masked.examples) - 1), description="example")
    view = widgets.HTML()

    def show(_change=None):
        example = masked.examples[slider.value]
        view.value = (f"<b>{masked.ids[slider.value]}</b>: {len(example.input_ids)} tokens, {example.n_trained} "
                      f"trained<br>" + colored_html(example, tokenizer))

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, view])


def mask_histograms(masked: MaskedRows, path, max_length: int, title: str):
    """Two histograms (PNG): tokens per example with the max_length line, and trained fraction per example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
    lengths = [len(e.input_ids) for e in masked.examples] + [n for _, n in masked.dropped_overlong]
    left.hist(lengths, bins=30, color="#4c72b0")
    left.axvline(max_length, color="#c44e52", linestyle="--", label=f"max_length {max_length}")
    left.set(xlabel="tokens per example", ylabel="examples", title=title)
    left.legend()
    right.hist([e.n_trained / len(e.input_ids) for e in masked.examples], bins=30, range=(0, 1), color="#55a868")
    right.set(xlabel="trained fraction of the example's tokens", ylabel="examples", title="response-only mask")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trained_fraction_table(masked: MaskedRows, limit: int = 10):
    """Per-sample stats as a Markdown table: id, tokens, trained tokens, trained fraction, untrained turns."""
    from IPython.display import Markdown

    rows = [f"| {i} | {len(e.input_ids)} | {e.n_trained} | {e.n_trained / len(e.input_ids):.1%} | "
            f"{len(e.untrained_turns)} |" for i, e in list(zip(masked.ids, masked.examples))[:limit]]
    more = len(masked.examples) - limit
    return Markdown("| id | tokens | trained | trained fraction | untrained turns |\n|---|---|---|---|---|\n"
                    + "\n".join(rows) + (f"\n\n… and {more} more (all in the histogram)" if more > 0 else ""))
