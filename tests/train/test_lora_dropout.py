"""The CPU's LoRA dropout drops with the asked probability, scales like nn.Dropout, is off in eval mode, follows
torch's seed (so a resumed run repeats it), and replaces exactly PEFT's LoRA dropouts."""
import pytest
import torch

from lib.train.lora_dropout import FastLoraDropout, use_fast_lora_dropout


def test_drop_rate_and_scale():
    torch.manual_seed(0)
    drop = FastLoraDropout(0.05).train()
    x = torch.ones(1000, 1000)
    y = drop(x)
    dropped = float((y == 0).float().mean())
    assert dropped == pytest.approx(0.05, abs=0.002)  # 1e6 draws: 5 sigma ~ 0.0011
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / 0.95)))
    assert float(y.mean()) == pytest.approx(1.0, abs=0.003)  # unbiased, like nn.Dropout


def test_masks_differ_per_call_and_follow_the_seed():
    drop = FastLoraDropout(0.3).train()
    x = torch.ones(64, 64)
    torch.manual_seed(1)
    a, b = drop(x), drop(x)
    torch.manual_seed(1)
    assert not torch.equal(a, b) and torch.equal(drop(x), a)


def test_eval_mode_and_zero_probability_are_the_identity():
    x = torch.randn(8, 8)
    assert drop_is_identity(FastLoraDropout(0.5).eval(), x) and drop_is_identity(FastLoraDropout(0.0).train(), x)
    with pytest.raises(ValueError):
        FastLoraDropout(1.0)


def drop_is_identity(drop, x):
    return torch.equal(drop(x), x)


def test_gradient_is_the_mask():
    torch.manual_seed(2)
    x = torch.randn(32, 32, requires_grad=True)
    y = FastLoraDropout(0.2).train()(x)
    y.sum().backward()
    assert torch.allclose(x.grad, (y != 0).float() / 0.8)


def test_replaces_peft_lora_dropouts_only():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    model = get_peft_model(AutoModelForCausalLM.from_config(config),
                           LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    assert use_fast_lora_dropout(model) == 4  # 2 layers x 2 targets
    found = [m for m in model.modules() if isinstance(m, FastLoraDropout)]
    assert len(found) == 4 and all(m.p == 0.1 for m in found)
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
