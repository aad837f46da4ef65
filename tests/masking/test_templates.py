"""lib.masking.templates on the real tokenizers of every family: exactly the assistant content + end-of-turn is trained.

The tokenizer fixtures load once per process (lib.models.shared_fixture_tokenizer); everything here is offline.
"""
from __future__ import annotations

import copy
import re
import time
import types
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.models import shared_fixture_tokenizer
from lib.conversation import plain_prompt
from lib.display import colored_html
from lib.masking.templates import (
    IGNORE_INDEX, MaskedExample, MaskingError, assistant_char_ranges, build_masked_example, build_plain_example, mask_stats, render, tokens_in_ranges, trained_text,
)
from lib.think import assistant_text
from lib.models import fixture_names
from tests.masking.conversations import (A1, A2, MULTI, SINGLE, SYSTEM, _ANSWER, _ASSISTANT, _TEXT,
                                        _no_leading_whitespace, conversations)

EOT = {"llama3_2": "<|eot_id|>", "mistral_v3": "</s>", "qwen2_5": "<|im_end|>", "qwen3": "<|im_end|>",
       "smollm2": "<|im_end|>"}
FAMILIES = sorted(EOT)
KWARGS = {"llama3_2": {"date_string": "26 Jul 2024"}}
HEADERS = {"llama3_2": ["<|start_header_id|>", "<|end_header_id|>", "assistant"],
           "mistral_v3": ["[INST]", "[/INST]"],
           "qwen2_5": ["<|im_start|>", "assistant"], "qwen3": ["<|im_start|>", "assistant"],
           "smollm2": ["<|im_start|>", "assistant"]}
NANBEIGE = "User: {problem}\nAssistant: <think>\n{thinking}\n</think>\n{solution}"


def _contents(messages, assistant_turns="all"):
    contents = [m["content"] for m in messages if m["role"] == "assistant"]
    return contents[-1:] if assistant_turns == "last" else contents


def _chars(example: MaskedExample, trained: bool) -> str:
    # A union of character positions, not a join of token spans: byte-level BPE splits one multi-byte character
    # into several tokens that all report that character's span.
    covered = [False] * len(example.text)
    for (start, end), label in zip(example.offsets, example.labels):
        if (label != IGNORE_INDEX) == trained:
            covered[start:end] = [True] * (end - start)
    return "".join(ch for ch, hit in zip(example.text, covered) if hit)


def trained_chars(example: MaskedExample) -> str:
    """The rendered text under the trained tokens' offsets: the mask, independent of any decode quirk."""
    return _chars(example, trained=True)


def masked_chars(example: MaskedExample) -> str:
    return _chars(example, trained=False)


def expected_trained(family: str, contents: list[str]) -> tuple[str, str]:
    """(expected trained characters, expected decode of the trained tokens) for assistant `contents`.

    Mistral v3's template writes `[/INST]` + " " + content, and SentencePiece glues that space to the first
    content token (`▁<`), so the space is trained, which is right: the generation prompt ends at `[/INST]` and the
    model must emit the space itself. The decode drops the leading `▁` of the very first token only.
    """
    sep = " " if family == "mistral_v3" else ""
    chars = "".join(sep + c + EOT[family] for c in contents)
    return chars, chars[len(sep):]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


def _build(family, messages, assistant_turns="all"):
    tok = shared_fixture_tokenizer(family)
    return tok, build_masked_example(messages, tok, KWARGS.get(family), assistant_turns)


# Tested in their own section below: R1-Distill's template deletes the reasoning of every reply it renders, so the
# cases above (each reply trained as written) do not apply to it.
OWN_SECTION = ["r1_distill_qwen"]


def test_every_shipped_fixture_family_is_covered():
    assert fixture_names() == sorted(FAMILIES + OWN_SECTION)


# --- exact trained text, every family ----------------------------------------------------------------------

