"""The sizes of a --tiny run, decided here and nowhere else: a recipe's architecture shrunk to a model that trains,
merges, converts and generates on a CPU in seconds, with the recipe's real vocabulary.

Usage: ``config = shrunk_config(hf_config_dict("llama-3.2-3b"), vocab_size=128256)``

Only the sizes change: the model type, attention layout (grouped-query ratio, head_dim where it fits, biases and
norms of the family), rope settings, tied or untied embeddings and dtype are the recipe's own, so every function a
GPU run calls runs on the same kind of model. The numbers it trains mean nothing; the code path is the point.
"""
from __future__ import annotations

import math
from typing import Any

TINY_LAYERS = 2
# llama.cpp's K-quants pack rows in super-blocks of 256 values: every row length (hidden, q_dim, intermediate) a
# multiple of 256 keeps Q4_K_M/Q5_K_M/Q6_K really K-quantised instead of falling back to another type
TINY_HIDDEN = 256
QUANT_BLOCK = 256
FALLBACK_HEAD_DIM = 64  # when the family's head_dim does not divide the tiny hidden size (SmolLM2: 64 already)

# config keys that list one entry per layer: rebuilt (or dropped) for the shrunk layer count
_PER_LAYER_KEYS = ("layer_types",)


def shrunk_config(config: dict[str, Any], vocab_size: int, hidden_size: int = TINY_HIDDEN,
                  num_layers: int = TINY_LAYERS) -> dict[str, Any]:
    """`config` (an HF config dict) with `num_layers` layers of width `hidden_size` and `vocab_size` tokens.

    The attention keeps the family's head_dim when it divides `hidden_size` (Llama 3, Mistral, Qwen: 128) and its
    grouped-query ratio as closely as whole heads allow; the MLP keeps its width ratio, rounded up to a multiple
    of 256. Pure: the bundled config is not changed.
    """
    if hidden_size % QUANT_BLOCK:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of {QUANT_BLOCK} (K-quants would fall back)")
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if hidden_size % head_dim:
        head_dim = FALLBACK_HEAD_DIM
    tiny_heads = hidden_size // head_dim
    group = heads // config.get("num_key_value_heads", heads)  # query heads per key/value head
    kv_heads = max(1, tiny_heads // group)
    while tiny_heads % kv_heads:
        kv_heads -= 1
    mlp_ratio = config["intermediate_size"] / config["hidden_size"]
    intermediate = QUANT_BLOCK * math.ceil(hidden_size * mlp_ratio / QUANT_BLOCK)
    shrunk = {key: value for key, value in config.items() if key not in _PER_LAYER_KEYS}
    shrunk.update(hidden_size=hidden_size, intermediate_size=intermediate, num_hidden_layers=num_layers,
                  num_attention_heads=tiny_heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                  vocab_size=vocab_size)
    if "max_window_layers" in shrunk:  # Qwen2: layers from this index on use sliding windows (when enabled)
        shrunk["max_window_layers"] = min(shrunk["max_window_layers"], num_layers)
    return shrunk


def tiny_vocab_size(config_vocab: int, tokenizer_size: int, stand_in: bool) -> int:
    """The tiny model's vocabulary: the recipe's own (padding included, e.g. Qwen's 151,936 for 151,665 tokens); a
    stand-in tokenizer's own size when the recipe's tokenizer is a stand-in (its ids are all the model sees)."""
    if stand_in or config_vocab < tokenizer_size:
        return tokenizer_size
    return config_vocab
