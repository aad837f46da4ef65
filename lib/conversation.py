"""Reasoning data in one canonical form, from the schemas the recipes use.

Usage: ``messages = to_chat_messages(example, system_prompt="")``  (what a chat template renders)

The canonical example (one place that defines it)::

    {"id": "gsm8k-train-00017",
     "messages": [{"role": "system", "content": "..."},            # optional
                  {"role": "user", "content": "question"},
                  {"role": "assistant", "think": "step by step ...", "answer": "The answer is 72."}],
     "answer": "72",           # reference final answer when the source has one, else None
     "source": "gsm8k", "domain": "math"}

Chat sources may hold several user/assistant turns; the last turn is always an assistant turn after a user turn.
The data stage (`lib.data`) writes this form; masking renders it with the chat template; evaluation asks its
prompts. The trained reply text is `lib.think.assistant_text(think, answer)`.
"""
from __future__ import annotations

from lib.think import THINK_OPEN, assistant_text


def to_chat_messages(example: dict, system_prompt: str = "") -> list[dict]:
    """Canonical example -> plain `{"role", "content"}` messages for a chat template."""
    messages = []
    if system_prompt and example["messages"][0]["role"] != "system":
        messages.append({"role": "system", "content": system_prompt})
    for turn in example["messages"]:
        if turn["role"] == "assistant":
            messages.append({"role": "assistant", "content": assistant_text(turn["think"], turn["answer"])})
        else:
            messages.append({"role": turn["role"], "content": turn["content"]})
    return messages


def prompt_messages(example: dict, system_prompt: str = "") -> list[dict]:
    """Everything before the last assistant turn: what a model is asked at evaluation time."""
    return to_chat_messages(example, system_prompt)[:-1]


def generation_prompt_opens_think(tokenizer, messages: list[dict], template_kwargs: dict | None = None) -> bool:
    """Whether the chat template's generation prompt already writes `<think>` (DeepSeek-R1-Distill's ends with
    `<｜Assistant｜><think>\n`): the model's output then starts inside the block, and judging it must put the
    opening back."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                           **(template_kwargs or {}))
    return prompt.rstrip().endswith(THINK_OPEN)


def plain_prompt(plain_format: str, problem: str) -> str:
    """The prompt half of a base-model format (`plain_format` of the recipe): everything before `<think>`.

    Trailing spaces are left to the response: BPE and SentencePiece attach a space to the token after it
    (`Assistant: <think>` tokenises as `:`, ` <`), so a prompt ending in a space would hand the model a lone
    space token it never saw in training. Trailing newlines stay (they attach to the token before them).
    """
    head, sep, _ = plain_format.partition(THINK_OPEN)
    if not sep:
        raise ValueError("plain_format must contain the literal <think> where the response starts")
    return head.format(problem=problem).rstrip(" ")


def prompt_key(example: dict) -> str:
    """The last user prompt, whitespace-normalised and lower-cased: what "the same question" means here."""
    return " ".join(example["messages"][-2]["content"].split()).lower()


def overlap_report(train: list[dict], heldout: list[dict]) -> int:
    """How many held-out prompts appear verbatim (whitespace-normalised) among training prompts."""
    seen = {prompt_key(e) for e in train}
    return sum(prompt_key(e) in seen for e in heldout)


def to_reasoning_messages(example: dict) -> dict:
    """A canonical row as chat messages whose reply carries `reasoning_content` (the `messages` schema reads it
    back): the layout teacher traces are written in."""
    *prompt, reply = example["messages"]
    return {**example, "messages": [*prompt, {"role": "assistant", "reasoning_content": reply["think"],
                                              "content": reply["answer"]}]}
