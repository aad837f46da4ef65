"""Tests for lib.architectures: the bundled configs, exact parameter totals, GGUF shapes and LoRA counts."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest

from lib.architectures import (
    LORA_MODULES,
    Architecture,
    architecture_from_config,
    bias_modules,
    build_hf_config,
    gguf_tensor_shapes,
    hf_config_dict,
    known_architectures,
    load_architecture,
    lora_parameter_count,
    parameter_count,
)

EXPECTED = {"smollm2-135m", "llama-3.2-1b", "llama-3.2-3b", "llama-3-8b", "mistral-small-2409", "nanbeige4-3b-base",
            "qwen3-1.7b", "deepseek-r1-distill-qwen-1.5b"}

# Published exact totals (model cards / safetensors metadata of the upstream repos).
PUBLISHED_TOTALS = {
    "smollm2-135m": 134_515_008,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "llama-3-8b": 8_030_261_248,
    "mistral-small-2409": 22_247_282_688,
    # several independent loads of revision ad9f0ae (Qwen2ForCausalLM, 339 tensors): the q/k/v biases included
    "deepseek-r1-distill-qwen-1.5b": 1_777_088_000,
}
ALL7 = list(LORA_MODULES)
SMOL = load_architecture("smollm2-135m")


def test_all_expected_configs_are_bundled():
    assert EXPECTED <= set(known_architectures())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_json_documents_its_source_and_uses_hf_keys(name):
    raw = json.loads(resources.files("lib").joinpath("model_configs", f"{name}.json").read_text())
    assert raw["_source"].strip(), "every config must say where its numbers come from"
    cfg = hf_config_dict(name)
    assert not any(k.startswith("_") for k in cfg)
    for key in ("architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
                "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "tie_word_embeddings", "max_position_embeddings", "rope_theta", "rms_norm_eps"):
        assert key in cfg, f"{name} lacks HF key {key}"


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError) as err:
        load_architecture("llama-9000")
    assert "llama-9000" in str(err.value) and "llama-3.2-3b" in str(err.value)


@pytest.mark.parametrize("name,total", sorted(PUBLISHED_TOTALS.items()))
def test_parameter_count_matches_published_total(name, total):
    assert parameter_count(load_architecture(name)) == total


def test_head_dim_is_derived_when_the_config_omits_it():
    # Llama-3-8B's config has no head_dim; Llama-3.2-1B's states 64 explicitly.
    assert "head_dim" not in hf_config_dict("llama-3-8b")
    assert load_architecture("llama-3-8b").head_dim == 128
    assert load_architecture("llama-3.2-1b").head_dim == 64


def test_architecture_is_frozen_and_hashable():
    arch = load_architecture("llama-3.2-3b")
    assert isinstance(arch, Architecture)
    with pytest.raises(AttributeError):
        arch.hidden_size = 1  # type: ignore[misc]
    assert hash(arch) == hash(load_architecture("llama-3.2-3b"))
    assert arch.rope_type == "llama3" and load_architecture("llama-3-8b").rope_type is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gguf_shapes_hold_every_parameter_exactly_once(name):
    arch = load_architecture(name)
    shapes = gguf_tensor_shapes(arch)
    names = [n for n, _ in shapes]
    assert len(names) == len(set(names))
    hf_params = sum(math.prod(s) for n, s in shapes if n != "rope_freqs.weight")
    assert hf_params == parameter_count(arch)
    per_block = 9 + len(arch.bias_modules) + (2 if arch.qk_norm else 0)
    assert len(shapes) == 2 + per_block * arch.num_hidden_layers + (0 if arch.tie_word_embeddings else 1) + (
        1 if arch.rope_type == "llama3" else 0)


def test_gguf_shape_order_is_ne0_equals_in_features():
    arch = load_architecture("llama-3.2-3b")
    s = dict(gguf_tensor_shapes(arch))
    assert s["token_embd.weight"] == (3072, 128256)
    assert s["blk.0.attn_q.weight"] == (3072, 3072)
    assert s["blk.0.attn_k.weight"] == (3072, 1024)
    assert s["blk.27.ffn_down.weight"] == (8192, 3072)  # rows of length intermediate_size
    assert s["blk.0.ffn_up.weight"] == (3072, 8192)
    assert s["output_norm.weight"] == (3072,)
    assert "output.weight" not in s  # tied: llama.cpp reuses token_embd
    assert s["rope_freqs.weight"] == (64,)  # llama3 rope scaling -> head_dim/2 factors


def test_untied_model_has_output_tensor_and_no_rope_freqs_without_llama3_scaling():
    s = dict(gguf_tensor_shapes(load_architecture("mistral-small-2409")))
    assert s["output.weight"] == (6144, 32768)
    assert s["blk.55.attn_output.weight"] == (6144, 6144)
    assert "rope_freqs.weight" not in s


def test_lora_count_known_values():
    # PEFT prints 13,631,488 trainable params for Llama-3-8B at r=16 on q,k,v,o.
    assert lora_parameter_count(load_architecture("llama-3-8b"), 16, ["q_proj", "k_proj", "v_proj", "o_proj"]) == 13_631_488
    # Hand count for Llama-3.2-1B, r=8, q_proj only: 8 * (2048 + 2048) * 16 layers.
    assert lora_parameter_count(load_architecture("llama-3.2-1b"), 8, ["q_proj"]) == 8 * 4096 * 16


def test_lora_count_is_linear_in_rank_and_additive_over_modules():
    arch = load_architecture("mistral-small-2409")
    full = lora_parameter_count(arch, 64, ALL7)
    assert full == 2 * lora_parameter_count(arch, 32, ALL7)
    assert full == sum(lora_parameter_count(arch, 64, [m]) for m in ALL7)
    assert lora_parameter_count(arch, 64, ["q_proj", "q_proj"]) == lora_parameter_count(arch, 64, ["q_proj"])


def test_lora_unknown_module_is_named():
    with pytest.raises(ValueError, match="qkv_proj"):
        lora_parameter_count(load_architecture("smollm2-135m"), 8, ["q_proj", "qkv_proj"])


def test_configs_load_in_transformers():
    transformers = pytest.importorskip("transformers")
    for name in sorted(EXPECTED):
        fields = hf_config_dict(name)
        model_type = fields.pop("model_type")
        config = transformers.AutoConfig.for_model(model_type, **fields)
        arch = load_architecture(name)
        assert config.model_type == arch.model_type
        assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (
            arch.hidden_size, arch.num_hidden_layers, arch.vocab_size)
        assert getattr(config, "head_dim", None) in (None, arch.head_dim)
        assert config.tie_word_embeddings == arch.tie_word_embeddings
        # Qwen2/Qwen3 configs default to a sliding window unless told otherwise: the bundled ones must not get one
        assert set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"}, name


@pytest.mark.parametrize("name", known_architectures())
def test_parameter_count_equals_the_meta_device_model_of_every_bundled_config(name):
    """The oracle is transformers itself: the model it builds from the bundled config, on the meta device (no
    memory), has exactly parameter_count parameters, with the biases and q/k norms the Architecture lists."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    arch = load_architecture(name)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(build_hf_config(name))
    assert sum(p.numel() for p in model.parameters()) == parameter_count(arch)
    layer = model.model.layers[0]
    linears = {**{m: getattr(layer.self_attn, m) for m in ("q_proj", "k_proj", "v_proj", "o_proj")},
               **{m: getattr(layer.mlp, m) for m in ("gate_proj", "up_proj", "down_proj")}}
    assert tuple(m for m in LORA_MODULES if linears[m].bias is not None) == arch.bias_modules
    assert hasattr(layer.self_attn, "q_norm") == arch.qk_norm == hasattr(layer.self_attn, "k_norm")
    if arch.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_qwen_block_features_come_from_the_config_keys_not_the_name():
    r1 = load_architecture("deepseek-r1-distill-qwen-1.5b")
    assert r1.bias_modules == ("q_proj", "k_proj", "v_proj") and not r1.qk_norm
    qwen3 = load_architecture("qwen3-1.7b")
    assert qwen3.bias_modules == () and qwen3.qk_norm
    assert all(load_architecture(n).bias_modules == () and not load_architecture(n).qk_norm
               for n in ("llama-3.2-3b", "mistral-small-2409", "nanbeige4-3b-base"))
    # a misleading name changes nothing; the keys decide
    qwen2_named_llama = architecture_from_config("llama-3.2-3b", hf_config_dict("deepseek-r1-distill-qwen-1.5b"))
    assert qwen2_named_llama.bias_modules == r1.bias_modules
    assert bias_modules({**hf_config_dict("qwen3-1.7b"), "attention_bias": True}) == (
        "q_proj", "k_proj", "v_proj", "o_proj")
    assert bias_modules({"model_type": "llama", "attention_bias": False, "mlp_bias": True}) == (
        "gate_proj", "up_proj", "down_proj")
    assert bias_modules({"model_type": "mistral", "attention_bias": True}) == ()  # MistralAttention has no switch
    with pytest.raises(ValueError, match="unknown model_type 'gemma2'"):
        bias_modules({"model_type": "gemma2"})


