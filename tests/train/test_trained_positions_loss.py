"""The CPU trainer's loss is the model's own causal-LM loss, computed only where tokens are trained: equal values
and gradients on a padded batch and on a packed row, and the normalisation by a whole step's token count."""
import pytest
import torch

from lib.train.trained_positions_loss import next_token_targets, trained_positions_loss


def tiny_llama():
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).train()


def padded_batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 101, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, :5] = -100   # prompt
    labels[1, :3] = -100
    labels[1, 9:] = -100   # padding
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_equals_the_models_own_loss_and_gradients():
    batch = padded_batch()
    model = tiny_llama()
    own = model(**batch, use_cache=False).loss
    own.backward()
    expected = grads(model)
    model.zero_grad()
    ours = trained_positions_loss(model, dict(batch))
    ours.backward()
    assert float(ours) == pytest.approx(float(own), rel=1e-6)
    assert torch.allclose(grads(model), expected, atol=1e-7, rtol=1e-5)


def test_divides_by_the_steps_token_count_and_scales_for_ranks():
    batch = padded_batch()
    model = tiny_llama()
    trained = int((next_token_targets(batch) != -100).sum())
    mean = trained_positions_loss(model, dict(batch))
    step = trained_positions_loss(model, dict(batch), num_items_in_batch=torch.tensor(4 * trained))
    assert float(step) == pytest.approx(float(mean) / 4, rel=1e-6)
    assert float(trained_positions_loss(model, dict(batch), 4 * trained, processes=2)) == \
        pytest.approx(float(mean) / 2, rel=1e-6)


def test_targets_are_the_next_tokens_labels():
    labels = torch.tensor([[-100, 5, 6, -100]])
    assert next_token_targets({"labels": labels}).tolist() == [[5, 6, -100, -100]]
    assert next_token_targets({"labels": labels, "shift_labels": labels}).tolist() == labels.tolist()


def test_no_trained_token_is_a_finite_zero():
    batch = padded_batch()
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss = trained_positions_loss(tiny_llama(), batch)
    assert float(loss) == 0.0