CASES = {
    "single": (SINGLE, "all"),
    "single_system": ([SYSTEM, *SINGLE], "all"),
    "multi": (MULTI, "all"),
    "multi_system_last": ([SYSTEM, *MULTI], "last"),
}


PAIRS = [(f, c) for f in FAMILIES for c in CASES]


def _case(family, case):
    return CASES[case]


def _trained_contents(family, messages, assistant_turns="all"):
    """Qwen3 rewrites every reply but the last (drops its <think>), so only the last one is trained."""
    return _contents(messages, "last" if family == "qwen3" else assistant_turns)


@pytest.mark.parametrize("family, case", PAIRS)
def test_exactly_assistant_content_and_end_of_turn_are_trained(family, case):
    messages, turns = _case(family, case)
    tok, example = _build(family, messages, turns)
    chars, decoded = expected_trained(family, _trained_contents(family, messages, turns))
    assert trained_chars(example) == chars
    assert trained_text(example, tok) == decoded
    assert example.n_trained == sum(lab != IGNORE_INDEX for lab in example.labels) > 0
    assert len(example.input_ids) == len(example.labels) == len(example.offsets)
    assert all(lab in (IGNORE_INDEX, tid) for lab, tid in zip(example.labels, example.input_ids))


@pytest.mark.parametrize("family, case", PAIRS)
def test_no_user_system_text_or_role_header_is_trained(family, case):
    messages, turns = _case(family, case)
    _, example = _build(family, messages, turns)
    trained, masked = trained_chars(example), masked_chars(example)
    assert "USERTEXT" not in trained and "SYSTEMTEXT" not in trained
    assert all(header not in trained for header in HEADERS[family])
    assert masked.count("USERTEXT") == sum(m["role"] == "user" for m in messages)
    if messages[0]["role"] == "system":
        assert "SYSTEMTEXT" in masked
    assert all(header in masked for header in HEADERS[family])


def test_generation_prompt_tokens_are_a_masked_prefix_then_the_reply_is_trained(family):
    """What inference sends (template + generation prompt) tokenises to exactly the masked head of the example."""
    tok, example = _build(family, SINGLE)
    prompt = render(tok, SINGLE[:1], True, KWARGS.get(family, {}))
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    k = len(prompt_ids)
    assert example.input_ids[:k] == prompt_ids
    assert all(lab == IGNORE_INDEX for lab in example.labels[:k])
    assert example.labels[k] != IGNORE_INDEX
    eot_id = tok.convert_tokens_to_ids(EOT[family])
    last_trained = max(i for i, lab in enumerate(example.labels) if lab != IGNORE_INDEX)
    assert example.input_ids[last_trained] == eot_id
    assert all(lab != IGNORE_INDEX for lab in example.labels[k:last_trained + 1])


def test_character_ranges_cover_content_and_end_of_turn(family):
    tok = shared_fixture_tokenizer(family)
    layout = assistant_char_ranges(tok, MULTI, KWARGS.get(family))
    expected = _trained_contents(family, MULTI)
    sep = " " if family == "mistral_v3" else ""  # Mistral's space after [/INST] is the model's to write
    assert [layout.text[s:e] for s, e in layout.ranges] == [sep + c + EOT[family] for c in expected]
    assert [t["turn"] for t in layout.untrained_turns] == ([1] if family == "qwen3" else [])


# --- template-specific behaviour ------------------------------------------------------------------------------

def test_llama_is_deterministic_with_a_fixed_date():
    tok = shared_fixture_tokenizer("llama3_2")
    first = build_masked_example(SINGLE, tok, {"date_string": "26 Jul 2024"})
    second = build_masked_example(SINGLE, tok, {"date_string": "26 Jul 2024"})
    assert first.input_ids == second.input_ids and first.labels == second.labels
    assert "Today Date: 26 Jul 2024" in first.text
    # Without it the template stamps today's date into the (masked) system header.
    today = build_masked_example(SINGLE, tok)
    assert "Today Date: 26 Jul 2024" not in today.text or time.strftime("%d %b %Y") == "26 Jul 2024"
    assert trained_text(today, tok) == trained_text(first, tok)