def test_qwen_gguf_shapes_name_biases_and_head_norms_as_llama_cpp_does():
    s = dict(gguf_tensor_shapes(load_architecture("deepseek-r1-distill-qwen-1.5b")))
    assert s["blk.0.attn_q.bias"] == (1536,) and s["blk.27.attn_k.bias"] == (256,) and s["blk.3.attn_v.bias"] == (256,)
    assert "blk.0.attn_output.bias" not in s and "blk.0.attn_q_norm.weight" not in s
    assert s["output.weight"] == (1536, 151936)  # untied
    q3 = dict(gguf_tensor_shapes(load_architecture("qwen3-1.7b")))
    assert q3["blk.0.attn_q_norm.weight"] == q3["blk.27.attn_k_norm.weight"] == (128,)
    assert q3["blk.0.attn_q.weight"] == (2048, 2048) and q3["blk.0.attn_k.weight"] == (2048, 1024)
    assert "blk.0.attn_q.bias" not in q3 and "output.weight" not in q3  # tied: llama.cpp reuses token_embd


def test_qwen3_total_matches_the_published_safetensors_size():
    # Qwen/Qwen3-1.7B at 70d244cc holds 4,063,479,808 bytes of bf16 tensors; its files store lm_head as well,
    # although tie_word_embeddings is true, so the file holds one vocab x hidden matrix more than the model
    arch = load_architecture("qwen3-1.7b")
    assert 2 * (parameter_count(arch) + arch.vocab_size * arch.hidden_size) == 4_063_479_808


