"""Attention for padding-free micro-batches on the transformers backend: causal attention *within* each packed
sequence, computed one sequence at a time.

Usage: ``AutoModelForCausalLM.from_pretrained(path, attn_implementation=register_packed_attention())``, then feed
TRL's padding-free batches (one row, ``position_ids`` restarting at 0 for each example, ``cu_seq_lens_q``).

Why not transformers' own `sdpa` on such a row: it sees the packing in ``position_ids`` and builds a dense
block-diagonal (T, T) mask, so every layer computes — and masks away — the attention between different examples
(measured on SmolLM2-135M, 2 cores: four packed examples were no faster than four single ones). Here each example
is its own `scaled_dot_product_attention` call with ``is_causal=True``: no mask, no cross-example work, and the
projections still see all the packed tokens as one large matmul.

For training padding-free rows on a CPU only (`Backend.packed_attention`). Not being registered as a mask
function, it gets no attention mask from transformers at all: a batch padded on the right still trains right (the
padding comes after every real token, and its labels are -100), decoding with a KV cache goes to transformers'
`sdpa`, but a left-padded batch would attend to its padding — never use a model loaded with it for batched
generation. Sliding-window attention, logit soft-capping and attention sinks are refused (no recipe's model has
them: every `sliding_window` in lib/model_configs is null).
"""
from __future__ import annotations

import torch

PACKED_ATTENTION = "thinkdistill_packed_sdpa"


def sequence_bounds(length: int, cu_seq_lens=None, position_ids=None) -> list[tuple[int, int]]:
    """[(start, end)] of each packed example in a row of `length` tokens, from TRL's ``cu_seq_lens_q`` (cumulative
    lengths, starting at 0) or else from ``position_ids`` (each example starts where the position is 0)."""
    if cu_seq_lens is not None:
        cuts = [int(c) for c in cu_seq_lens.tolist()]
    elif position_ids is not None:
        cuts = [int(i) for i in (position_ids[0] == 0).nonzero().flatten().tolist()] + [length]
    else:
        return [(0, length)]
    if not cuts or cuts[0] != 0:
        cuts = [0, *cuts]
    if cuts[-1] != length:
        raise ValueError(f"packed sequence lengths end at {cuts[-1]}, the row has {length} tokens")
    return [(start, end) for start, end in zip(cuts, cuts[1:]) if end > start]


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention interface: query (batch, heads, T, dim), key/value (batch, kv_heads, T, dim) →
    ((batch, T, heads, dim), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    unsupported = [k for k in ("sliding_window", "softcap", "s_aux") if kwargs.get(k) is not None]
    if unsupported:
        raise ValueError(f"{PACKED_ATTENTION} does not implement {', '.join(unsupported)}: set padding_free: false "
                         "in the recipe for this model")
    packed = (attention_mask is None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
              and (kwargs.get("cu_seq_lens_q") is not None or kwargs.get("position_ids") is not None))
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    bounds = sequence_bounds(query.shape[2], kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids"))
    gqa = query.shape[1] != key.shape[1]
    p = dropout if module.training else 0.0
    parts = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=p, is_causal=True, scale=scaling,
        enable_gqa=gqa) for s, e in bounds]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Register `packed_sdpa_attention` with transformers (idempotent); returns its `attn_implementation` name.

    It is deliberately *not* registered as a mask function: transformers then builds no (T, T) mask at all."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    return PACKED_ATTENTION
