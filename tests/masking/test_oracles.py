"""Independent oracles for lib.masking.templates: Mistral's own encoder (mistral-common) and TRL's training templates.

* mistral-common encodes a chat from message objects with the SentencePiece v3 model shipped inside the package,
  without any Jinja template: `build_masked_example` on the `mistral_v3` fixture must give the same token ids, and
  its trained tokens must be exactly the reply tokens + `</s>` that mistral-common writes after each `[/INST]`.
  Two disagreements this oracle found are fixed and stay tested (the lone `▁` the template writes after `[/INST]`
  before a reply starting with e.g. a digit is trained; a reply that occurs inside "</s>" is found with a system
  prompt); the HF-template/tokenizer vs mistral-common differences that are not about the mask are pinned as such.
* TRL patches known chat templates with `{% generation %}` markers; transformers turns them into an assistant mask
  (`return_assistant_tokens_mask=True`). Where TRL ships such a template, its mask and ours differ by exactly the
  newline tokens written around each reply (pinned below, with the reason ours is the one to train); where it ships
  none, a test says so, so the claim stays checked.

Offline: the SentencePiece model is a file inside the mistral-common wheel, the TRL templates are files inside trl.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import mistral_common
import pytest
import trl.chat_template_utils as trl_templates
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from trl.chat_template_utils import get_training_chat_template, is_chat_template_stop_token_trained

from lib.models import shared_fixture_tokenizer
from lib.masking.templates import IGNORE_INDEX, MaskingError, build_masked_example, render
from lib.think import assistant_text
from tests.masking.conversations import (MULTI, SINGLE, SYSTEM, _ANSWER, _ASSISTANT, _TEXT, _no_leading_whitespace,
                                        conversations)

# derandomize: the same 30 examples every run (an oracle check, deterministic like the rest of the suite).
_PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

CASES = {
    "single": [*SINGLE],
    "single_system": [SYSTEM, *SINGLE],
    "multi": [*MULTI],
    "multi_system": [SYSTEM, *MULTI],
}


def _trained(example) -> list[bool]:
    return [label != IGNORE_INDEX for label in example.labels]


def _first_difference(tok, ours: list[int], theirs: list[int]) -> str:
    """Where two id sequences part, as token pieces around the first difference (for assertion messages)."""
    i = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    window = slice(max(0, i - 4), i + 4)
    return (f"first difference at token {i}: ours {tok.convert_ids_to_tokens(ours[window])} vs oracle "
            f"{tok.convert_ids_to_tokens(theirs[window])}")


# ============================================================================================================
# 1. mistral-common: Mistral's reference encoder
# ============================================================================================================

# The v3 SentencePiece model inside the wheel: what `MistralTokenizer.v3()` loads (no hub access).
MISTRAL_V3_MODEL = Path(mistral_common.__file__).parent / "data" / "mistral_instruct_tokenizer_240323.model.v3"
_ROLES = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}


@functools.cache
def mistral_reference() -> MistralTokenizer:
    """Finetuning mode: the request ends with the assistant reply being trained, which is encoded with its `</s>`.

    (`MistralTokenizer.v3()` loads the same file in test mode, which refuses a final assistant message: that mode
    encodes what inference sends, see `test_mistral_common_generation_prompt_is_our_masked_prefix`.) Like our
    masker, finetuning mode writes the system prompt into the *last* user turn, the one the trained reply answers.
    """
    return MistralTokenizer.from_file(str(MISTRAL_V3_MODEL), mode=ValidationMode.finetuning)


@functools.cache
def mistral_inference_reference() -> MistralTokenizer:
    """`MistralTokenizer.v3()`: the same model file in test mode, where a request ends with the user turn."""
    return MistralTokenizer.v3()


@functools.cache
def _space_id() -> int:
    return mistral_reference().instruct_tokenizer.tokenizer.vocab().index("▁")


def mistral_reference_ids(messages: list[dict], reference: MistralTokenizer | None = None) -> list[int]:
    request = ChatCompletionRequest(messages=[_ROLES[m["role"]](content=m["content"]) for m in messages])
    return (reference or mistral_reference()).encode_chat_completion(request).tokens


def mistral_reference_mask(ids: list[int]) -> list[bool]:
    """mistral-common's own layout: every token after an `[/INST]` up to and including the next `</s>` is reply."""
    instruct = mistral_reference().instruct_tokenizer
    end_inst, eos = instruct.END_INST, instruct.tokenizer.eos_id
    mask, inside = [], False
    for token in ids:
        mask.append(inside)
        inside = token == end_inst if not inside else token != eos
    return mask