def test_qwen3_multi_turn_trains_the_last_reply_with_its_think_and_reports_rewritten_history():
    tok = shared_fixture_tokenizer("qwen3")
    # the reason: Qwen3 renders earlier replies without their <think> block
    full = render(tok, MULTI, False, {})
    assert "First add 2 and 2." not in full and "The answer is 4.<|im_end|>" in full
    example = build_masked_example(MULTI, tok, assistant_turns="all", sample_id="s-1")
    assert trained_text(example, tok) == A2 + "<|im_end|>"  # the trained reply keeps its reasoning
    assert example.untrained_turns == [{"turn": 1, "reason": "the template rewrites this earlier reply (e.g. Qwen3 "
                                        "drops its <think>); it stays in the context as rendered, untrained"}]
    assert "The answer is 4.<|im_end|>" in masked_chars(example)  # history stays, as inference will show it
    last = build_masked_example(MULTI, tok, assistant_turns="last")
    assert last.as_tuple() == example.as_tuple() and last.untrained_turns == []


def test_qwen3_single_turn_keeps_the_think_block():
    tok, example = _build("qwen3", SINGLE)
    assert trained_text(example, tok) == A1 + "<|im_end|>"
    think_id = tok.convert_tokens_to_ids("<think>")
    assert think_id in [lab for lab in example.labels if lab != IGNORE_INDEX]  # <think> is one added token here


def test_qwen3_empty_reply_is_refused_not_trained_as_think_tag():
    # Qwen3 renders an empty last reply as "<think>\n\n</think>\n\n"; `<think>` (an added, non-special token)
    # right after the empty content must not pass for the end-of-turn token.
    tok = shared_fixture_tokenizer("qwen3")
    messages = [SINGLE[0], {"role": "assistant", "content": ""}]
    assert render(tok, messages, False, {}).endswith("assistant\n<think>\n\n</think>\n\n<|im_end|>\n")
    written = re.escape(repr("<think>\n\n</think>"))
    with pytest.raises(MaskingError, match=f"writes {written} between the generation prompt and assistant turn 1"):
        build_masked_example(messages, tok)
    qwen25 = shared_fixture_tokenizer("qwen2_5")  # without the rewrite, an empty reply just learns to stop
    assert trained_text(build_masked_example(messages, qwen25), qwen25) == "<|im_end|>"


@pytest.mark.parametrize("messages, turns", [
    ([SYSTEM, *MULTI], "all"), ([SYSTEM, *MULTI], "last"), ([SYSTEM, *SINGLE], "all"),
])
def test_mistral_system_prompt_goes_where_inference_puts_it(messages, turns):
    # Mistral v3 renders the system prompt only inside the *final user* turn: a conversation that ends with an
    # assistant reply loses it entirely, while the generation prompt for that reply has it. The example is built
    # from what inference sends: the generation prompt (system in the last user turn), then the reply + </s>.
    tok = shared_fixture_tokenizer("mistral_v3")
    assert "SYSTEMTEXT" not in render(tok, messages, False, {})
    prompt = render(tok, messages[:-1], True, {})
    assert "SYSTEMTEXT" in prompt
    example = build_masked_example(messages, tok, assistant_turns=turns)
    assert example.text == prompt + " " + messages[-1]["content"] + "</s>"
    assert trained_text(example, tok) == "</s> ".join(_contents(messages, turns)) + "</s>"
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert example.input_ids[:len(prompt_ids)] == prompt_ids
    assert masked_chars(example).count("SYSTEMTEXT") == 1


def test_mistral_multi_turn_without_system_prompt_works():
    tok, example = _build("mistral_v3", MULTI)
    assert trained_text(example, tok) == A1 + "</s> " + A2 + "</s>"


