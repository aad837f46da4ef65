"""SFT's loss with the LM head run only where a token is trained: the CPU trainer's loss.

Usage: ``loss = trained_positions_loss(model, inputs, num_items_in_batch)`` (inside `compute_loss`)

The LM head is the largest matmul of a small model (SmolLM2-135M: 49,152 × 576, a fifth of a token's FLOPs) and
02 masks the prompt, so about half of the positions need no logits at all. TRL 1.16's loss skips them too, but
through a chunked function that recomputes the logits in the backward pass and computes the entropy and top-1
accuracy of every trained token for its logs: measured on 2 cores, 35 % of a SmolLM2 training step. Here the
model returns the logits of the trained positions only (transformers' ``logits_to_keep`` with the positions as a
tensor), once, and the loss is their cross-entropy, summed and divided by the trained tokens of the whole
optimizer step — TRL's normalisation, so accumulation and data-parallel ranks weigh every token alike.
On a GPU the project keeps TRL's chunked loss: there the logits' memory, not their FLOPs, is what matters.
"""
from __future__ import annotations

import torch


def next_token_targets(inputs: dict) -> torch.Tensor:
    """(batch, T) labels of the token each position predicts: ``shift_labels`` if the collator gave them, else
    ``labels`` moved left by one (the last position predicts nothing: -100)."""
    if inputs.get("shift_labels") is not None:
        return inputs["shift_labels"]
    labels = inputs["labels"]
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)


def largest_batch(current: tuple[int, int] | None, inputs: dict) -> tuple[int, int]:
    """The larger, by tokens, of `current` and this micro-batch's (tokens, projected positions): the positions the
    LM head runs at, every row's at any position a row trains (`trained_positions_loss`)."""
    tokens = inputs["input_ids"].numel()
    if current is not None and current[0] >= tokens:
        return current
    targets = next_token_targets(inputs)
    return tokens, int(targets.shape[0] * (targets != -100).any(dim=0).sum())


def trained_positions_loss(model, inputs: dict, num_items_in_batch=None, processes: int = 1) -> torch.Tensor:
    """Mean next-token cross-entropy over the trained tokens (targets != -100).

    `num_items_in_batch`: the trained tokens of the whole optimizer step (all micro-batches, all ranks), as the
    Trainer counts them; None: this batch's own count. `processes`: data-parallel ranks whose gradients DDP
    averages (their sum is wanted, so the loss is scaled back up, as TRL and transformers do)."""
    targets = next_token_targets(inputs)
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
    # positions any row trains; a padded batch shares them, rows without a target there are ignored below
    positions = (targets != -100).any(dim=0).nonzero().flatten()
    logits = model(**model_inputs, use_cache=False, logits_to_keep=positions).logits
    chosen = targets[:, positions]
    total = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), chosen.flatten(), ignore_index=-100,
                                              reduction="sum")
    count = (chosen != -100).sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count, device=total.device).clamp(min=1) * processes
