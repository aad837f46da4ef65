"""Verifiable rewards for GRPO: small pure functions of one completion, then TRL's batch signature around them.

Usage: ``correctness("<think>2 + 3 = 5.</think>The answer is 5.", "5")`` → 1.0;
``reward_functions(settings)`` → the functions `GRPOTrainer(reward_funcs=...)` calls, weights in the recipe.

- correctness: 1 when the answer is the reference by math-verify — the rule the data stage verifies traces with and
  05 judges by (`lib.evaluate.judging.judge_sample`), so GRPO optimises what 05 measures. The answer is the text after
  a closed `</think>`; an opened, unclosed thought has none; a reply that never opens one is all answer (as 05 reads
  a base model's), which the format reward then leaves at 0.
- format: 1 for exactly one `<think>…</think>` first, closed, both parts non-empty (what 01 requires of a trained
  reply, `lib.think`); 0 otherwise. A completion cut at the length limit never closes and so earns 0 here.
- overlong: DAPO's soft overlong punishment. 0 up to `limit - buffer` tokens, then falling linearly to -1 at the
  limit; a completion cut at the limit (no end of turn) gets -1. It discourages runaway thinking without punishing
  a long but finished thought as hard as a runaway one.
"""
from __future__ import annotations

from lib.rejects import RejectError
from lib.evaluate.judging import judge_sample
from lib.think import check_reply, split_think_block

REWARD_NAMES = ("correctness", "format", "overlong")


def completion_text(completion) -> str:
    """TRL hands a conversational completion as `[{"role": "assistant", "content": …}]`, a plain one as text."""
    if isinstance(completion, str):
        return completion
    return "".join(message["content"] for message in completion if message.get("role") == "assistant")


def correctness(text: str, reference: str, prompt_opens_think: bool = False) -> float:
    """1.0 when the reply's answer (`judge_sample`: after the closed thought, or all of a reply without one)
    states `reference` (math-verify), else 0.0."""
    return 1.0 if judge_sample(text, reference, prompt_opens_think)["correct"] else 0.0


def format_reward(text: str, prompt_opens_think: bool = False) -> float:
    """1.0 for one closed, non-empty thought first, then a non-empty answer with no think tag in it; else 0.0."""
    try:
        check_reply(*split_think_block(text, prompt_opens_think))
    except RejectError:
        return 0.0
    return 1.0


def overlong(length: int, limit: int, buffer: int, cut: bool) -> float:
    """DAPO's soft overlong punishment of a completion of `length` tokens under a `limit` (max_completion_length):
    0 below `limit - buffer`, linear down to -1 at `limit`; -1 when the completion was `cut` there."""
    if cut or length >= limit:
        return -1.0
    start = limit - buffer
    return 0.0 if length <= start else (start - length) / buffer


def reward_functions(limit: int, buffer: int, end_token_ids: set[int], prompt_opens_think: bool = False,
                     decode=None) -> list:
    """The three rewards in TRL's signature (`prompts, completions, completion_ids, **dataset columns`), named as the
    trainer logs them (`rewards/<name>/mean`). `answer` is the dataset column with the reference.

    `decode` (token ids -> text): the completion as the model wrote it, special tokens kept. TRL's `completions`
    are decoded with skip_special_tokens=True, which would erase `<think>` where a tokenizer marks it special (05
    decodes with them kept); the end-of-turn token is left out before decoding. Without `decode`, TRL's text."""
    def texts(completions, completion_ids):
        if decode is None:
            return [completion_text(c) for c in completions]
        return [decode([i for i in ids if i not in end_token_ids]) for ids in completion_ids]

    def correctness_reward(prompts, completions, completion_ids, answer, **_):
        return [correctness(text, ref, prompt_opens_think) for text, ref in zip(texts(completions, completion_ids),
                                                                                 answer)]

    def format_reward_(prompts, completions, completion_ids, **_):
        return [format_reward(text, prompt_opens_think) for text in texts(completions, completion_ids)]

    def overlong_reward(prompts, completions, completion_ids, **_):
        # cut = no end-of-turn (or padding) token at the end: TRL stopped generating at max_completion_length
        return [overlong(len(ids), limit, buffer, cut=not ids or ids[-1] not in end_token_ids)
                for ids in completion_ids]

    correctness_reward.__name__, format_reward_.__name__, overlong_reward.__name__ = REWARD_NAMES
    return [correctness_reward, format_reward_, overlong_reward]