def lone_space_after_inst(ids: list[int]) -> list[bool]:
    """Positions of a lone `▁` token right after `[/INST]`: the space before a reply that starts with a character
    SentencePiece does not glue to it (a digit, CJK, an emoji, a rare letter: "4" is `▁`, `4`, where "<think>" is
    `▁<`, `think`, ...)."""
    instruct = mistral_reference().instruct_tokenizer
    end_inst, space = instruct.END_INST, _space_id()
    return [i > 0 and ids[i - 1] == end_inst and token == space for i, token in enumerate(ids)]


def _mask_difference(tok, ids: list[int], ours: list[bool], theirs: list[bool]) -> str:
    i = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    if i is None:
        return "masks agree"
    window = range(max(0, i - 4), min(len(ids), i + 4))
    return (f"first mask difference at token {i}: " + " ".join(
        f"{tok.convert_ids_to_tokens(ids[k])!r}:{'T' if ours[k] else '-'}{'T' if theirs[k] else '-'}" for k in window)
        + " (piece:ours,oracle; T = trained)")


def _runs(ids: list[int], mask: list[bool]) -> list[list[int]]:
    """The token ids of each maximal run of True positions."""
    runs, current = [], []
    for token, on in zip(ids, mask):
        if on:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.fixture(scope="module")
def mistral():
    return shared_fixture_tokenizer("mistral_v3")


def test_mistral_fixture_has_the_reference_vocabulary(mistral):
    sp = mistral_reference().instruct_tokenizer.tokenizer
    assert sp.n_words == len(mistral) == 32768
    assert mistral.convert_ids_to_tokens(list(range(sp.n_words))) == [sp.id_to_piece(i) for i in range(sp.n_words)]
    assert (sp.bos_id, sp.eos_id) == (mistral.bos_token_id, mistral.eos_token_id)
    assert mistral_inference_reference().instruct_tokenizer.tokenizer.file_path == MISTRAL_V3_MODEL


@pytest.mark.parametrize("case", CASES)
def test_mistral_common_encodes_our_examples_token_for_token(mistral, case):
    messages = CASES[case]
    example = build_masked_example(messages, mistral)
    reference = mistral_reference_ids(messages)
    assert example.input_ids == reference, _first_difference(mistral, example.input_ids, reference)
    # Trained positions are exactly mistral-common's replies (each `[/INST]` ... `</s>`), prompts all masked ...
    assert _trained(example) == mistral_reference_mask(reference)
    assert all(label in (IGNORE_INDEX, token) for label, token in zip(example.labels, example.input_ids))
    # ... and each trained run is what mistral-common encodes for that reply on its own: content tokens + </s>.
    instruct = mistral_reference().instruct_tokenizer
    replies = [instruct.encode_assistant_message(AssistantMessage(content=m["content"]), False, False)
               for m in messages if m["role"] == "assistant"]
    assert _runs(example.input_ids, _trained(example)) == replies
    assert all(reply[-1] == mistral.eos_token_id for reply in replies)


