"""Two real CPU steps of DistillationTrainer: tiny random Llama student (LoRA) distilled from a tiny random teacher."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import SFTConfig

from lib.train.backends import checkpointing_argument
from lib.train.distill_loss import hybrid_distillation_loss
from lib.train.distill_trainer import DistillationTrainer

VOCAB = 64


def _tiny_llama(seed: int, vocab_size: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config)


def _tokenizer() -> PreTrainedTokenizerFast:
    # SFTTrainer requires a tokenizer (pad/eos handling) even for pre-tokenised data; a word-level one needs no hub.
    vocab = {f"t{i}": i for i in range(VOCAB)}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="t3")),
        pad_token="t0",
        bos_token="t1",
        eos_token="t2",
        unk_token="t3",
    )


def _dataset() -> Dataset:
    # Prompt tokens are -100 in labels; lengths differ so the collator has to pad.
    rows = []
    for i, (prompt_len, response_len) in enumerate([(3, 4), (5, 2), (2, 6), (4, 3)]):
        prompt = [1] + [4 + (i * 7 + j) % 50 for j in range(prompt_len)]
        response = [10 + (i * 5 + j) % 50 for j in range(response_len)] + [2]
        rows.append({"input_ids": prompt + response, "labels": [-100] * len(prompt) + response})
    return Dataset.from_list(rows)


def _args(tmp_path) -> SFTConfig:
    return SFTConfig(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        bf16=False,  # SFTConfig defaults to bf16 autocast; keep CPU numerics in float32
        # SFTConfig defaults gradient_checkpointing to True; its name depends on the transformers version
        **{checkpointing_argument(): False},
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )


def _lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj"])


def test_two_steps_train_lora_and_leave_teacher_alone(tmp_path):
    teacher = _tiny_llama(seed=1)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = DistillationTrainer(
        model=_tiny_llama(seed=0),
        teacher_model=teacher,
        args=_args(tmp_path),
        train_dataset=_dataset(),
        processing_class=_tokenizer(),
        peft_config=_lora(),
        alpha=0.5,
        temperature=2.0,
    )
    # PEFT initialises lora_B to zero; clone everything LoRA so any update is visible.
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert lora_before and all(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)

    result = trainer.train()

    assert trainer.state.global_step == 2
    assert math.isfinite(result.training_loss)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    for entry in logged:
        assert math.isfinite(entry["loss"]) and math.isfinite(entry["kl"]) and math.isfinite(entry["ce"])

    lora_after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(lora_before[n], lora_after[n].detach()) for n in lora_before), "LoRA weights unchanged"

    assert trainer.teacher_model is teacher
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher weight {k} changed"



def test_gradient_accumulation_and_eval_report_the_mean_loss(tmp_path):
    # alpha=0 makes the loss the plain CE, so a loss logged at 2x the CE would mean the Trainer did not divide our
    # per-micro-batch mean by the accumulation steps (loss_is_scaled_for_ga).
    args = _args(tmp_path)
    args.max_steps, args.gradient_accumulation_steps = 1, 2
    trainer = DistillationTrainer(
        model=_tiny_llama(seed=0),
        teacher_model=_tiny_llama(seed=1),
        args=args,
        train_dataset=_dataset(),
        eval_dataset=_dataset(),
        processing_class=_tokenizer(),
        peft_config=_lora(),
        alpha=0.0,
    )
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_ce"], rel=1e-4)
    trainer.train()
    (entry,) = [h for h in trainer.state.log_history if "loss" in h]
    assert entry["loss"] == pytest.approx(entry["ce"], rel=1e-4)


def test_teacher_with_other_vocab_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"student has 64.*teacher has 80"):
        DistillationTrainer(
            model=_tiny_llama(seed=0),
            teacher_model=_tiny_llama(seed=1, vocab_size=80),
            args=_args(tmp_path),
            train_dataset=_dataset(),
            processing_class=_tokenizer(),
        )


def test_teacher_sharing_weights_with_student_is_rejected(tmp_path):
    student = _tiny_llama(seed=0)
    with pytest.raises(ValueError, match="shares weights"):
        DistillationTrainer(
            model=student,
            teacher_model=student,
            args=_args(tmp_path),
            train_dataset=_dataset(),
            processing_class=_tokenizer(),
        )


@pytest.mark.parametrize("padding_free", [False, True])
def test_positions_only_loss_equals_the_full_logits_loss(tmp_path, padding_free):
    # The CPU trainer projects both models onto the vocabulary at the trained positions only; on the same batch its
    # loss (and each term) must equal the full-logits loss, which shifts labels itself: the shift is checked here.
    args = _args(tmp_path)
    args.padding_free = padding_free
    args.max_length = None if padding_free else args.max_length  # TRL: the examples are already cut
    args.per_device_train_batch_size = 4
    args.prediction_loss_only = True  # positions_only requires it (its logits do not line up with the labels)
    trainers = [DistillationTrainer(model=_tiny_llama(seed=0), teacher_model=_tiny_llama(seed=1), args=args,
                                    train_dataset=_dataset(), processing_class=_tokenizer(), peft_config=_lora(),
                                    alpha=0.3, temperature=2.0, positions_only=positions_only)
                 for positions_only in (False, True)]
    batch = next(iter(trainers[0].get_train_dataloader()))
    if padding_free:
        assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch
    losses = []
    for trainer in trainers:
        trainer.model.eval()
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, dict(batch)).item())
        trainer.model.train()
    full, positions = losses
    assert positions == pytest.approx(full, abs=1e-5)
    # an oracle with its own shift (logits[:, :-1] against labels[:, 1:]): the trainer's targets are the next tokens
    trainer = trainers[1]
    with torch.no_grad():
        model_inputs = {k: v for k, v in batch.items() if k != "labels"}
        oracle, _ = hybrid_distillation_loss(trainer.model(**model_inputs).logits,
                                             trainer.teacher_model(**model_inputs).logits, batch["labels"],
                                             alpha=0.3, temperature=2.0)
    assert positions == pytest.approx(oracle.item(), rel=1e-5)  # the LM head on fewer rows: fp32 rounding
    logged = [{k: v[-1] for k, v in t._metrics["eval"].items()} for t in trainers]
    assert logged[1]["kl"] == pytest.approx(logged[0]["kl"], abs=1e-6)
    assert logged[1]["ce"] == pytest.approx(logged[0]["ce"], abs=1e-5)
    assert logged[0]["kl"] > 0  # different teacher: the KL term is really there


def test_positions_only_refuses_an_evaluation_that_wants_logits(tmp_path):
    with pytest.raises(ValueError, match="prediction_loss_only=True"):
        DistillationTrainer(model=_tiny_llama(seed=0), teacher_model=_tiny_llama(seed=1), args=_args(tmp_path),
                            train_dataset=_dataset(), processing_class=_tokenizer(), peft_config=_lora(),
                            positions_only=True)
