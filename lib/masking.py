"""Response-only loss masks from the model's own chat template: `(input_ids, labels)` per conversation.

Usage: ``ids, labels = build_masked_example(messages, tokenizer).as_tuple()``

Trained tokens are exactly the assistant's content (think + answer) and the end-of-turn token that follows it
(`<|eot_id|>`, `<|im_end|>`, `</s>` …), so the model learns to stop. Role headers, generation prompts, system
and user text get label -100. No hand-written delimiters: each assistant turn is located by rendering the
template up to that turn with `add_generation_prompt=True` and checking that the full render continues it.
Templates that rewrite history (Qwen3 drops earlier `<think>` blocks) or move text between turns
(Mistral v3's system prompt) are detected and refused with a message instead of producing silent damage.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

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

    def as_tuple(self) -> tuple[list[int], list[int]]:
        return self.input_ids, self.labels

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def render(tokenizer, messages: list[dict], add_generation_prompt: bool, template_kwargs: dict) -> str:
    """The chat template's text for `messages` (never tokenised here, so offsets refer to this string)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **template_kwargs)


def assistant_char_ranges(tokenizer, messages: list[dict], template_kwargs: dict | None = None,
                          assistant_turns: str = "all", sample_id: str = "?") -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the [start, end) character range of each trained assistant turn.

    Each range covers the assistant content and the end-of-turn special token right after it.
    """
    kwargs = template_kwargs or {}
    if not getattr(tokenizer, "chat_template", None):
        raise MaskingError(f"sample {sample_id}: the tokenizer has no chat template; set chat_format: plain with a "
                           "plain_format in the params file, or pass a template")
    full = render(tokenizer, messages, False, kwargs)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        raise MaskingError(f"sample {sample_id}: no assistant turn to train")
    if assistant_turns == "last":
        turns = turns[-1:]
    end_tokens = _end_of_turn_candidates(tokenizer)
    ranges = []
    for index in turns:
        prefix = render(tokenizer, messages[:index], True, kwargs)
        if not full.startswith(prefix):
            # suggest "last" only where it would work (never for Mistral v3 with a system prompt)
            last_ok = index != turns[-1] and full.startswith(render(tokenizer, messages[:turns[-1]], True, kwargs))
            last_hint = "train only the last turn (assistant_turns: last), or " if last_ok else ""
            raise MaskingError(
                f"sample {sample_id}: the template renders the conversation up to assistant turn {index} differently "
                "from the full conversation (it moves or rewrites earlier text, e.g. Mistral v3 renders the system "
                "prompt only inside a final user turn, so it moves or vanishes once an assistant turn follows). "
                f"Drop the system prompt, or {last_hint}pass a chat template without that behaviour")
        content = messages[index]["content"]
        start = full.find(content, len(prefix))
        if start < 0 or full[len(prefix):start].strip():
            raise MaskingError(
                f"sample {sample_id}: assistant turn {index} does not appear verbatim after its generation prompt "
                "(the template rewrites assistant content, e.g. Qwen3 drops <think> from earlier turns). Use "
                "assistant_turns: last, or a template that keeps the content")
        end = start + len(content)
        eot = next((tok for tok in end_tokens if full.startswith(tok, end)), None)
        if eot is None:
            raise MaskingError(
                f"sample {sample_id}: no end-of-turn token right after assistant turn {index} (looked for the "
                f"tokenizer's {len(end_tokens)} special tokens, e.g. {tokenizer.eos_token}; the template may have "
                "added text after the content, e.g. Qwen3's empty <think> block for an empty reply); the model "
                "would never learn to stop")
        ranges.append((start, end + len(eot)))
    return full, ranges


def _end_of_turn_candidates(tokenizer) -> list[str]:
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
    flags = []
    for tok_start, tok_end in offsets:
        flags.append(any(tok_start < r_end and tok_end > r_start for r_start, r_end in ranges)
                     and tok_end > tok_start)
    return flags


def build_masked_example(messages: list[dict], tokenizer, template_kwargs: dict | None = None,
                         assistant_turns: str = "all", sample_id: str = "?") -> MaskedExample:
    """Render with the chat template, tokenise once with offsets, and label only the assistant ranges."""
    text, ranges = assistant_char_ranges(tokenizer, messages, template_kwargs, assistant_turns, sample_id)
    return _mask_text(tokenizer, text, ranges, sample_id)


def plain_prompt(plain_format: str, problem: str) -> str:
    """The prompt half of a base-model format: everything before `<think>` (what inference sends).

    Trailing spaces are left to the response: BPE and SentencePiece attach a space to the token after it
    (`Assistant: <think>` tokenises as `:`, ` <`), so a prompt ending in a space would hand the model a lone
    space token it never saw in training. Trailing newlines stay (they attach to the token before them).
    """
    head, sep, _ = plain_format.partition("<think>")
    if not sep:
        raise MaskingError("plain_format must contain the literal <think> where the response starts")
    return head.format(problem=problem).rstrip(" ")


def build_plain_example(problem: str, thinking: str, solution: str, tokenizer, plain_format: str,
                        sample_id: str = "?") -> MaskedExample:
    """Base models without a template: `plain_format` + EOS; the response (from `<think>`) and EOS are trained."""
    if not tokenizer.eos_token:
        raise MaskingError("the tokenizer has no eos_token; a base model needs one to learn to stop")
    prompt = plain_prompt(plain_format, problem)
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


def _mask_text(tokenizer, text: str, ranges: list[tuple[int, int]], sample_id: str) -> MaskedExample:
    # add_special_tokens=False: the template already wrote BOS where the model expects it; adding it again is
    # the classic "BOS twice" bug.
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], [tuple(o) for o in encoded["offset_mapping"]]
    flags = tokens_in_ranges(offsets, ranges)
    labels = [tok if keep else IGNORE_INDEX for tok, keep in zip(ids, flags)]
    if not any(flags):
        raise MaskingError(f"sample {sample_id}: every label is -100 (nothing would be trained)")
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
        "over_max_length": sum(n > max_length for n in lengths),
    }


def colored_html(example: MaskedExample, tokenizer, max_tokens: int = 400) -> str:
    """HTML of the rendered conversation: trained tokens green, masked grey; special tokens shown literally."""
    spans = []
    for i, (tok, label) in enumerate(zip(example.input_ids, example.labels)):
        if i >= max_tokens:
            spans.append(f"<span style='color:#888'> … {len(example.input_ids) - max_tokens} more tokens</span>")
            break
        piece = html.escape(tokenizer.decode([tok])).replace("\n", "↵<br>")
        style = "background:#c8f7c5;color:#000" if label != IGNORE_INDEX else "background:#eee;color:#777"
        spans.append(f"<span style='{style};border-right:1px solid #fff' title='{tok}'>{piece}</span>")
    legend = ("<div style='font:12px sans-serif;margin-bottom:4px'><span style='background:#c8f7c5'>trained</span> "
              "<span style='background:#eee;color:#777'>masked (-100)</span></div>")
    return legend + "<div style='font:12px monospace;line-height:1.6;white-space:normal'>" + "".join(spans) + "</div>"