@pytest.mark.parametrize("case", CASES)
def test_mistral_common_generation_prompt_is_our_masked_prefix(mistral, case):
    """What mistral-common sends at inference (conversation up to the last user turn) is our masked head."""
    messages = CASES[case]
    example = build_masked_example(messages, mistral)
    prompt = mistral_reference_ids(messages[:-1], mistral_inference_reference())
    k = len(prompt)
    assert example.input_ids[:k] == prompt
    assert mistral_reference().instruct_tokenizer.END_INST == prompt[-1]
    assert example.labels[k - 1] == IGNORE_INDEX and example.labels[k] != IGNORE_INDEX


def _mistral_comparable(messages: list[dict]) -> list[dict]:
    """Narrow a random conversation to where the HF template + fast tokenizer and mistral-common mean the same.

    Each narrowing is a difference pinned in `test_known_differences_between_the_hf_template_and_mistral_common`,
    none of them in the mask:
    * runs of ASCII spaces collapse to one, and user/system text does not start with a space (the template writes
      "[INST] " before it): the HF fast tokenizer (Metaspace, split=False) merges "▁▁" + word as `▁▁`, `b`, where
      SentencePiece splits it `▁`, `▁b`; other Unicode spaces (Zs) are not `▁` and stay;
    * no empty user or system text: the template writes "[INST] " + "" (a lone `▁`) and "" + "\\n\\n", while
      mistral-common writes nothing for either;
    * replies have no edge whitespace: the template trims them (our masker refuses such rows, mistral-common keeps
      them), and an empty reply is refused by both;
    Replies that are a substring of "</s>" and replies starting with a character SentencePiece does not glue to
    the space before it are *not* narrowed away (both were masker bugs this oracle found).
    """
    out = []
    for m in messages:
        text = re.sub(" {2,}", " ", m["content"])
        text = text.strip() if m["role"] == "assistant" else text.lstrip(" ")
        out.append({"role": m["role"], "content": text or "q"})
    return out


def test_property_mistral_common_agrees_on_random_conversations(mistral):
    @_PROPERTY
    @given(conversations(content=_ASSISTANT).map(_mistral_comparable))
    def prop(messages):
        example = build_masked_example(messages, mistral)
        reference = mistral_reference_ids(messages)
        assert example.input_ids == reference, _first_difference(mistral, example.input_ids, reference)
        expected = mistral_reference_mask(reference)
        assert _trained(example) == expected, _mask_difference(mistral, reference, _trained(example), expected)
    prop()


# Found by this oracle: the range used to start at the reply's first character, leaving this `▁` untrained.
@pytest.mark.parametrize("reply", ["4", "42 is the answer", "你好", "Đ"])
def test_mistral_lone_space_before_a_reply_is_trained(mistral, reply):
    messages = [SINGLE[0], {"role": "assistant", "content": reply}]
    example = build_masked_example(messages, mistral)
    reference = mistral_reference_ids(messages)
    assert example.input_ids == reference
    assert any(lone_space_after_inst(reference))  # the case in point: `[/INST]`, `▁`, first reply token
    assert _trained(example) == mistral_reference_mask(reference), _mask_difference(
        mistral, reference, _trained(example), mistral_reference_mask(reference))


def test_mistral_lone_space_is_trained_in_every_turn_with_a_system_prompt(mistral):
    # "<think>" replies never meet this (`▁<` is one token); "4" and "42" do, in both turns.
    messages = [SYSTEM, SINGLE[0], {"role": "assistant", "content": "4"}, SINGLE[0], {"role": "assistant",
                                                                                       "content": "42"}]
    example = build_masked_example(messages, mistral)
    reference = mistral_reference_ids(messages)
    assert example.input_ids == reference
    assert sum(lone_space_after_inst(reference)) == 2
    assert _trained(example) == mistral_reference_mask(reference)
    assert not any(lone_space_after_inst(mistral_reference_ids(SINGLE)))


