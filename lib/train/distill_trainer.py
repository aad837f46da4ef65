"""`DistillationTrainer`: TRL's SFTTrainer with a frozen teacher and the hybrid KL + CE loss of `lib.train.distill_loss`.

Usage: ``DistillationTrainer(model=student, teacher_model=teacher, args=SFTConfig(...), train_dataset=ds,
processing_class=tok, peft_config=lora, alpha=0.5, temperature=2.0).train()``

It subclasses ``trl.SFTTrainer`` so dataset preparation, collation, PEFT wrapping and logging are SFT's: a dataset
with pre-tokenised ``input_ids`` and ``labels`` columns (``-100`` on the prompt) is used as is (TRL 1.16 keeps an
existing ``labels`` column and only truncates to ``max_length``). Only ``compute_loss`` changes: SFTTrainer's own
loss runs a fused LM head that never materialises the logits, but logit distillation needs the full student and
teacher distributions, so the student runs its ordinary forward here. With ``positions_only=True`` (the CPU
trainer, `Backend.trained_positions_loss`) both models run their LM head at the trained positions only
(transformers' ``logits_to_keep`` with the positions as a tensor): the same loss, without the logits of the prompt,
which on a small model are a fifth of a token's FLOPs — twice (student and teacher).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lib.train.distill_loss import check_distill_hparams, check_vocab_sizes, distillation_loss_on_rows
from lib.train.trained_positions_loss import largest_batch, next_token_targets


def output_vocab_size(model: nn.Module) -> int:
    """Number of logits per token the model emits (rows of its LM head, which can exceed len(tokenizer))."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Put the teacher in eval mode (no dropout) and stop gradients into its weights; returns it for chaining."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _check_not_sharing_weights(student: nn.Module, teacher: nn.Module) -> None:
    # Freezing a teacher that shares tensors with the student would silently freeze (part of) the student too, and
    # the Trainer's student.train() would flip the shared modules of the teacher into train mode.
    student_params = {id(p) for p in student.parameters()}
    if teacher is student or any(id(p) in student_params for p in teacher.parameters()):
        raise ValueError(
            "teacher_model shares weights with the student model. Load the teacher as a separate model instance."
        )


def _place_teacher(teacher: nn.Module, device: torch.device) -> nn.Module:
    # A teacher loaded with a device_map (possibly sharded, offloaded or quantised) has accelerate hooks that route
    # its inputs; moving it would break them, so it stays put and its logits are moved to the student's device.
    if getattr(teacher, "hf_device_map", None):
        return teacher
    return teacher.to(device)


