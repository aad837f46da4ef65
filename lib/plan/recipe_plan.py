"""The numbers a recipe needs before any GPU is touched: training memory plan on the backend that will run it, 04's
RAM and disk, and GGUF file sizes.

Usage: ``python -m lib plan mistral22b``  or  ``recipe_plan(load_recipe("mistral22b"), *planned_backend(recipe))``

The backend is passed in (`lib.train.backends.planned_backend` chooses it; lib/plan imports no stage): anything with
the attributes of `PlannedBackend` will do. Left out, it is Unsloth on the recipe's GPU (`gpu_unsloth_backend`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lib.architectures import Architecture, load_architecture, parameter_count
from lib.plan.export_plan import export_plan, gguf_estimates
from lib.plan.memory import DTYPE_BYTES, UNSLOTH, MemoryPlan, plan_training_memory
from lib.recipe import Recipe

__all__ = ["PlannedBackend", "backend_facts", "gguf_estimates", "gpu_unsloth_backend", "kv_cache_bytes",
           "memory_plan", "recipe_plan"]


class PlannedBackend(Protocol):
    """What the plan reads of a training backend (`lib.train.backends.Backend` has these attributes)."""

    name: str  # "unsloth" or "transformers+peft"
    on_gpu: bool
    load_in_4bit: bool
    teacher_load_in_4bit: bool
    optim: str
    gradient_checkpointing: bool | str
    stand_ins: tuple[str, ...]


@dataclass(frozen=True)
class _GpuWithUnsloth:
    """The default backend when a caller names none: the recipe on its GPU with Unsloth installed, what
    `select_backend(recipe, has_cuda=True, has_unsloth=True)` gives (kept for callers that predate `backend=`)."""

    name: str
    on_gpu: bool
    load_in_4bit: bool
    teacher_load_in_4bit: bool
    optim: str
    gradient_checkpointing: bool | str
    stand_ins: tuple[str, ...] = ()


def gpu_unsloth_backend(recipe: Recipe) -> PlannedBackend:
    """The backend a GPU with the [gpu] extra runs `recipe` on: Unsloth, the recipe's 4-bit and optimizer, and
    Unsloth's offloaded checkpointing when the recipe checkpoints."""
    return _GpuWithUnsloth(UNSLOTH, True, recipe.load_in_4bit,
                           bool(recipe.teacher_model_name_or_path and recipe.teacher_load_in_4bit), recipe.optim,
                           "unsloth" if recipe.gradient_checkpointing else False)


def backend_facts(backend: PlannedBackend, how_decided: str = "") -> dict:
    """The backend as plain JSON, with how it was chosen (for `python -m lib plan` and 03's plan table)."""
    facts = {"name": backend.name, "device": "cuda" if backend.on_gpu else "cpu",
             "load_in_4bit": backend.load_in_4bit, "teacher_load_in_4bit": backend.teacher_load_in_4bit,
             "optim": backend.optim, "gradient_checkpointing": backend.gradient_checkpointing,
             "stand_ins": list(backend.stand_ins)}
    return facts | ({"how_decided": how_decided} if how_decided else {})


def memory_plan(recipe: Recipe, max_length: int | None = None, backend: PlannedBackend | None = None,
                architecture: Architecture | None = None,
                teacher_architecture: Architecture | None = None,
                batch: tuple[int, int] | None = None) -> MemoryPlan:
    """Peak training memory of `recipe` on `backend` (weights, LoRA, optimizer, activations, logits), at
    `max_length` tokens per example (default: the recipe's; 02_masking may choose another under `fit`).

    backend: what `lib.train.backends.planned_backend(recipe)` returns; None means Unsloth on the recipe's GPU
    (`gpu_unsloth_backend`). architecture / teacher_architecture: other shapes than the recipe's (e.g. a --tiny
    run's shrunk model, from `lib.architectures.architecture_from_config`); the recipe's otherwise.
    batch: (tokens, trained tokens) of one real micro-batch — e.g. the largest a run trained, to set the plan next
    to its measured peak; None plans the worst case, per_device_train_batch_size x max_length tokens, all trained.
    """
    backend = backend or gpu_unsloth_backend(recipe)
    per_device, trained = recipe.per_device_train_batch_size, None
    if batch is not None:  # one row of batch[0] tokens (a padding-free micro-batch is one row)
        max_length, per_device, trained = batch[0], 1, batch[1]
    teacher = teacher_architecture or (load_architecture(recipe.teacher_architecture)
                                       if recipe.teacher_architecture else None)
    return plan_training_memory(
        architecture or load_architecture(recipe.architecture), load_in_4bit=backend.load_in_4bit,
        lora_r=recipe.lora_r, lora_target_modules=list(recipe.lora_target_modules), optim=backend.optim,
        max_length=max_length or recipe.max_length, per_device_train_batch_size=per_device,
        trained_tokens=trained, lora_dropout=recipe.lora_dropout,
        gradient_checkpointing=backend.gradient_checkpointing, budget_gib=recipe.vram_budget_gib, teacher=teacher,
        teacher_load_in_4bit=backend.teacher_load_in_4bit, backend=backend.name, on_gpu=backend.on_gpu,
        dtype_bytes=DTYPE_BYTES[recipe.torch_dtype])


def kv_cache_bytes(arch: Architecture, n_ctx: int) -> int:
    """llama.cpp's default f16 K and V cache for `n_ctx` tokens: 2 tensors x layers x ctx x kv_dim x 2 bytes."""
    return 2 * arch.num_hidden_layers * n_ctx * arch.num_key_value_heads * arch.head_dim * 2


def recipe_plan(recipe: Recipe, backend: PlannedBackend | None = None, how_decided: str = "") -> dict:
    """One JSON-ready object: parameter count, the backend planned for, its memory plan, 04's RAM and disk needs,
    and GGUF size estimates (bytes). backend None: Unsloth on the recipe's GPU (`gpu_unsloth_backend`)."""
    arch = load_architecture(recipe.architecture)
    backend = backend or gpu_unsloth_backend(recipe)
    return {"recipe": recipe.name, "architecture": recipe.architecture, "hardware": recipe.hardware,
            "parameters": parameter_count(arch), "backend": backend_facts(backend, how_decided),
            "memory_plan": memory_plan(recipe, backend=backend).as_dict(), "export_plan": export_plan(recipe),
            "gguf_bytes": gguf_estimates(recipe)}