def test_template_that_drops_text_once_the_conversation_grows_is_trained_as_the_last_reply_sees_it():
    tok = copy.copy(shared_fixture_tokenizer("qwen2_5"))
    # A template that drops the system prompt once a second user turn exists: the last reply never sees it, so
    # neither does the trained sequence; both replies are found in that sequence and trained.
    tok.chat_template = ("{% for m in messages %}{% if m.role != 'system' or messages|length < 4 %}"
                         "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    example = build_masked_example([SYSTEM, *MULTI], tok)
    assert "SYSTEMTEXT" not in example.text
    assert trained_text(example, tok) == A1 + "<|im_end|>" + A2 + "<|im_end|>"


def test_end_of_turn_marker_that_is_not_a_special_token_is_named():
    tok = copy.copy(shared_fixture_tokenizer("smollm2"))
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<end_of_turn>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(MaskingError, match="writes '<end_of_turn>' there, which is not a special token of this "
                                           r"tokenizer \(it splits into \d+ tokens\)"):
        build_masked_example(SINGLE, tok)


def test_reserved_marker_character_in_content_is_refused():
    with pytest.raises(MaskingError, match=r"U\+E000"):
        build_masked_example([SINGLE[0], {"role": "assistant", "content": "a\ue000b"}],
                             shared_fixture_tokenizer("smollm2"))


@pytest.mark.parametrize("family_name", ["llama3_2", "mistral_v3"])
def test_bos_appears_exactly_once(family_name):
    tok, example = _build(family_name, SINGLE)
    assert example.input_ids[0] == tok.bos_token_id
    assert example.input_ids.count(tok.bos_token_id) == 1
    assert example.labels[0] == IGNORE_INDEX


@pytest.mark.parametrize("family_name", ["llama3_2", "mistral_v3"])
def test_trimming_templates_refuse_content_with_edge_whitespace(family_name):
    # Llama 3.x and Mistral v3 `trim` assistant content; the mask must refuse, not train a shifted span.
    tok = shared_fixture_tokenizer(family_name)
    messages = [SINGLE[0], {"role": "assistant", "content": A1 + "\n"}]
    with pytest.raises(MaskingError, match="template trims"):
        build_masked_example(messages, tok, KWARGS.get(family_name))


def test_no_chat_template_is_refused():
    tok = copy.copy(shared_fixture_tokenizer("smollm2"))
    tok.chat_template = None
    with pytest.raises(MaskingError, match="no chat template; set chat_format: plain"):
        build_masked_example(SINGLE, tok)


def test_conversation_without_assistant_turn_is_refused():
    with pytest.raises(MaskingError, match="sample q7: no assistant turn to train"):
        build_masked_example(SINGLE[:1], shared_fixture_tokenizer("smollm2"), sample_id="q7")


def test_missing_end_of_turn_is_refused():
    tok = copy.copy(shared_fixture_tokenizer("qwen2_5"))
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                         "{% if m.role != 'assistant' %}<|im_end|>{% endif %}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(MaskingError, match="no end-of-turn token right after assistant turn 1"):
        build_masked_example(SINGLE, tok)


# --- plain (base model) format ------------------------------------------------------------------------------

def test_plain_nanbeige_format_on_llama_trains_the_response_and_eos():
    tok = shared_fixture_tokenizer("llama3_2")
    example = build_plain_example("What is 2+2?", "2 plus 2 is 4.", "The answer is 4.", tok, NANBEIGE, "n1")
    response = "<think>\n2 plus 2 is 4.\n</think>\nThe answer is 4." + tok.eos_token
    # The space after "Assistant:" merges into the first response token (` <`), so it is trained with it;
    # plain_prompt leaves it out of the prompt so inference asks for the same tokens (see the next test).
    assert trained_chars(example) == " " + response
    assert trained_text(example, tok) == " " + response
    # Llama 3's tokenizer adds <|begin_of_text|> to plain text, as llama.cpp does: the example starts with it
    assert example.text == "<|begin_of_text|>User: What is 2+2?\nAssistant: " + response
    assert "User" not in trained_chars(example) and "What is" not in trained_chars(example)
    assert example.input_ids[-1] == tok.eos_token_id and example.labels[-1] == tok.eos_token_id


@pytest.mark.parametrize("family_name", FAMILIES)
def test_plain_prompt_tokens_are_exactly_the_masked_prefix(family_name):
    """Train/inference agreement: the prompt inference sends is the masked head, token for token."""
    tok = shared_fixture_tokenizer(family_name)
    example = build_plain_example("What is 2+2?", "2 plus 2 is 4.", "The answer is 4.", tok, NANBEIGE)
    prompt = plain_prompt(NANBEIGE, "What is 2+2?")
    assert prompt == "User: What is 2+2?\nAssistant:"
    bos = tok.bos_token if example.text.startswith(tok.bos_token or "\0") else ""
    prompt_ids = tok(bos + prompt, add_special_tokens=False)["input_ids"]
    k = len(prompt_ids)
    assert example.input_ids[:k] == prompt_ids
    assert all(lab == IGNORE_INDEX for lab in example.labels[:k])
    assert all(lab != IGNORE_INDEX for lab in example.labels[k:])


def test_plain_prompt_keeps_a_trailing_newline():
    assert plain_prompt("Q: {problem}\nA:\n<think>{thinking}</think>{solution}", "x") == "Q: x\nA:\n"


def test_plain_example_starts_with_bos_exactly_when_the_tokenizer_adds_one():
    # Mistral v3's fast tokenizer adds <s> through its post-processor while `add_bos_token` reads False.
    mistral = shared_fixture_tokenizer("mistral_v3")
    example = build_plain_example("q", "t", "s", mistral, NANBEIGE)
    assert example.text.startswith("<s>User: q")
    assert example.input_ids[0] == mistral.bos_token_id and example.input_ids.count(mistral.bos_token_id) == 1
    assert trained_text(example, mistral) == "<think>\nt\n</think>\ns</s>"
    llama = shared_fixture_tokenizer("llama3_2")  # Llama 3 adds <|begin_of_text|> by its post-processor too
    assert build_plain_example("q", "t", "s", llama, NANBEIGE).text.startswith("<|begin_of_text|>User: q")
    smollm2 = shared_fixture_tokenizer("smollm2")  # adds no BOS on its own (its bos is <|im_start|>)
    assert build_plain_example("q", "t", "s", smollm2, NANBEIGE).text.startswith("User: q")


def test_plain_format_errors():
    tok = shared_fixture_tokenizer("llama3_2")
    with pytest.raises(MaskingError, match="must contain the literal <think>"):
        build_plain_example("q", "t", "s", tok, "User: {problem}\nAssistant: {thinking} {solution}")
    no_eos = types.SimpleNamespace(eos_token=None)
    with pytest.raises(MaskingError, match="no eos_token"):
        build_plain_example("q", "t", "s", no_eos, NANBEIGE)


# --- pure helpers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("offsets, ranges, expected", [
    ([(0, 3), (3, 5), (5, 9)], [(3, 5)], [False, True, False]),          # exact token
    ([(0, 3), (3, 5), (5, 9)], [(4, 6)], [False, True, True]),           # partial overlaps count
    ([(0, 3), (3, 5)], [(5, 8)], [False, False]),                        # touching is not overlapping
    ([(0, 3), (3, 5)], [(0, 0)], [False, False]),                        # empty range trains nothing
    ([(0, 0), (0, 2), (2, 2)], [(0, 2)], [False, True, False]),          # zero-width tokens never trained
    ([(0, 2), (2, 4), (4, 6), (6, 8)], [(0, 2), (4, 6)], [True, False, True, False]),  # several ranges
    ([(0, 2)], [], [False]),
    ([], [(0, 5)], []),
])
def test_tokens_in_ranges(offsets, ranges, expected):
    assert tokens_in_ranges(offsets, ranges) == expected