def __getattr__(name: str):
    """`DistillationTrainer` is built on first use: it subclasses `trl.SFTTrainer`, whose import costs seconds (TRL
    pulls in transformers, PEFT and accelerate), and most runs never distil — so importing this module stays cheap."""
    if name == "DistillationTrainer":
        globals()[name] = trainer_class = _distillation_trainer_class()
        return trainer_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _distillation_trainer_class():
    from trl import SFTTrainer

    class DistillationTrainer(SFTTrainer):
        """SFTTrainer whose loss is ``alpha * T**2 * KL(teacher || student) + (1 - alpha) * CE`` on response tokens.

        Args (keyword-only, on top of SFTTrainer's):
            teacher_model: the teacher, same vocabulary as the student. It is frozen (eval mode, requires_grad False),
                placed on the student's device, run under ``torch.no_grad()`` and never handed to the optimizer.
            alpha: weight of the KL term in [0, 1].
            temperature: softmax temperature for the KL term, > 0.
            positions_only: project the hidden states of both models onto the vocabulary only where a token is
                trained (the loss is the same; the prompt's logits are never made).

        The loss is a per-micro-batch mean over its trained tokens, so ``loss_is_scaled_for_ga = False`` tells the
        Trainer to divide it by the gradient accumulation steps (``num_items_in_batch`` is not used). Logs ``kl``
        (unscaled, at temperature T) and ``ce`` next to the usual ``loss``.
        """

        _tag_names = ["trl", "sft", "distillation"]
        loss_is_scaled_for_ga = False

        def __init__(
            self,
            *args: Any,
            teacher_model: nn.Module,
            alpha: float = 0.5,
            temperature: float = 2.0,
            positions_only: bool = False,
            **kwargs: Any,
        ) -> None:
            check_distill_hparams(alpha, temperature)  # fail before SFTTrainer prepares the dataset
            super().__init__(*args, **kwargs)
            if positions_only and not self.args.prediction_loss_only:
                raise ValueError("positions_only=True returns logits at the trained positions only, which do not line "
                                 "up with the labels an evaluation with metrics needs: set prediction_loss_only=True "
                                 "in the trainer's arguments, or positions_only=False")
            # The model gets no num_items_in_batch (the loss is ours, a per-micro-batch mean): told so, every
            # transformers version divides the loss by the accumulation steps (5.17, the GPU pins, reads only this)
            self.model_accepts_loss_kwargs = False
            _check_not_sharing_weights(self.model, teacher_model)
            # Same check as the loss, but at construction rather than after the first forward pass.
            check_vocab_sizes(output_vocab_size(self.model), output_vocab_size(teacher_model))
            student_device = next(self.model.parameters()).device
            self.teacher_model = _place_teacher(freeze_teacher(teacher_model), student_device)
            self.alpha = alpha
            self.temperature = temperature
            self.positions_only = positions_only

        def _teacher_logits(self, model_inputs: dict[str, Any]) -> torch.Tensor:
            # Re-asserted every step: a callback or user code may have called .train() on the teacher since __init__.
            if self.teacher_model.training:
                self.teacher_model.eval()
            with torch.no_grad():  # once per micro-batch, never differentiated
                return self.teacher_model(**model_inputs).logits

        def _log_parts(self, parts: dict[str, float]) -> None:
            mode = "train" if self.model.training else "eval"
            # Average across processes so multi-GPU logs describe the whole batch, like SFTTrainer's own metrics.
            local = torch.tensor([parts["kl"], parts["ce"]], device=self.accelerator.device)
            kl, ce = self.accelerator.gather(local).view(-1, 2).mean(dim=0).tolist()
            self._metrics[mode]["kl"].append(kl)
            self._metrics[mode]["ce"].append(ce)

        def compute_loss(
            self,
            model: nn.Module,
            inputs: dict[str, torch.Tensor | Any],
            return_outputs: bool = False,
            num_items_in_batch: torch.Tensor | int | None = None,
        ) -> torch.Tensor | tuple[torch.Tensor, Any]:
            """Hybrid distillation loss for one micro-batch; ``num_items_in_batch`` is accepted for the API, unused."""
            if model.training:  # for 03's CPU memory check, as the SFT trainer does
                self.largest_batch = largest_batch(getattr(self, "largest_batch", None), inputs)
            # Without labels (and without fused_lm_head=True) the model runs its original forward and returns the full
            # logits; the loss is ours, so the model must not compute its own CE as well.
            model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
            model_inputs["use_cache"] = False
            # logits[:, t] predict the token at t + 1 (`next_token_targets`, which also honours a collator's
            # shift_labels): one rule for both paths
            targets = next_token_targets(inputs)
            if self.positions_only:  # keep the positions any row trains
                positions = (targets != -100).any(dim=0).nonzero().flatten()
                model_inputs["logits_to_keep"] = positions
                targets = targets[:, positions]
            outputs = model(**model_inputs)
            teacher_logits = self._teacher_logits(model_inputs)
            trained = targets != -100  # a padded batch shares the positions; rows not trained there drop out
            loss, parts = distillation_loss_on_rows(outputs.logits[trained], teacher_logits[trained], targets[trained],
                                                    alpha=self.alpha, temperature=self.temperature)
            self._log_parts(parts)
            return (loss, outputs) if return_outputs else loss

    return DistillationTrainer
