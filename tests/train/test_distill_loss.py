"""Tests for lib.train.distill_loss, against independent torch.nn.functional computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lib.train.distill_loss import hybrid_distillation_loss

B, L, V = 1, 4, 5


def _logits(seed: int, shape: tuple[int, ...] = (B, L, V)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 2.0


def _reference(student, teacher, labels, alpha, temperature):
    """Independent computation: shift, keep labels != -100, F.kl_div (batchmean) and F.cross_entropy."""
    s = student[:, :-1].reshape(-1, student.size(-1))
    t = teacher[:, :-1].reshape(-1, teacher.size(-1))
    y = labels[:, 1:].reshape(-1)
    keep = y != -100
    kl = F.kl_div(
        F.log_softmax(s[keep] / temperature, dim=-1),
        F.softmax(t[keep] / temperature, dim=-1),
        reduction="batchmean",
    )
    ce = F.cross_entropy(s, y, ignore_index=-100)
    return alpha * temperature**2 * kl + (1 - alpha) * ce, kl, ce


def test_single_token_by_hand():
    # One trained token (labels[0, 3] predicted from position 2), logits small enough to do on paper.
    student = torch.zeros(1, 4, 3)
    teacher = torch.zeros(1, 4, 3)
    teacher[0, 2] = torch.tensor([math.log(2.0), 0.0, 0.0])  # teacher probs at T=1: [1/2, 1/4, 1/4]
    labels = torch.tensor([[-100, -100, -100, 0]])
    loss, parts = hybrid_distillation_loss(student, teacher, labels, alpha=0.5, temperature=1.0)
    # KL(p || uniform) = sum p log(p / (1/3)) = log 3 + sum p log p
    kl = math.log(3) + 0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)
    ce = math.log(3)  # uniform student
    assert parts["n_tokens"] == 1.0
    assert parts["kl"] == pytest.approx(kl, abs=1e-6)
    assert parts["ce"] == pytest.approx(ce, abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * kl + 0.5 * ce, abs=1e-6)
    assert parts["loss"] == pytest.approx(loss.item())


@pytest.mark.parametrize("alpha,temperature", [(0.5, 2.0), (0.3, 1.0), (0.9, 4.0)])
def test_matches_reference(alpha, temperature):
    student, teacher = _logits(0), _logits(1)
    labels = torch.tensor([[-100, -100, 3, 1]])  # prompt of 2 tokens, response of 2
    loss, parts = hybrid_distillation_loss(student, teacher, labels, alpha=alpha, temperature=temperature)
    ref, kl, ce = _reference(student, teacher, labels, alpha, temperature)
    torch.testing.assert_close(loss, ref)
    assert parts["kl"] == pytest.approx(kl.item(), rel=1e-5)
    assert parts["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert parts["n_tokens"] == 2.0


def test_batch_of_two_averages_over_all_trained_tokens():
    student, teacher = _logits(2, (2, 5, 7)), _logits(3, (2, 5, 7))
    labels = torch.tensor([[-100, 4, 5, 6, -100], [-100, -100, -100, 2, 0]])  # 3 + 2 trained tokens
    loss, parts = hybrid_distillation_loss(student, teacher, labels, alpha=0.4, temperature=1.5)
    ref, _, _ = _reference(student, teacher, labels, 0.4, 1.5)
    torch.testing.assert_close(loss, ref)
    assert parts["n_tokens"] == 5.0


def test_alpha_zero_is_plain_shifted_ce():
    student, teacher = _logits(4), _logits(5)
    labels = torch.tensor([[-100, 2, 3, 4]])
    loss, _ = hybrid_distillation_loss(student, teacher, labels, alpha=0.0, temperature=3.0)
    ce = F.cross_entropy(student[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ce)


def test_alpha_one_teacher_equals_student_is_zero():
    student = _logits(6)
    labels = torch.tensor([[-100, 2, 3, 4]])
    loss, parts = hybrid_distillation_loss(student, student.clone(), labels, alpha=1.0, temperature=2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert parts["kl"] == pytest.approx(0.0, abs=1e-6)


def test_masked_positions_do_not_change_loss():
    student, teacher = _logits(7), _logits(8)
    labels = torch.tensor([[-100, -100, 3, 1]])  # logits at positions 1, 2 are trained; 0 and 3 are not
    loss, _ = hybrid_distillation_loss(student, teacher, labels)
    student2, teacher2 = student.clone(), teacher.clone()
    for pos in (0, 3):  # position 0 predicts a -100 label; position 3 predicts nothing (last)
        student2[:, pos] += torch.randn(V) * 10
        teacher2[:, pos] += torch.randn(V) * 10
    loss2, _ = hybrid_distillation_loss(student2, teacher2, labels)
    torch.testing.assert_close(loss, loss2)


def test_temperature_squared_scaling():
    student, teacher = _logits(9), _logits(10)
    labels = torch.tensor([[-100, 2, 3, 4]])
    for temperature in (1.0, 2.0, 3.0):
        loss, parts = hybrid_distillation_loss(student, teacher, labels, alpha=1.0, temperature=temperature)
        _, kl, _ = _reference(student, teacher, labels, 1.0, temperature)
        assert loss.item() == pytest.approx(temperature**2 * kl.item(), rel=1e-5)
        assert parts["kl"] == pytest.approx(kl.item(), rel=1e-5)  # logged KL is unscaled


def test_gradients_reach_student_only():
    student = _logits(11).requires_grad_(True)
    teacher = _logits(12).requires_grad_(True)
    labels = torch.tensor([[-100, -100, 3, 1]])
    loss, _ = hybrid_distillation_loss(student, teacher, labels)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
    # Untrained positions get no gradient.
    assert torch.all(student.grad[:, 0] == 0) and torch.all(student.grad[:, 3] == 0)


def test_half_precision_inputs_are_computed_in_float32():
    student, teacher = _logits(13).to(torch.bfloat16), _logits(14).to(torch.bfloat16)
    labels = torch.tensor([[-100, 2, 3, 4]])
    loss, _ = hybrid_distillation_loss(student, teacher, labels)
    ref, _, _ = _reference(student.float(), teacher.float(), labels, 0.5, 2.0)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref)


def test_teacher_zero_probability_tokens_are_finite():
    student, teacher = _logits(15), _logits(16)
    teacher[..., 0] = float("-inf")  # teacher rules token 0 out entirely
    labels = torch.tensor([[-100, 2, 3, 4]])
    loss, _ = hybrid_distillation_loss(student, teacher, labels)
    assert torch.isfinite(loss)


def test_vocab_mismatch_names_both_sizes():
    labels = torch.tensor([[-100, 2, 3, 4]])
    with pytest.raises(ValueError, match=r"vocab sizes differ.*student has 5.*teacher has 7"):
        hybrid_distillation_loss(_logits(0), _logits(1, (B, L, 7)), labels)


@pytest.mark.parametrize(
    "student_shape,teacher_shape,labels_shape",
    [
        ((B, L, V), (B, L + 1, V), (B, L)),  # different sequence lengths
        ((B, L, V), (2, L, V), (B, L)),  # different batch sizes
        ((B, L, V), (B, L, V), (B, L - 1)),  # labels do not match logits
        ((L, V), (L, V), (L,)),  # missing batch dimension
    ],
)
def test_shape_mismatch(student_shape, teacher_shape, labels_shape):
    labels = torch.full(labels_shape, 1)
    with pytest.raises(ValueError):
        hybrid_distillation_loss(torch.zeros(student_shape), torch.zeros(teacher_shape), labels)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="alpha"):
        hybrid_distillation_loss(_logits(0), _logits(1), torch.tensor([[-100, 2, 3, 4]]), alpha=alpha)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_temperature_not_positive(temperature):
    with pytest.raises(ValueError, match="temperature"):
        hybrid_distillation_loss(_logits(0), _logits(1), torch.tensor([[-100, 2, 3, 4]]), temperature=temperature)


def test_no_trained_tokens_is_a_masking_bug():
    # Only labels[:, 0] is set, and no logit predicts position 0 after the causal shift.
    labels = torch.tensor([[5, -100, -100, -100]])
    with pytest.raises(ValueError, match="masking bug"):
        hybrid_distillation_loss(_logits(0), _logits(1), labels)