_USER, _REPLY = {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}
KNOWN_DIFFERENCES = {
    # case: (messages, our pieces from [INST] on (or the refusal), mistral-common's pieces from [INST] on)
    "empty_user": ([{"role": "user", "content": ""}, _REPLY],
                   ["[INST]", "▁", "[/INST]", "▁Hi", ".", "</s>"], ["[INST]", "[/INST]", "▁Hi", ".", "</s>"]),
    "empty_system": ([{"role": "system", "content": ""}, _USER, _REPLY],
                     ["[INST]", "▁", "<0x0A>", "<0x0A>", "Hello", "[/INST]", "▁Hi", ".", "</s>"],
                     ["[INST]", "▁Hello", "[/INST]", "▁Hi", ".", "</s>"]),
    "user_leading_space": ([{"role": "user", "content": " b"}, _REPLY],
                           ["[INST]", "▁▁", "b", "[/INST]", "▁Hi", ".", "</s>"],
                           ["[INST]", "▁", "▁b", "[/INST]", "▁Hi", ".", "</s>"]),
    "user_double_space": ([{"role": "user", "content": "a  b"}, _REPLY],
                          ["[INST]", "▁a", "▁▁", "b", "[/INST]", "▁Hi", ".", "</s>"],
                          ["[INST]", "▁a", "▁", "▁b", "[/INST]", "▁Hi", ".", "</s>"]),
    "reply_double_space": ([_USER, {"role": "assistant", "content": "a  b"}],
                           ["[INST]", "▁Hello", "[/INST]", "▁a", "▁▁", "b", "</s>"],
                           ["[INST]", "▁Hello", "[/INST]", "▁a", "▁", "▁b", "</s>"]),
    "reply_trailing_newline": ([_USER, {"role": "assistant", "content": "Hi.\n"}],
                               MaskingError, ["[INST]", "▁Hello", "[/INST]", "▁Hi", ".", "<0x0A>", "</s>"]),
}


@pytest.mark.parametrize("case", KNOWN_DIFFERENCES)
def test_known_differences_between_the_hf_template_and_mistral_common(mistral, case):
    """Where the HF side (chat template + fast tokenizer, what transformers/TRL train with) and mistral-common part.

    None is a mask difference: the text the template writes differs (empty user/system turn; a reply the template
    trims, which our masker refuses rather than train a shifted span), or the two tokenizers split the same text
    differently (a run of spaces before a word: the HF fast tokenizer's BPE runs over the whole segment, SentencePiece
    keeps the last `▁` with the word). We train on the HF side, which is what the fine-tuned model is served with
    through transformers/llama.cpp; a deployment through mistral-common would see the other split for such text.
    """
    messages, ours, theirs = KNOWN_DIFFERENCES[case]
    reference = mistral.convert_ids_to_tokens(mistral_reference_ids(messages))
    assert reference == ["<s>", *theirs]
    if ours is MaskingError:
        with pytest.raises(MaskingError, match="template trims"):
            build_masked_example(messages, mistral)
        return
    example = build_masked_example(messages, mistral)
    assert mistral.convert_ids_to_tokens(example.input_ids) == ["<s>", *ours]
    assert example.text.startswith(render(mistral, messages[:-1], True, {}))  # the template wrote it this way
    if "double_space" in case or "leading_space" in case:  # the tokenizers alone already disagree
        sp = mistral_reference().instruct_tokenizer.tokenizer
        hf_ids = mistral("a  b", add_special_tokens=False)["input_ids"]
        assert mistral.convert_ids_to_tokens(hf_ids) == ["▁a", "▁▁", "b"]
        assert [sp.id_to_piece(i) for i in sp.encode("a  b", bos=False, eos=False)] == ["▁a", "▁", "▁b"]


@pytest.mark.parametrize("reply", ["/", "s", "s>"])
def test_mistral_reply_that_occurs_inside_eos_without_a_system_prompt_agrees(mistral, reply):
    messages = [SINGLE[0], {"role": "assistant", "content": reply}]
    example = build_masked_example(messages, mistral)
    assert example.input_ids == mistral_reference_ids(messages)
    assert _trained(example) == mistral_reference_mask(example.input_ids)


