"""How a recipe masks canonical rows: its chat template (or plain format), system prompt and trained turns.

Usage: ``examples = mask_all(rows, tokenizer, recipe)``  (one batched tokenizer call for chat templates)
"""
from __future__ import annotations

from lib.conversation import to_chat_messages
from lib.masking.templates import MaskedExample, MaskingError, build_masked_examples, build_plain_example
from lib.recipe import Recipe


def mask_all(rows: list[dict], tokenizer, recipe: Recipe) -> list[MaskedExample]:
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