def _example(ids, labels):
    return MaskedExample(ids, labels, "", [(i, i + 1) for i in range(len(ids))], [])


def test_mask_stats():
    examples = [_example([1, 2, 3, 4], [-100, -100, 3, 4]), _example([5, 6], [-100, -100]),
                _example(list(range(10)), [-100] * 9 + [9])]
    assert mask_stats(examples, max_length=5) == {
        "examples": 3, "tokens": 16, "trained_tokens": 3, "trained_fraction": round(3 / 16, 4),
        "max_tokens": 10, "mean_tokens": 5.3, "all_masked": 1, "untrained_turns": 0, "over_max_length": 1}
    assert mask_stats([], max_length=5) == {
        "examples": 0, "tokens": 0, "trained_tokens": 0, "trained_fraction": 0.0, "max_tokens": 0,
        "mean_tokens": 0.0, "all_masked": 0, "untrained_turns": 0, "over_max_length": 0}


def test_colored_html_marks_trained_and_masked_tokens():
    tok, example = _build("smollm2", SINGLE)
    page = colored_html(example, tok)
    assert page.count("background:#c8f7c5;color:#000") == example.n_trained
    assert "&lt;|im_start|&gt;" in page  # specials are escaped, shown literally
    short = colored_html(example, tok, max_tokens=3)
    assert f"… {len(example.input_ids) - 3} more tokens" in short