# Found by this oracle: the reply used to be searched with rfind, which found "s" inside the trailing "</s>".
@pytest.mark.parametrize("reply", ["/", "s", "s>"])
def test_mistral_reply_that_occurs_inside_eos_with_a_system_prompt(mistral, reply):
    messages = [SYSTEM, SINGLE[0], {"role": "assistant", "content": reply}]
    example = build_masked_example(messages, mistral)
    assert example.input_ids == mistral_reference_ids(messages)
    assert _trained(example) == mistral_reference_mask(example.input_ids)


# ============================================================================================================
# 2. TRL: training templates with {% generation %} markers -> transformers' assistant mask
# ============================================================================================================

TRL_TRAINING_TEMPLATES = {"qwen2_5": "qwen2_5_training_chat_template", "qwen3": "qwen3_training_chat_template"}
NO_TRL_TRAINING_TEMPLATE = ["llama3_2", "mistral_v3", "smollm2"]


def trl_template(family: str) -> str:
    return get_training_chat_template(shared_fixture_tokenizer(family))


def trl_mask(family: str, messages: list[dict]) -> tuple[list[int], list[bool]]:
    out = shared_fixture_tokenizer(family).apply_chat_template(
        messages, chat_template=trl_template(family), tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True)
    return out["input_ids"], [bool(m) for m in out["assistant_masks"]]


def trl_mask_from_ours(family: str, ids: list[int], trained: list[bool]) -> list[bool]:
    """TRL's mask predicted from ours: ours + the "\\n" after each `<|im_end|>` (+ for Qwen2.5 the header's "\\n").

    TRL's `{% generation %}` block ends after the "\\n" the template writes after `<|im_end|>`, and for Qwen2.5 it
    starts before the "\\n" of `<|im_start|>assistant\\n`. Ours is what the model must produce: the header newline is
    part of the generation prompt (`add_generation_prompt` writes it, so inference feeds it), and generation stops
    at `<|im_end|>`, so the newline after it is never produced; training those two tokens teaches nothing the model
    will use. Both train `<|im_end|>` itself, the token the model needs to stop.
    """
    tok = shared_fixture_tokenizer(family)
    newline, eot = tok("\n", add_special_tokens=False)["input_ids"], tok.convert_tokens_to_ids("<|im_end|>")
    assert len(newline) == 1
    expected = list(trained)
    for i, on in enumerate(trained):
        if on and ids[i] == eot:
            assert ids[i + 1] == newline[0]
            expected[i + 1] = True
        if family == "qwen2_5" and on and not trained[i - 1]:  # first token of a reply
            assert ids[i - 1] == newline[0] and tok.convert_ids_to_tokens(ids[i - 2]) == "assistant"
            expected[i - 1] = True
    return expected


@pytest.mark.parametrize("family", sorted(TRL_TRAINING_TEMPLATES))
def test_trl_ships_a_training_template_for(family):
    tok = shared_fixture_tokenizer(family)
    template = trl_template(family)
    assert template == getattr(trl_templates, TRL_TRAINING_TEMPLATES[family])
    assert "{%- generation %}" in template and "{% generation" not in tok.chat_template
    assert is_chat_template_stop_token_trained(tok, template)  # TRL's own check: <|im_end|> is in its mask


@pytest.mark.parametrize("family", NO_TRL_TRAINING_TEMPLATE)
def test_trl_ships_no_training_template_for(family):
    with pytest.raises(ValueError, match="patching is not supported for this template"):
        get_training_chat_template(shared_fixture_tokenizer(family))


def test_trl_knows_the_llama3_2_template_but_patches_only_llama3():
    # TRL has our Llama 3.2 template on file (llama3_2.jinja) but maps only the Llama 3.0 one to llama3_training.
    template = shared_fixture_tokenizer("llama3_2").chat_template
    assert template == trl_templates.llama3_2_chat_template != trl_templates.llama3_chat_template


