"""The numbers a recipe needs before any GPU is touched: training memory plan and GGUF file sizes.

Usage: ``python -m lib plan mistral22b``  or  ``recipe_plan(load_recipe("mistral22b"))``
"""
from __future__ import annotations

from lib.architectures import load_architecture, parameter_count
from lib.plan.gguf_size import estimate_gguf_bytes
from lib.plan.memory import plan_training_memory
from lib.recipe import Recipe


def memory_plan(recipe: Recipe, max_length: int | None = None):
    """Peak training memory of `recipe` on its target card (weights, LoRA, optimizer, activations, logits), at
    `max_length` tokens per example (default: the recipe's; 02_masking may choose another under `fit`)."""
    teacher = load_architecture(recipe.teacher_architecture) if recipe.teacher_architecture else None
    return plan_training_memory(
        load_architecture(recipe.architecture), load_in_4bit=recipe.load_in_4bit, lora_r=recipe.lora_r,
        lora_target_modules=list(recipe.lora_target_modules), optim=recipe.optim,
        max_length=max_length or recipe.max_length,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        # Unsloth's offloaded checkpointing is what the GPU recipes run with (lib.train.backends)
        gradient_checkpointing="unsloth" if recipe.gradient_checkpointing else False,
        budget_gib=recipe.vram_budget_gib, teacher=teacher, teacher_load_in_4bit=recipe.teacher_load_in_4bit)


def gguf_estimates(recipe: Recipe) -> dict[str, int]:
    """Estimated GGUF bytes for every file the export stage writes."""
    arch = load_architecture(recipe.architecture)
    return {quant: estimate_gguf_bytes(arch, quant) for quant in recipe.gguf_files()}


def kv_cache_bytes(architecture: str, n_ctx: int) -> int:
    """llama.cpp's default f16 K and V cache for `n_ctx` tokens: 2 tensors x layers x ctx x kv_dim x 2 bytes."""
    arch = load_architecture(architecture)
    return 2 * arch.num_hidden_layers * n_ctx * arch.num_key_value_heads * arch.head_dim * 2


def recipe_plan(recipe: Recipe) -> dict:
    """One JSON-ready object: parameter count, memory plan and GGUF size estimates (bytes)."""
    arch = load_architecture(recipe.architecture)
    return {"recipe": recipe.name, "architecture": recipe.architecture, "hardware": recipe.hardware,
            "parameters": parameter_count(arch), "memory_plan": memory_plan(recipe).as_dict(),
            "gguf_bytes": gguf_estimates(recipe)}