# --- property: random conversations, ChatML and Llama -------------------------------------------------------

_PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_exact(family_name, messages):
    tok = shared_fixture_tokenizer(family_name)
    example = build_masked_example(messages, tok, KWARGS.get(family_name))
    expected = "".join(c + EOT[family_name] for c in _contents(messages))
    assert trained_chars(example) == expected
    assert trained_text(example, tok) == expected
    assert all(header not in trained_chars(example) for header in HEADERS[family_name][:1])


@pytest.mark.parametrize("family_name", ["qwen2_5", "smollm2"])
def test_property_chatml_trains_exactly_the_assistant_contents(family_name):
    @_PROPERTY
    @given(conversations(content=_ASSISTANT.map(_no_leading_whitespace)))
    def prop(messages):
        _check_exact(family_name, messages)
    prop()


def test_chatml_reply_starting_with_a_newline_trains_the_shared_token():
    # The narrowing above, pinned: the merged token is trained, so the reply's own whitespace is not lost.
    qwen = shared_fixture_tokenizer("qwen2_5")
    example = build_masked_example([SINGLE[0], {"role": "assistant", "content": "\nabc"}], qwen)
    assert trained_chars(example) == "\n\nabc<|im_end|>"
    smol = shared_fixture_tokenizer("smollm2")
    example = build_masked_example([SINGLE[0], {"role": "assistant", "content": "  abc"}], smol)
    assert trained_chars(example) == "\n  abc<|im_end|>"


def test_property_llama_trains_exactly_the_assistant_contents_or_refuses():
    @_PROPERTY
    @given(conversations())
    def prop(messages):
        if any(c != c.strip() for c in _contents(messages)):
            # Llama 3.2's template `trim`s assistant content; such rows must be refused, never mis-masked.
            with pytest.raises(MaskingError, match="does not appear verbatim|no end-of-turn token|template trims"):
                build_masked_example(messages, shared_fixture_tokenizer("llama3_2"), KWARGS["llama3_2"])
        else:
            _check_exact("llama3_2", messages)
    prop()


@st.composite
def qwen3_conversations(draw):
    """(messages, whether the last reply is in the canonical `assistant_text` form)."""
    messages = draw(conversations(content=_ASSISTANT.map(_no_leading_whitespace)))
    canonical = draw(st.booleans())
    if canonical:
        messages[-1] = {"role": "assistant", "content": assistant_text(draw(_TEXT), draw(_ANSWER))}
    return messages, canonical


