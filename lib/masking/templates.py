"""Response-only loss masks from the model's own chat template: `(input_ids, labels)` per conversation.

Usage: ``ids, labels = build_masked_example(messages, tokenizer).as_tuple()``

Trained tokens are exactly the assistant's content (think + answer) and the end-of-turn token that follows it
(`<|eot_id|>`, `<|im_end|>`, `</s>` …), so the model learns to stop. Role headers, generation prompts, system
and user text get label -100. No hand-written delimiters: the trained text is what the template writes for each
reply, found by rendering the generation prompt (and, for earlier turns, the same prompt with the reply swapped
for a marker). Templates that move text (Mistral v3's system prompt) are trained on what inference sends;
templates that rewrite earlier replies (Qwen3 drops their `<think>`) leave those turns untrained and say so;
anything that would damage the trained reply or its end-of-turn token is refused with a message (special-token
text inside a message, template text inserted before a reply, trimmed replies, non-text content).

One tokenizer limitation stays: byte-level BPE may merge whitespace across the prompt/reply boundary (a ChatML
reply starting with "\n" shares the `\n\n` token with the header); such a token is trained, so no reply character
is ever lost.
"""
from __future__ import annotations

import functools
import gc
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from operator import ge, le
from typing import NamedTuple

from lib.conversation import plain_prompt

IGNORE_INDEX = -100


class MaskingError(ValueError):
    """The conversation cannot be masked faithfully with this template; the message says why and what to do."""


