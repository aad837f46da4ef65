"""Padding-free packing is exact: four examples packed into one row (position_ids restarting per example) give the
same per-token loss as the four run one by one, through our per-example attention and through transformers' sdpa
(which masks across examples itself) — so packing changes speed, never what is learned."""
import pytest
import torch

from lib.train.packed_attention import PACKED_ATTENTION, register_packed_attention, sequence_bounds


def tiny_llama(attn: str, num_key_value_heads: int = 2):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=num_key_value_heads, max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32).eval()


def examples(lengths=(17, 5, 40, 23)):
    g = torch.Generator().manual_seed(1)
    out = []
    for n in lengths:
        ids = torch.randint(0, 97, (n,), generator=g)
        labels = ids.clone()
        labels[: n // 3] = -100  # a prompt: not trained
        out.append((ids, labels))
    return out


def token_nll_sum(model, ids, labels, **kwargs):
    logits = model(input_ids=ids[None], use_cache=False, **kwargs).logits[0, :-1]  # as in training
    return torch.nn.functional.cross_entropy(logits, labels[1:], ignore_index=-100, reduction="sum")


def packed(exs):
    """What TRL's padding-free collator gives the model: one row, position_ids per example, cu_seq_lens, and the
    first token of every example unlabelled (nothing predicts it from the example before)."""
    ids = torch.cat([i for i, _ in exs])
    labels = torch.cat([lab for _, lab in exs]).clone()
    position_ids = torch.cat([torch.arange(len(i)) for i, _ in exs])
    labels[position_ids == 0] = -100
    cu = torch.tensor([0, *torch.tensor([len(i) for i, _ in exs]).cumsum(0).tolist()], dtype=torch.int32)
    return ids, labels, position_ids[None], cu


@pytest.mark.parametrize("kv_heads", [4, 2])  # multi-head and grouped-query attention
@pytest.mark.parametrize("attn", [PACKED_ATTENTION, "sdpa"])
def test_packed_row_loss_equals_the_examples_one_by_one(attn, kv_heads):
    register_packed_attention()
    exs = examples()
    reference = tiny_llama("sdpa", kv_heads)
    one_by_one = sum(token_nll_sum(reference, ids, labels) for ids, labels in exs)
    model = tiny_llama(attn, kv_heads)
    ids, labels, position_ids, cu = packed(exs)
    together = token_nll_sum(model, ids, labels, position_ids=position_ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    assert abs(float(together.detach()) - float(one_by_one.detach())) <= 1e-5 * max(1.0, abs(float(one_by_one)))


def test_without_position_ids_the_row_is_one_sequence_and_differs():
    """The check above can fail: the same row read as one long sequence (no restart) gives another loss."""
    register_packed_attention()
    exs = examples()
    model = tiny_llama(PACKED_ATTENTION)
    one_by_one = sum(token_nll_sum(model, ids, labels) for ids, labels in exs)
    ids, labels, _, _ = packed(exs)
    assert abs(float(token_nll_sum(model, ids, labels)) - float(one_by_one)) > 1e-3


def test_gradients_match_too():
    register_packed_attention()
    exs = examples()
    grads = []
    for attn, packed_row in [("sdpa", False), (PACKED_ATTENTION, True)]:
        model = tiny_llama(attn)
        if packed_row:
            ids, labels, position_ids, cu = packed(exs)
            token_nll_sum(model, ids, labels, position_ids=position_ids, cu_seq_lens_q=cu).backward()
        else:
            sum(token_nll_sum(model, i, lab) for i, lab in exs).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_sequence_bounds():
    assert sequence_bounds(10, torch.tensor([0, 3, 10])) == [(0, 3), (3, 10)]
    assert sequence_bounds(6, position_ids=torch.tensor([[0, 1, 2, 0, 1, 0]])) == [(0, 3), (3, 5), (5, 6)]
    assert sequence_bounds(4) == [(0, 4)]
    with pytest.raises(ValueError, match="end at 9"):
        sequence_bounds(10, torch.tensor([0, 9]))


def test_generation_with_a_cache_is_unchanged():
    """Decoding (query shorter than the keys, no packing) goes to transformers' sdpa: same tokens."""
    register_packed_attention()
    prompt = torch.tensor([[5, 7, 11, 13]])
    outs = [tiny_llama(attn).generate(prompt, max_new_tokens=6, do_sample=False)
            for attn in ("sdpa", PACKED_ATTENTION)]
    assert torch.equal(outs[0], outs[1])