def test_property_qwen3_last_turn_is_exact_or_refused():
    """Qwen3 re-renders replies (think block normalised, empty block added); never a silently shifted mask."""
    tok = shared_fixture_tokenizer("qwen3")

    @_PROPERTY
    @given(qwen3_conversations())
    def prop(case):
        messages, canonical = case
        try:
            example = build_masked_example(messages, tok, assistant_turns="last")
        except MaskingError:
            assert not canonical, "a canonical reply (lib.think.assistant_text) must be maskable"
            return
        expected = _contents(messages, "last")[0] + "<|im_end|>"
        assert trained_chars(example) == expected
        assert trained_text(example, tok) == expected
    prop()


def test_all_masked_labels_name_the_sample_and_the_template():
    from lib.masking.templates import _mask_text

    tok = shared_fixture_tokenizer("smollm2")
    with pytest.raises(MaskingError, match=r"sample s9: every label is -100 with the chat template of \S+smollm2"):
        _mask_text(tok, "<|im_start|>user\nhi<|im_end|>\n", [], "s9")


def test_property_mistral_trains_each_reply_where_inference_puts_the_system_prompt_or_refuses():
    """System prompts included: the example is always the last reply's generation prompt + reply + </s>."""
    tok = shared_fixture_tokenizer("mistral_v3")

    @_PROPERTY
    @given(conversations())
    def prop(messages):
        contents = _contents(messages)
        if any(c != c.strip() for c in contents):
            # the template trims replies: refused, never shifted (an empty reply is written " </s>" and trained so)
            with pytest.raises(MaskingError, match="does not appear verbatim|no end-of-turn token|template trims"):
                build_masked_example(messages, tok)
            return
        example = build_masked_example(messages, tok)
        chars, decoded = expected_trained("mistral_v3", contents)
        assert trained_chars(example) == chars
        assert trained_text(example, tok) == decoded
        assert example.text.startswith(render(tok, messages[:-1], True, {}))
    prop()


def test_property_qwen3_all_turns_trains_the_last_reply_and_lists_the_rewritten_ones():
    tok = shared_fixture_tokenizer("qwen3")

    @_PROPERTY
    @given(conversations(content=st.builds(assistant_text, _TEXT, _ANSWER).map(_no_leading_whitespace)))
    def prop(messages):
        example = build_masked_example(messages, tok, assistant_turns="all")
        expected = _contents(messages, "last")[0] + "<|im_end|>"
        assert trained_text(example, tok) == trained_chars(example) == expected
        history = [i for i, m in enumerate(messages[:-1]) if m["role"] == "assistant"]
        assert [t["turn"] for t in example.untrained_turns] == history  # every earlier reply loses its <think>
    prop()


# --- DeepSeek-R1-Distill: the generation prompt opens the reply, every render deletes the reasoning ----------

@pytest.fixture(scope="module")
def r1_distill():
    """DeepSeek-R1-Distill-Qwen's tokenizer and template: Qwen2.5's BPE with DeepSeek's added tokens at their real ids
    (fixtures/tokenizers/r1_distill_qwen)."""
    return shared_fixture_tokenizer("r1_distill_qwen")


def test_r1_distill_trains_what_follows_the_prompts_think_and_lists_rewritten_history(r1_distill):
    tok = r1_distill
    full = render(tok, MULTI, False, {})
    assert "Double 4: 8." not in full  # the template deletes the reasoning of every reply, the last one too
    prompt = render(tok, MULTI[:-1], True, {})
    assert prompt.endswith("<｜Assistant｜><think>\n")  # ... and opens the reply itself at inference
    example = build_masked_example(MULTI, tok)
    assert example.text == prompt + A2.removeprefix("<think>\n") + "<｜end▁of▁sentence｜>"
    assert trained_text(example, tok) == A2.removeprefix("<think>\n") + "<｜end▁of▁sentence｜>"
    assert [t["turn"] for t in example.untrained_turns] == [1]
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert example.input_ids[:len(prompt_ids)] == prompt_ids
    assert all(lab == IGNORE_INDEX for lab in example.labels[:len(prompt_ids)])
    assert all(lab != IGNORE_INDEX for lab in example.labels[len(prompt_ids):])