# Where TRL's training template renders the same text as the original: every Qwen2.5 case; for Qwen3 only a single
# reply, since its training template keeps the <think> block of earlier replies (see the multi-turn test below).
TRL_PAIRS = [("qwen2_5", case) for case in CASES] + [("qwen3", "single"), ("qwen3", "single_system")]


@pytest.mark.parametrize("family, case", TRL_PAIRS)
def test_trl_mask_is_ours_plus_the_newlines_around_each_reply(family, case):
    messages = CASES[case]
    example = build_masked_example(messages, shared_fixture_tokenizer(family))
    ids, mask = trl_mask(family, messages)
    assert ids == example.input_ids
    assert mask == trl_mask_from_ours(family, ids, _trained(example))
    extra = [tok for tok, theirs, ours in zip(ids, mask, _trained(example)) if theirs and not ours]
    replies = sum(m["role"] == "assistant" for m in messages)
    assert shared_fixture_tokenizer(family).decode(extra) == "\n" * replies * (2 if family == "qwen2_5" else 1)


def test_qwen3_trl_template_keeps_earlier_think_blocks_so_only_the_last_reply_is_compared():
    tok = shared_fixture_tokenizer("qwen3")
    ours = build_masked_example(MULTI, tok, assistant_turns="last")
    ids, mask = trl_mask("qwen3", MULTI)
    trl_text = tok.apply_chat_template(MULTI, chat_template=trl_template("qwen3"), tokenize=False)
    # TRL's context shows the first reply's reasoning; inference (the original template) drops it, and so do we.
    assert "First add 2 and 2." in trl_text and "First add 2 and 2." not in ours.text
    assert ids != ours.input_ids
    # TRL trains that rewritten first reply (with a <think> the model never sees in history); we leave it untrained.
    assert tok.decode([t for t, m in zip(ids, mask) if m]).startswith(SINGLE[1]["content"] + "<|im_end|>\n")
    # From the last <|im_start|> on the sequences coincide, and the masks relate as in the single-turn case.
    start = tok.convert_tokens_to_ids("<|im_start|>")
    k_ours, k_trl = (len(seq) - 1 - seq[::-1].index(start) for seq in (ours.input_ids, ids))
    assert ours.input_ids[k_ours:] == ids[k_trl:]
    assert mask[k_trl:] == trl_mask_from_ours("qwen3", ours.input_ids, _trained(ours))[k_ours:]


@st.composite
def single_turn(draw, content):
    system = [{"role": "system", "content": draw(_TEXT)}] if draw(st.booleans()) else []
    return [*system, {"role": "user", "content": draw(_TEXT)}, {"role": "assistant", "content": draw(content)}]


# Qwen2.5: random multi-turn conversations, replies narrowed as in test_masking (no leading whitespace, which a
# ChatML BPE token would share with the generation prompt's "\n"). Qwen3: one canonical reply (think block + answer,
# lib.think.assistant_text), where TRL's training template and the original render the same text.
TRL_STRATEGIES = {
    "qwen2_5": conversations(content=_ASSISTANT.map(_no_leading_whitespace)),
    "qwen3": single_turn(st.builds(assistant_text, _TEXT, _ANSWER)),
}


@pytest.mark.parametrize("family", sorted(TRL_STRATEGIES))
def test_property_trl_mask_is_ours_plus_the_newlines_around_each_reply(family):
    tok = shared_fixture_tokenizer(family)

    @_PROPERTY
    @given(TRL_STRATEGIES[family])
    def prop(messages):
        example = build_masked_example(messages, tok)
        ids, mask = trl_mask(family, messages)
        assert ids == example.input_ids, _first_difference(tok, example.input_ids, ids)
        assert mask == trl_mask_from_ours(family, ids, _trained(example))
    prop()