@dataclass
class MaskedExample:
    """Token ids, labels (-100 = not trained) and the character ranges that were trained."""

    input_ids: list[int]
    labels: list[int]
    text: str
    offsets: list[tuple[int, int]]
    trained_char_ranges: list[tuple[int, int]]
    untrained_turns: list[dict] = field(default_factory=list)  # selected turns the template rewrites (see Layout)

    def as_tuple(self) -> tuple[list[int], list[int]]:
        return self.input_ids, self.labels

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def render(tokenizer, messages: list[dict], add_generation_prompt: bool, template_kwargs: dict) -> str:
    """The chat template's text for `messages` (never tokenised here, so offsets refer to this string)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **template_kwargs)


class Layout(NamedTuple):
    """Where training happens in one rendered conversation."""

    text: str  # the rendered conversation that is tokenised
    ranges: list[tuple[int, int]]  # [start, end) of each trained assistant turn: content + end-of-turn token
    untrained_turns: list[dict]  # {"turn", "reason"} for selected turns the template does not show verbatim


REWRITTEN_REPLY = ("the template rewrites this earlier reply (e.g. Qwen3 drops its <think>); it stays in the "
                   "context as rendered, untrained")

# A private-use marker put in place of one assistant reply to find where the template writes that reply.
SENTINEL = "\ue000thinkdistill-reply\ue001"


def assistant_char_ranges(tokenizer, messages: list[dict], template_kwargs: dict | None = None,
                          assistant_turns: str = "all", sample_id: str = "?") -> Layout:
    """The rendered text and the character range of each trained assistant turn.

    The text is the conversation as the model sees it when it writes the *last* assistant reply: the template's
    generation prompt for that reply, then the reply and its end-of-turn token. Usually that is simply the full
    render; templates that move text once the reply exists (Mistral v3 writes the system prompt into the last user
    turn, and drops it when an assistant turn ends the conversation) are trained on what inference sends.
    Earlier replies are found by rendering the same prompt with the reply swapped for a marker; one the template
    rewrites (Qwen3 drops `<think>` from earlier turns) stays in the context as rendered, untrained, and is listed
    in `untrained_turns`. The last reply must appear verbatim or the sample is refused.
    """
    kwargs = template_kwargs or {}
    if not getattr(tokenizer, "chat_template", None):
        raise MaskingError(f"sample {sample_id}: the tokenizer has no chat template; set chat_format: plain with a "
                           "plain_format in the params file, or pass a template")
    if assistant_turns not in ("all", "last"):
        raise ValueError(f"assistant_turns must be 'all' or 'last', not {assistant_turns!r}")
    end_tokens = end_of_turn_tokens(tokenizer)
    _check_contents(messages, end_tokens, sample_id)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        raise MaskingError(f"sample {sample_id}: no assistant turn to train")
    last = turns[-1]
    if last == 0:
        raise MaskingError(f"sample {sample_id}: the only assistant turn opens the conversation; there is no prompt "
                           "to answer")
    text, prompt, last_start = _training_text(tokenizer, messages, last, kwargs, end_tokens, sample_id)
    ranges, untrained = [], []
    for index in turns if assistant_turns == "all" else [last]:
        if index == last:
            start, generation_prompt = last_start, prompt
        elif index == 0:  # a greeting that opens the conversation: no prompt asked for it
            untrained.append({"turn": 0, "reason": "opens the conversation: no prompt before it; it stays in the "
                              "context, untrained"})
            continue
        elif _absent(messages[index]["content"], prompt):  # rewritten for sure, no render needed to tell
            untrained.append({"turn": index, "reason": REWRITTEN_REPLY})
            continue
        else:
            generation_prompt = render(tokenizer, messages[:index], True, kwargs)
            start = _verbatim_after(prompt, generation_prompt, messages[index]["content"])
            if start is None:  # not plainly there: ask the template with a marker (costs one more render)
                start = _locate_reply(tokenizer, messages[:last], index, True, kwargs, prompt, sample_id)
            if start is None:
                untrained.append({"turn": index, "reason": REWRITTEN_REPLY})
                continue
            if prompt.startswith(generation_prompt) and prompt[len(generation_prompt):start].strip():
                raise MaskingError(
                    f"sample {sample_id}: the template writes {prompt[len(generation_prompt):start].strip()[:60]!r} "
                    f"between the generation prompt and assistant turn {index} (e.g. Qwen3 renders a "
                    "reasoning_content field there); put the reasoning inside the content as <think>…</think>")
        end = start + len(messages[index]["content"])
        eot = _end_of_turn_at(text, end, end_tokens, tokenizer, index, sample_id)
        # never before the end of the prompt: a prompt that opens the reply (`<think>\n`) keeps those tokens masked
        first = start - _separator_length(text[:start], generation_prompt)
        ranges.append((max(first, len(prompt)) if index == last else first, end + len(eot)))
    return Layout(text, ranges, untrained)


def _check_contents(messages: list[dict], special_tokens: list[str], sample_id: str) -> None:
    """Refuse what the template would render but the mask cannot account for, naming the message.

    Text content only (tool calls and content parts are not masked); no special-token text (the tokenizer would
    turn "<|im_end|>" written in a reply into the real control token, and training would teach the model to stop
    or switch roles mid-answer); no U+E000 (the marker `_locate_reply` uses).
    """
    special_text = _special_token_pattern(tuple(special_tokens))
    for number, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, str):
            raise MaskingError(f"sample {sample_id}: message {number} ({message.get('role')}) has no text content "
                               f"({type(content).__name__}); only text messages can be masked")
        if SENTINEL[0] in content:
            raise MaskingError(f"sample {sample_id}: message {number} contains U+E000, a private-use character "
                               "the masker reserves")
        found = special_text.search(content)
        if found is not None:
            raise MaskingError(f"sample {sample_id}: message {number} ({message.get('role')}) contains the special "
                               f"token {found.group(0)!r} as text; it would be encoded as the control token itself. "
                               "Remove or escape it")


@functools.lru_cache(maxsize=16)
def _special_token_pattern(specials: tuple[str, ...]) -> re.Pattern:
    """One regex for all special tokens (longest first): one scan per message instead of one per token."""
    return re.compile("|".join(map(re.escape, specials)) or r"(?!)")


def _absent(content: str, prompt: str) -> bool:
    """True when an earlier reply cannot be written verbatim in `prompt`: it is not even a substring, nor is its
    stripped form (a template that only trims must still reach `_locate_reply`, which refuses trimmed replies)."""
    return content not in prompt and content.strip() not in prompt


def _verbatim_after(text: str, generation_prompt: str, content: str) -> int | None:
    """Fast path: where `content` starts if `text` continues `generation_prompt` with it (whitespace between).

    Only for non-empty content without edge whitespace: a template that trims could otherwise leave a shifted
    match, and those cases go to the marker render (`_locate_reply`), which tells trimming from rewriting.
    Whether the template closed the reply is checked by the caller (end-of-turn token right after it).
    """
    if not content or content != content.strip():
        return None
    return _continues_with(text, generation_prompt, content)


def _continues_with(text: str, generation_prompt: str, content: str) -> int | None:
    """Where `content` starts when `text` is `generation_prompt`, then only whitespace, then `content`."""
    if not text.startswith(generation_prompt):
        return None
    start = text.find(content, len(generation_prompt))
    return start if start >= 0 and not text[len(generation_prompt):start].strip() else None


def _trailing_whitespace(text: str) -> str:
    return text[len(text.rstrip()):]


def _separator_length(before_reply: str, generation_prompt: str) -> int:
    """Characters of whitespace the template writes between a reply's generation prompt and the reply.

    They are trained with the reply: inference stops at the generation prompt, so the model must write them
    itself (Mistral's " " after `[/INST]`, which SentencePiece glues to the first word or keeps as a lone `▁`).
    """
    return max(0, len(_trailing_whitespace(before_reply)) - len(_trailing_whitespace(generation_prompt)))


def _training_text(tokenizer, messages: list[dict], last: int, kwargs: dict, end_tokens: list[str],
                   sample_id: str) -> tuple[str, str, int]:
    """(text to train on, generation prompt of the last reply, where the last reply starts in the text)."""
    prompt = render(tokenizer, messages[:last], True, kwargs)
    full = render(tokenizer, messages, False, kwargs)
    content = messages[last]["content"]
    start = _verbatim_after(full, prompt, content)
    if start is None:
        start = _locate_reply(tokenizer, messages, last, False, kwargs, full, sample_id)
    if start is None:
        # Templates that reformat the reply being generated (Qwen3 re-assembles <think> from the content) still
        # write a canonical reply verbatim right after the generation prompt.
        start = _continues_with(full, prompt, content)
    if start is None:
        opened = _reply_opened_by_prompt(tokenizer, messages, last, kwargs, prompt, end_tokens)
        if opened is not None:
            return opened
        raise MaskingError(
            f"sample {sample_id}: assistant turn {last} does not appear verbatim after its generation prompt (the "
            "template rewrites the reply being trained, e.g. reformats <think>); clean the content, or pass a "
            "template that keeps it")
    if full.startswith(prompt):
        written = full[len(prompt):start]
        if written.strip():
            raise MaskingError(
                f"sample {sample_id}: the template writes {written.strip()[:60]!r} between the generation prompt "
                f"and assistant turn {last} (Qwen3 adds an empty <think> block to a reply without one); the model "
                "would have to produce it untaught. Give the reply its own <think> block, or pass a template")
        return full, prompt, start
    # The template renders the conversation differently once the final reply exists (Mistral v3 moves the system
    # prompt): keep what inference sends, then the template's separator, the reply and its end-of-turn token.
    separator = _trailing_whitespace(full[:start])[len(_trailing_whitespace(prompt)):]
    return prompt + separator + full[start:], prompt, len(prompt) + len(separator)


def _reply_opened_by_prompt(tokenizer, messages: list[dict], last: int, kwargs: dict, prompt: str,
                            end_tokens: list[str]) -> tuple[str, str, int] | None:
    """The training text for templates whose generation prompt opens the reply and whose render rewrites it.

    DeepSeek-R1-Distill's template ends the generation prompt with `<think>\n` and deletes `<think>…</think>` from
    every rendered reply, the last one included, so no render holds the reasoning. What inference produces is the
    prompt, then the rest of the reply, then the end-of-turn token the template writes after a reply (read from a
    render with the reply swapped for a marker). None unless the prompt ends with a visible start of the reply and
    the reply ends the render.
    """
    content = messages[last]["content"]
    if last != len(messages) - 1:
        return None
    probe = render(tokenizer, [*messages[:last], {**messages[last], "content": SENTINEL}], False, kwargs)
    history = render(tokenizer, messages[:last], False, kwargs)
    if probe.count(SENTINEL) != 1 or not (probe.startswith(history) and prompt.startswith(history)):
        return None
    # The opening is what the generation prompt writes beyond the reply header a rendered reply gets
    # (R1-Distill: "<｜Assistant｜><think>\n" vs "<｜Assistant｜>"); a coincidental overlap does not count.
    header = probe[len(history):probe.index(SENTINEL)]
    generation = prompt[len(history):]
    opening = generation[len(header):] if generation.startswith(header) else ""
    if not opening.strip() or not content.startswith(opening):
        return None
    overlap = len(opening)
    after = probe[probe.index(SENTINEL) + len(SENTINEL):]
    eot = _end_of_turn_token(after, 0, end_tokens)
    if eot is None or after[len(eot):].strip():
        return None
    return prompt + content[overlap:] + after, prompt, len(prompt) - overlap


def _locate_reply(tokenizer, messages: list[dict], index: int, add_generation_prompt: bool, kwargs: dict,
                  rendered: str, sample_id: str) -> int | None:
    """Where reply `index` starts in `rendered` (the render of `messages`), or None if the template rewrites it.

    The same messages are rendered with that reply swapped for a marker: the reply is written verbatim exactly
    when putting it back in place of the marker gives `rendered` again.
    """
    probe_messages = [*messages[:index], {**messages[index], "content": SENTINEL}, *messages[index + 1:]]
    probe = render(tokenizer, probe_messages, add_generation_prompt, kwargs)
    if probe.count(SENTINEL) != 1:
        return None
    start = probe.index(SENTINEL)
    head, tail = probe[:start], probe[start + len(SENTINEL):]
    content = messages[index]["content"]
    if head + content + tail == rendered:
        return start
    if content != content.strip() and head + content.strip() + tail == rendered:
        # a data problem, not a template design: refused, never trained shifted nor silently left untrained
        raise MaskingError(f"sample {sample_id}: assistant turn {index} has leading or trailing whitespace that "
                           "the template trims (Llama 3, Mistral v3 do); strip the content")
    return None


def _end_of_turn_at(text: str, end: int, end_tokens: list[str], tokenizer, index: int, sample_id: str) -> str:
    """The special token that closes the reply ending at `end`, or a MaskingError saying what follows instead."""
    eot = _end_of_turn_token(text, end, end_tokens)
    if eot is not None:
        return eot
    marker = re.match(r"<[^<>\s]{1,40}>|\[[^\[\]\s]{1,40}\]", text[end:])
    hint = ""
    if marker:
        pieces = len(tokenizer(marker.group(0), add_special_tokens=False)["input_ids"])
        hint = (f" The template writes {marker.group(0)!r} there, which is not a special token of this tokenizer "
                f"(it splits into {pieces} tokens): add it as a special token, or fix the template.")
    raise MaskingError(
        f"sample {sample_id}: no end-of-turn token right after assistant turn {index} (looked for the tokenizer's "
        f"{len(end_tokens)} special tokens, e.g. {tokenizer.eos_token}; the template may have added text after "
        "the content, e.g. Qwen3's empty <think> block for an empty reply); the model would never learn to "
        f"stop.{hint}")


def _end_of_turn_token(text: str, at: int, end_tokens: list[str]) -> str | None:
    """The end-of-turn candidate `text` has at position `at` (longest first), or None."""
    return next((token for token in end_tokens if text.startswith(token, at)), None)


def end_of_turn_tokens(tokenizer) -> list[str]:
    """Special-token strings that may close a turn, longest first so `</s>` never shadows a longer one.

    Only tokens marked special: added *non-special* tokens such as Qwen3's `<think>` or `<tool_call>` open content,
    they never end a turn (an empty Qwen3 reply renders as `<think>\n\n</think>`, which must not pass for an
    end-of-turn).
    """
    added = tokenizer.added_tokens_decoder.values()
    specials = set(tokenizer.all_special_tokens) | {t.content for t in added if t.special}
    return sorted(specials, key=len, reverse=True)


def tokens_in_ranges(offsets: list[tuple[int, int]], ranges: list[tuple[int, int]]) -> list[bool]:
    """True for each token whose character span overlaps a trained range (pure; the core of the mask)."""
    starts, ends = zip(*offsets) if offsets else ((), ())
    if not (all(map(le, starts, starts[1:])) and all(map(le, ends, ends[1:]))):
        return [any(tok_start < r_end and tok_end > r_start for r_start, r_end in ranges) and tok_end > tok_start
                for tok_start, tok_end in offsets]
    # Offsets in text order (what a fast tokenizer returns): the tokens overlapping a range are one run, from the
    # first ending after its start to the last starting before its end; two bisects per range instead of a test
    # of every token against every range, which cost nearly as much as the tokenisation itself.
    flags = [False] * len(offsets)
    for r_start, r_end in ranges:
        first, stop = bisect_right(ends, r_start), bisect_left(starts, r_end)
        if first < stop:
            flags[first:stop] = [True] * (stop - first)
    if any(map(ge, starts, ends)):  # zero-width tokens (added by some pre-tokenizers) are never trained
        flags = [flag and tok_end > tok_start for flag, tok_start, tok_end in zip(flags, starts, ends)]
    return flags


def build_masked_example(messages: list[dict], tokenizer, template_kwargs: dict | None = None,
                         assistant_turns: str = "all", sample_id: str = "?") -> MaskedExample:
    """Render with the chat template, tokenise once with offsets, and label only the assistant ranges."""
    return build_masked_examples([messages], tokenizer, template_kwargs, assistant_turns, [sample_id])[0]


def build_masked_examples(conversations: list[list[dict]], tokenizer, template_kwargs: dict | None = None,
                          assistant_turns: str = "all", sample_ids: list[str] | None = None,
                          batch_size: int = 256) -> list[MaskedExample]:
    """`build_masked_example` for each conversation, same examples, with the tokenisation batched.

    One tokenizer call per `batch_size` texts: the fast tokenizer encodes a batch on all cores and transformers'
    per-call overhead is paid once, which is most of the masking time once the templates are rendered. The errors
    are `build_masked_example`'s; within a batch, a conversation the template cannot lay out is reported before
    one whose labels all come out -100.
    """
    ids = list(sample_ids) if sample_ids is not None else ["?"] * len(conversations)
    if len(ids) != len(conversations):
        raise ValueError(f"{len(ids)} sample ids for {len(conversations)} conversations")
    # Each token's offsets are a new tuple, and every full pass of the cyclic garbage collector walks all of them
    # again (a sixth of the time on 2,000 examples). Nothing here makes reference cycles, so it waits for the end.
    collecting = gc.isenabled()
    gc.disable()
    try:
        examples = []
        for first in range(0, len(conversations), batch_size):
            batch_ids = ids[first:first + batch_size]
            layouts = [assistant_char_ranges(tokenizer, messages, template_kwargs, assistant_turns, sample_id)
                       for messages, sample_id in zip(conversations[first:first + batch_size], batch_ids)]
            encoded = _encode(tokenizer, [layout.text for layout in layouts])
            for layout, sample_id, token_ids, offsets in zip(layouts, batch_ids, encoded["input_ids"],
                                                             encoded["offset_mapping"]):
                example = _label_tokens(tokenizer, layout.text, token_ids, offsets, layout.ranges, sample_id)
                example.untrained_turns = layout.untrained_turns
                examples.append(example)
        return examples
    finally:
        if collecting:
            gc.enable()


def build_plain_example(problem: str, thinking: str, solution: str, tokenizer, plain_format: str,
                        sample_id: str = "?") -> MaskedExample:
    """Base models without a template: `plain_format` + EOS; the response (from `<think>`) and EOS are trained."""
    if not tokenizer.eos_token:
        raise MaskingError("the tokenizer has no eos_token; a base model needs one to learn to stop")
    _check_contents([{"role": "user", "content": problem}, {"role": "assistant", "content": thinking},
                     {"role": "assistant", "content": solution}], end_of_turn_tokens(tokenizer), sample_id)
    try:
        prompt = plain_prompt(plain_format, problem)
    except ValueError as err:
        raise MaskingError(str(err)) from None
    bos = tokenizer.bos_token if _adds_bos(tokenizer) else ""
    text = bos + plain_format.format(problem=problem, thinking=thinking, solution=solution) + tokenizer.eos_token
    return _mask_text(tokenizer, text, [(len(bos) + len(prompt), len(text))], sample_id)


def _adds_bos(tokenizer) -> bool:
    """Whether plain tokenisation starts with BOS (what the model saw in pre-training, and what llama.cpp adds).

    Asked of the tokenizer itself: with transformers 5 fast tokenizers `add_bos_token` can read False while the
    post-processor adds BOS (Mistral v3).
    """
    if not tokenizer.bos_token or tokenizer.bos_token_id is None:
        return False
    return tokenizer("x", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]


def _encode(tokenizer, text):
    """Token ids and character offsets of `text` (a string, or a list of strings for one batched call)."""
    # add_special_tokens=False: the template already wrote BOS where the model expects it; adding it again is
    # the classic "BOS twice" bug.
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)


def _mask_text(tokenizer, text: str, ranges: list[tuple[int, int]], sample_id: str) -> MaskedExample:
    encoded = _encode(tokenizer, text)
    return _label_tokens(tokenizer, text, encoded["input_ids"], encoded["offset_mapping"], ranges, sample_id)


def _label_tokens(tokenizer, text: str, ids: list[int], offsets: list, ranges: list[tuple[int, int]],
                  sample_id: str) -> MaskedExample:
    """The example for tokenised `text`: tokens overlapping `ranges` keep their id as label, the rest -100."""
    if offsets and type(offsets[0]) is not tuple:  # fast tokenizers already give tuples: no copy of each
        offsets = [tuple(o) for o in offsets]
    flags = tokens_in_ranges(offsets, ranges)
    labels = [tok if keep else IGNORE_INDEX for tok, keep in zip(ids, flags)]
    if not any(flags):
        template = getattr(tokenizer, "name_or_path", "") or "this tokenizer"
        raise MaskingError(f"sample {sample_id}: every label is -100 with the chat template of {template} (nothing "
                           "would be trained); the tokenizer reported no token over the reply's characters")
    return MaskedExample(ids, labels, text, offsets, ranges)


def trained_text(example: MaskedExample, tokenizer) -> str:
    """Decode of the trained tokens, joined in order: what the loss teaches."""
    return tokenizer.decode([t for t, lab in zip(example.input_ids, example.labels) if lab != IGNORE_INDEX])


def mask_stats(examples: list[MaskedExample], max_length: int) -> dict:
    """Trained-token fraction and length facts for a batch of masked examples."""
    lengths = [len(e.input_ids) for e in examples]
    trained = [e.n_trained for e in examples]
    return {
        "examples": len(examples),
        "tokens": sum(lengths),
        "trained_tokens": sum(trained),
        "trained_fraction": round(sum(trained) / max(1, sum(lengths)), 4),
        "max_tokens": max(lengths, default=0),
        "mean_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
        "all_masked": sum(t == 0 for t in trained),
        "untrained_turns": sum(len(e.untrained_turns) for e in examples),  # rewritten by the template (Qwen3)
        "over_max_length": sum(n > max_length for n in lengths),
    }
