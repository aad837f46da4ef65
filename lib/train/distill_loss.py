"""Hybrid logit-level distillation loss: temperature-scaled KL to a teacher plus CE to the labels.

Usage: ``loss, parts = hybrid_distillation_loss(student.logits, teacher.logits, batch["labels"], alpha=0.5)``

Both terms are taken over the *trained* (response) tokens only: the positions whose shifted label is not ``-100``,
exactly the tokens a causal-LM cross-entropy with ``ignore_index=-100`` would train on. Prompt and padding positions
never contribute, so the teacher is only imitated where the student is also supervised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def check_distill_hparams(alpha: float, temperature: float) -> None:
    """Raise ValueError unless ``0 <= alpha <= 1`` and ``temperature > 0`` (shared with the trainer to fail early)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (weight of the KL term), got {alpha}.")
    if not temperature > 0.0:  # also rejects NaN
        raise ValueError(f"temperature must be > 0, got {temperature}.")


def check_vocab_sizes(student_vocab: int, teacher_vocab: int) -> None:
    """Raise ValueError when student and teacher score different vocabularies (logit KD needs the same token ids)."""
    if student_vocab != teacher_vocab:
        raise ValueError(
            f"Student and teacher vocab sizes differ: student has {student_vocab} logits per token, teacher has "
            f"{teacher_vocab}. Logit distillation compares distributions token id by token id, so both models must "
            "use the same tokenizer. If they do and only the embedding matrices are padded differently, slice both "
            "logits to len(tokenizer) first; otherwise use sequence-level distillation (SFT on teacher outputs)."
        )


def _check_shapes(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> None:
    if student_logits.dim() != 3 or teacher_logits.dim() != 3:
        raise ValueError(
            "Logits must be (batch, seq_len, vocab); got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}."
        )
    check_vocab_sizes(student_logits.size(-1), teacher_logits.size(-1))
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} cover "
            "different (batch, seq_len); run both models on the same input_ids."
        )
    if labels.shape != student_logits.shape[:2]:
        raise ValueError(
            f"labels {tuple(labels.shape)} must be (batch, seq_len) = {tuple(student_logits.shape[:2])}, "
            "matching the logits."
        )


def shifted_response_mask(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(targets, mask)`` for causal-LM shifting: logits[:, t] predict labels[:, t + 1]; mask = trained tokens."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


def _kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row KL(softmax(teacher/T) || softmax(student/T)) for (n, vocab) float32 logits."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    p_teacher = log_p_teacher.exp()
    # Tokens the teacher gives zero mass (e.g. -inf logits) contribute 0, not 0 * (-inf) = NaN.
    terms = torch.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), torch.zeros_like(p_teacher))
    return terms.sum(dim=-1)


def hybrid_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Distillation loss ``alpha * T**2 * KL(teacher || student) + (1 - alpha) * CE(student, labels)``.

    Args:
        student_logits: (batch, seq_len, vocab) student logits; gradients flow into these.
        teacher_logits: (batch, seq_len, vocab) teacher logits on the same inputs; detached here, never trained.
        labels: (batch, seq_len) token ids with ``-100`` on positions that are not trained (prompt, padding).
        alpha: weight of the KL term in [0, 1]; 0 is plain SFT, 1 is pure distillation.
        temperature: softmax temperature T > 0 for the KL term. The KL is multiplied by T**2 so its gradient scale
            stays comparable to the CE's as T changes (Hinton et al., 2015). The CE always uses T = 1.

    Labels are shifted like causal-LM CE (``logits[:, :-1]`` predict ``labels[:, 1:]``). KL and CE are both averaged
    over the same set of trained tokens, i.e. the N positions whose shifted label is not ``-100`` in this batch (a
    per-token mean over the batch, not a mean of per-sequence means). Everything is computed in float32.

    Returns:
        ``(loss, parts)``: the scalar loss, and float parts for logging: ``kl`` (unscaled KL at temperature T),
        ``ce``, ``loss`` and ``n_tokens`` (N).

    Raises:
        ValueError: vocab sizes differ, shapes mismatch, alpha not in [0, 1], temperature <= 0, or no trained tokens.
    """
    check_distill_hparams(alpha, temperature)
    _check_shapes(student_logits, teacher_logits, labels)

    device = student_logits.device
    targets, mask = shifted_response_mask(labels.to(device))
    # Select the trained positions before upcasting, so float32 copies cover N x vocab rather than batch x seq x vocab.
    return distillation_loss_on_rows(student_logits[:, :-1][mask], teacher_logits.detach().to(device)[:, :-1][mask],
                                     targets[mask], alpha=alpha, temperature=temperature)


def distillation_loss_on_rows(
    student_rows: torch.Tensor,
    teacher_rows: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """`hybrid_distillation_loss` on logits already taken at the trained positions: (N, vocab) student and teacher
    rows, each predicting its (N,) target token (none of them -100). The CPU trainer gets these rows straight from
    the models (``logits_to_keep``); the full-logits path selects them. Same returns."""
    check_distill_hparams(alpha, temperature)
    if student_rows.dim() == 2 and teacher_rows.dim() == 2:
        check_vocab_sizes(student_rows.size(-1), teacher_rows.size(-1))
    if student_rows.dim() != 2 or student_rows.shape != teacher_rows.shape or targets.shape != student_rows.shape[:1]:
        raise ValueError(f"need (N, vocab) student and teacher rows and (N,) targets; got {tuple(student_rows.shape)}, "
                         f"{tuple(teacher_rows.shape)} and {tuple(targets.shape)}")
    if len(targets) == 0:
        raise ValueError("The batch has no trained tokens: every shifted label is -100. This is probably a masking "
                         "bug (the response was masked along with the prompt, or truncation cut the response off).")
    if (targets == IGNORE_INDEX).any():  # CE would skip them while the KL averaged over them
        raise ValueError(f"targets hold {IGNORE_INDEX} (an untrained position): select the trained rows first")
    student = student_rows.float()
    # A teacher placed on another device (e.g. a device_map'd teacher) is scored on the student's device.
    teacher = teacher_rows.detach().to(student.device).float()
    kl = _kl_teacher_student(student, teacher, temperature).mean()
    ce = F.cross_entropy(student, targets.to(student.device))  # mean over the same N tokens
    loss = alpha * temperature**2 * kl + (1.0 - alpha) * ce
    parts = {"kl": kl.item(), "ce": ce.item(), "loss": loss.item(), "n_tokens": float(len(targets))}
    return loss, parts