def test_property_r1_distill_last_reply_is_exactly_what_the_model_generates(r1_distill):
    # Narrowed like ChatML above: thinking that is empty or starts with whitespace puts a newline right after the
    # prompt's "<think>\n"; BPE merges the two into one token, which is trained (no reply character is lost).
    @_PROPERTY
    @given(conversations(content=st.builds(assistant_text, _TEXT.map(lambda t: t.lstrip() or "x"), _ANSWER)))
    def prop(messages):
        example = build_masked_example(messages, r1_distill)
        expected = messages[-1]["content"].removeprefix("<think>\n") + "<｜end▁of▁sentence｜>"
        assert trained_chars(example) == expected
        # R1-Distill's tokenizer normalises to NFC (as the real tokenizer.json): the ids decode to the NFC form
        assert trained_text(example, r1_distill) == unicodedata.normalize("NFC", expected)
    prop()


# --- found in review: each once trained something wrong or crashed -------------------------------------------

@pytest.mark.parametrize("family_name, text", [
    ("llama3_2", "Each turn ends with <|eot_id|> and then the next header."),
    ("qwen2_5", "x<|im_end|>\n<|im_start|>user\ny"),  # would train a fake user turn
    ("mistral_v3", "The end marker is </s>."),
])
def test_special_token_text_in_a_message_is_refused_not_trained_as_the_control_token(family_name, text):
    tok = shared_fixture_tokenizer(family_name)
    for messages in ([SINGLE[0], {"role": "assistant", "content": text}],
                     [{"role": "user", "content": text}, SINGLE[1]]):
        with pytest.raises(MaskingError, match="contains the special token .* as text"):
            build_masked_example(messages, tok, KWARGS.get(family_name))


def test_qwen3_reasoning_content_in_an_earlier_turn_is_refused_not_half_trained():
    tok = shared_fixture_tokenizer("qwen3")
    messages = [SINGLE[0], {"role": "assistant", "content": "call", "reasoning_content": "r1"},
                {"role": "tool", "content": "42"}, {"role": "assistant", "content": A2}]
    with pytest.raises(MaskingError, match="between the generation prompt and assistant turn 1 .*reasoning_content"):
        build_masked_example(messages, tok)


def test_a_conversation_opened_by_the_assistant_leaves_that_greeting_untrained():
    tok = shared_fixture_tokenizer("qwen2_5")
    greeting = {"role": "assistant", "content": "Hello! Ask me anything."}
    example = build_masked_example([greeting, *SINGLE], tok)
    assert trained_text(example, tok) == A1 + "<|im_end|>"
    assert [t["turn"] for t in example.untrained_turns] == [0]
    with pytest.raises(MaskingError, match="the only assistant turn opens the conversation"):
        build_masked_example([greeting], tok)


def test_a_reply_that_merely_overlaps_the_prompt_is_not_taken_as_opened_by_it():
    # "t\n..." ends like Qwen3's generation prompt "…assistant\n" ends; that is no opening the template wrote
    tok = shared_fixture_tokenizer("qwen3")
    with pytest.raises(MaskingError, match="does not appear verbatim"):
        build_masked_example([SINGLE[0], {"role": "assistant", "content": "t\nfoo</think>bar"}], tok)


@pytest.mark.parametrize("content", [None, [{"type": "text", "text": "hi"}]])
def test_non_text_content_is_a_masking_error(content):
    messages = [SINGLE[0], {"role": "assistant", "content": content}, {"role": "user", "content": "q"}, SINGLE[1]]
    with pytest.raises(MaskingError, match="message 1 \\(assistant\\) has no text content"):
        build_masked_example(messages, shared_fixture_tokenizer("qwen2_5"))


def test_assistant_turns_must_be_all_or_last():
    with pytest.raises(ValueError, match="'all' or 'last'"):
        build_masked_example(SINGLE, shared_fixture_tokenizer("smollm2"), assistant_turns="ALL")
