"""Tests for lib.architectures: the bundled configs, exact parameter totals, GGUF shapes and LoRA counts."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest

from lib.architectures import (
    LORA_MODULES,
    Architecture,
    build_hf_config,
    gguf_tensor_shapes,
    hf_config_dict,
    known_architectures,
    load_architecture,
    lora_parameter_count,
    parameter_count,
)

EXPECTED = {"smollm2-135m", "llama-3.2-1b", "llama-3.2-3b", "llama-3-8b", "mistral-small-2409", "nanbeige4-3b-base"}

# Published exact totals (model cards / safetensors metadata of the upstream repos).
PUBLISHED_TOTALS = {
    "smollm2-135m": 134_515_008,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "llama-3-8b": 8_030_261_248,
    "mistral-small-2409": 22_247_282_688,
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
    assert len(shapes) == 2 + 9 * arch.num_hidden_layers + (0 if arch.tie_word_embeddings else 1) + (
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


def test_configs_load_in_transformers_and_build_on_meta_device():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
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
    # Building a model is slow for the big configs, so only SmolLM2 is built. Its parameter
    # total must match ours, which shows that the config carries every shape-relevant key.
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(build_hf_config("smollm2-135m"))
    assert sum(p.numel() for p in model.parameters()) == parameter_count(SMOL)
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