# --- the oracles below build real (tiny) models -------------------------------------------------------------

TINY_FAMILIES = [("llama-3.2-1b", "llama3_2"), ("deepseek-r1-distill-qwen-1.5b", "r1_distill_qwen"),
                 ("qwen3-1.7b", "qwen3")]


def _tiny_model(name: str, vocab_size: int):
    """A random model of `name`'s family, shrunk by lib.tiny (two layers, width 256), and its shrunk config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lib.tiny import shrunk_config

    config = shrunk_config(hf_config_dict(name), vocab_size=vocab_size)
    fields = dict(config)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(fields.pop("model_type"), **fields)), config


@pytest.mark.parametrize("name", [name for name, _ in TINY_FAMILIES])
def test_lora_count_equals_peft_on_a_tiny_model_and_biases_add_nothing(name):
    peft = pytest.importorskip("peft")
    model, config = _tiny_model(name, vocab_size=512)
    arch = architecture_from_config(name, config)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=ALL7))
    trainable = {n: p.numel() for n, p in lora.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == lora_parameter_count(arch, 4, ALL7)
    assert all("lora_" in n for n in trainable)  # the q/k/v biases stay frozen
    assert sum(p.numel() for p in lora.parameters()) == parameter_count(arch) + lora_parameter_count(arch, 4, ALL7)


@pytest.mark.slow
@pytest.mark.parametrize("name, fixture", TINY_FAMILIES)
def test_gguf_shapes_equal_what_llama_cpp_writes_for_a_tiny_model(name, fixture, tmp_path):
    """llama.cpp's own converter on a tiny random model of each family (the fixture's real vocabulary): the GGUF
    holds exactly the tensors gguf_tensor_shapes lists, names and shapes. 30-60 s per family."""
    gguf = pytest.importorskip("gguf")
    from lib.export.gguf import convert_to_gguf
    from lib.models import load_fixture_tokenizer
    from lib.tiny import tiny_vocab_size

    tokenizer = load_fixture_tokenizer(fixture)
    model, config = _tiny_model(name, tiny_vocab_size(hf_config_dict(name)["vocab_size"], len(tokenizer), False))
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    reader = gguf.GGUFReader(convert_to_gguf(tmp_path / "hf", tmp_path / "tiny-F16.gguf"))
    written = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    assert written == dict(gguf_tensor_shapes(architecture_from_config(name, config)))
    if fixture == "r1_distill_qwen":  # llama.cpp recognises the fixture as R1-Distill-Qwen's own tokenizer
        pre = reader.fields["tokenizer.ggml.pre"]
        assert bytes(pre.parts[pre.data[0]]).decode() == "deepseek-r1-qwen"
