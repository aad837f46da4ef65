"""Peak memory of one GRPO step, before anything loads: 03's training plan at GRPO's batch, plus generation.

Usage: ``plan = grpo_memory_plan(recipe, settings, longest_prompt, backend, architecture)``

One step generates `prompts_per_step x num_generations` completions at once (transformers' generate keeps a KV
cache per sequence, in the compute dtype; vLLM reserves its own pool, `vllm_gpu_memory_utilization`), then trains on
them `num_generations` rows of prompt + completion per forward and backward (a shuffled slice of the step's
completions), accumulated over the step's prompts (`lib.grpo.train.grpo_args`): 03's plan (weights, LoRA,
optimizer, activations, logits) at that batch and length, without LoRA dropout (GRPO trains with dropout off, TRL's
`disable_dropout`). With beta > 0 the reference is TRL's frozen copy of 03's adapter beside the trained one (PEFT
adapter "ref", `lib.grpo.train`): a second set of LoRA weights, not a second model; its forward runs without
gradients before the training forward and frees what it made.
"""
from __future__ import annotations

import dataclasses

from lib.architectures import Architecture
from lib.grpo.settings import GrpoSettings
from lib.plan.memory import DTYPE_BYTES, GIB
from lib.plan.recipe_plan import memory_plan
from lib.recipe import Recipe, recipe_source
from lib.train.backends import compute_dtype


VLLM_GPU_MEMORY_UTILIZATION = 0.3  # TRL's GRPOConfig default (vllm_gpu_memory_utilization), which 06 keeps


class GrpoOverBudget(ValueError):
    """One GRPO step is planned over the recipe's memory budget (03 refuses its own the same way)."""


def check_budget(recipe: Recipe, plan: dict) -> None:
    """Refuse a step planned over `vram_budget_gib`, naming its largest parts and what shrinks them, unless the
    recipe says `allow_over_budget: true`."""
    if plan["fits"] or recipe.allow_over_budget:
        return
    largest = sorted(plan["components_gib"].items(), key=lambda item: -item[1])[:3]
    raise GrpoOverBudget(
        f"{recipe_source(recipe)}: grpo: one step is planned at {plan['total_gib']:.1f} GiB, over vram_budget_gib "
        f"{plan['budget_gib']} (largest: {', '.join(f'{k} {v:.2f}' for k, v in largest)}): lower "
        "grpo.num_generations (the rows trained at once), grpo.prompts_per_step (the completions generated at once) "
        "or grpo.max_completion_length, or "
        "set allow_over_budget: true to try anyway")


def prompt_tokens(tokenizer, prompts: list[dict], template_kwargs: dict | None = None) -> list[int]:
    """Tokens of each prompt as the trainer renders it (the chat template with its generation prompt)."""
    counts = []
    for prompt in prompts:
        if isinstance(prompt["prompt"], str):  # a base model's plain prompt
            counts.append(len(tokenizer(prompt["prompt"])["input_ids"]))
            continue
        ids = tokenizer.apply_chat_template(prompt["prompt"], add_generation_prompt=True, tokenize=True,
                                            **(template_kwargs or {}))
        counts.append(len(ids["input_ids"] if hasattr(ids, "keys") else ids))  # a BatchEncoding, or the ids
    return counts


def generation_cache_bytes(arch: Architecture, sequences: int, tokens: int, dtype_bytes: int) -> int:
    """transformers' dynamic KV cache for `sequences` of `tokens`: K and V per layer, kv_dim wide, in the dtype."""
    return 2 * arch.num_hidden_layers * sequences * tokens * arch.num_key_value_heads * arch.head_dim * dtype_bytes


def grpo_memory_plan(recipe: Recipe, settings: GrpoSettings, longest_prompt: int, backend,
                     architecture: Architecture) -> dict:
    """{"total_gib", "budget_gib", "fits", "components_gib", "assumptions"} for one step of `settings`."""
    length = longest_prompt + settings.max_completion_length
    batch = settings.completions_per_step
    trained = dataclasses.replace(recipe, per_device_train_batch_size=settings.num_generations, lora_dropout=0.0)
    step = memory_plan(trained, max_length=length, backend=backend, architecture=architecture).as_dict()
    dtype = compute_dtype(recipe, backend)  # what the policy is loaded and generates in
    components = dict(step["components"])
    if settings.use_vllm:  # colocated vLLM reserves a share of the card for its weights copy and KV cache
        components["vLLM pool (colocated)"] = int(VLLM_GPU_MEMORY_UTILIZATION * recipe.vram_budget_gib * GIB)
    else:
        components["generation KV cache"] = generation_cache_bytes(architecture, batch, length, DTYPE_BYTES[dtype])
    if settings.beta > 0 and settings.start_from == "sft":
        components["reference adapter"] = components.get("lora_weights", 0)
    total = sum(components.values())
    budget = recipe.vram_budget_gib * GIB
    return {"total_gib": round(total / GIB, 3), "budget_gib": recipe.vram_budget_gib, "fits": total <= budget,
            "components_gib": {k: round(v / GIB, 3) for k, v in components.items()},
            "assumptions": {"completions_per_step": batch, "rows_per_pass": settings.num_generations,
                            "row_tokens": length, "backend": backend.name,
                            "reference": ("03's adapter as PEFT adapter 'ref'" if settings.beta > 0
                                          else "none (beta 0)"),
                            "generation": f"vLLM, {VLLM_GPU_MEMORY_UTILIZATION:.0%} of the card" if settings.use_vllm
                            else "transformers generate"}}


def planned_step(recipe: Recipe, settings: GrpoSettings, prompts: list[dict], tokenizer, backend,
                 architecture: Architecture) -> dict:
    """One step's plan at the longest of `prompts`, refused over the budget (`check_budget`): what a dry-run shows
    and what a real run checks before loading anything."""
    longest = max(prompt_tokens(tokenizer, prompts, recipe.chat_template_kwargs))
    plan = grpo_memory_plan(recipe, settings, longest, backend, architecture)
    check_budget(recipe, plan)
    return plan | {"longest_prompt_tokens": longest}
