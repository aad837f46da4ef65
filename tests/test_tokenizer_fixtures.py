"""The r1_distill_qwen tokenizer fixture is DeepSeek-R1-Distill-Qwen's tokenizer: ids, specials, template, BOS.

Ground truth: the model's own tokenizer.json / tokenizer_config.json (copies quoted in fixtures/tokenizers/README.md),
the qwen2_5 fixture it is built from, and TRL's copy of the model's chat template. llama.cpp's converter recognises
the fixture as this model's tokenizer (tests/test_architectures.py, the slow GGUF test).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lib.masking.templates import IGNORE_INDEX, build_masked_example, render, trained_text
from lib.models import TOKENIZER_FIXTURES, shared_fixture_tokenizer

R1 = "r1_distill_qwen"
# id -> (token, special) in DeepSeek-R1-Distill-Qwen-1.5B's tokenizer.json (added_tokens)
R1_ADDED = {
    151643: ("<｜end▁of▁sentence｜>", True), 151644: ("<｜User｜>", False), 151645: ("<｜Assistant｜>", False),
    151646: ("<｜begin▁of▁sentence｜>", True), 151647: ("<|EOT|>", False), 151648: ("<think>", False),
    151649: ("</think>", False), 151650: ("<|quad_start|>", True), 151651: ("<|quad_end|>", True),
    151652: ("<|vision_start|>", True), 151653: ("<|vision_end|>", True), 151654: ("<|vision_pad|>", True),
    151655: ("<|image_pad|>", True), 151656: ("<|video_pad|>", True), 151657: ("<tool_call>", False),
    151658: ("</tool_call>", False), 151659: ("<|fim_prefix|>", False), 151660: ("<|fim_middle|>", False),
    151661: ("<|fim_suffix|>", False), 151662: ("<|fim_pad|>", False), 151663: ("<|repo_name|>", False),
    151664: ("<|file_sep|>", False),
}


@pytest.fixture(scope="module")
def r1():
    return shared_fixture_tokenizer(R1)


def _tokenizer_json(name: str) -> dict:
    return json.loads(gzip.decompress((TOKENIZER_FIXTURES / name / "tokenizer.json.gz").read_bytes()))


def test_r1_added_tokens_have_their_real_ids_and_special_flags(r1):
    assert {i: (t.content, t.special) for i, t in r1.added_tokens_decoder.items()} == R1_ADDED
    assert len(r1) == 151_665  # the model's embedding has 151,936 rows: the rest is padding
    assert (r1.bos_token, r1.bos_token_id) == ("<｜begin▁of▁sentence｜>", 151646)
    assert (r1.eos_token, r1.eos_token_id) == ("<｜end▁of▁sentence｜>", 151643)
    assert r1.pad_token_id == 151643
    # <think> is one token, not split, and not special: decoding with skip_special_tokens keeps it
    assert r1("<think>\nx</think>", add_special_tokens=False)["input_ids"][:2] == [151648, 198]
    assert r1.decode([151648, 151643], skip_special_tokens=True) == "<think>"


def test_r1_bpe_is_qwen2_5s_and_encoding_adds_bos_as_the_real_post_processor_does(r1):
    ours, qwen = _tokenizer_json(R1), _tokenizer_json("qwen2_5")
    assert ours["model"]["vocab"] == qwen["model"]["vocab"] and ours["model"]["merges"] == qwen["model"]["merges"]
    assert ours["normalizer"] == {"type": "NFC"}
    text = "Natalia sold 48 clips. 😀 我想"
    plain = shared_fixture_tokenizer("qwen2_5")(text, add_special_tokens=False)["input_ids"]
    assert r1(text)["input_ids"] == [151646, *plain]  # TemplateProcessing: BOS + the same BPE pieces
    assert r1(text, add_special_tokens=False)["input_ids"] == plain


def test_r1_template_is_the_models_and_its_generation_prompt_opens_the_think_block(r1):
    import trl

    trl_copy = (Path(trl.__file__).parent / "chat_templates" / "deepseek_r1_distill.jinja").read_text()
    assert r1.chat_template == trl_copy.rstrip("\n")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "2+2?"}]
    prompt = render(r1, messages, True, {})
    assert prompt == "<｜begin▁of▁sentence｜>S<｜User｜>2+2?<｜Assistant｜><think>\n"
    assert prompt.endswith("<think>\n")


def test_r1_masking_trains_the_reply_after_the_prompts_think_and_the_end_of_sentence(r1):
    reply = "<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4."
    messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": reply}]
    example = build_masked_example(messages, r1)
    assert trained_text(example, r1) == "2 plus 2 is 4.\n</think>\n\nThe answer is 4.<｜end▁of▁sentence｜>"
    assert example.input_ids[0] == 151646 and example.input_ids.count(151646) == 1  # BOS once, from the template
    assert example.labels[-1] == 151643 and example.labels[0] == IGNORE_INDEX
    assert 151649 in [label for label in example.labels if label != IGNORE_INDEX]  # </think> is trained
