"""Whether a training memory plan fits the recipe's `vram_budget_gib`, and when it does not, what to change.

Usage: ``message = budget_verdict(memory_plan(recipe, max_length, backend), recipe)  # None when it fits``

Pure: the training stage raises with the message (or, under `allow_over_budget: true`, records it as a warning).
"""
from __future__ import annotations

from lib.plan.memory import GIB, MemoryPlan
from lib.recipe import Recipe, recipe_source

TOP_TERMS = 3
_KEEP_BATCH = "raise gradient_accumulation_steps to keep the batch"


def _length_or_batch(plan: MemoryPlan, recipe: Recipe) -> str:
    # the recipe's own values: a plan of one measured micro-batch holds it as one row of its tokens
    return (f"lower max_length ({recipe.max_length}) or per_device_train_batch_size "
            f"({recipe.per_device_train_batch_size}; {_KEEP_BATCH})")


def term_advice(term: str, recipe: Recipe, plan: MemoryPlan) -> str:
    """What shrinks one part of the plan, in the recipe's own keys (concrete for the parts a recipe controls)."""
    if term == "lora_dropout":
        return f"lora_dropout: 0 (no dropout copies), or {_length_or_batch(plan, recipe)}"
    if term in ("activations", "logits", "teacher_logits"):
        advice = _length_or_batch(plan, recipe)
        if term == "activations" and not plan.assumptions["gradient_checkpointing"]:
            advice += ", turn on gradient_checkpointing: true"
        return advice
    if term in ("base_weights", "embeddings_lm_head", "dequant_workspace"):
        if not plan.assumptions["load_in_4bit"]:
            return "load_in_4bit: true (NF4 base weights, about a quarter of 16-bit)"
        return "already 4-bit: a smaller model or a larger card"
    if term in ("lora_weights", "lora_grads"):
        return (f"lower lora_r ({recipe.lora_r}) or fewer lora_target_modules "
                f"({len(recipe.lora_target_modules)} now)")
    if term == "optimizer_state":
        eight_bit = "8bit" in plan.assumptions["optim"]
        return (f"lower lora_r ({recipe.lora_r}) or fewer lora_target_modules"
                + ("" if eight_bit else ", or optim: adamw_8bit (2 bytes of state per LoRA parameter, not 8)"))
    if term == "teacher_weights":
        return ("teacher_load_in_4bit: true" if not recipe.teacher_load_in_4bit
                else "a smaller teacher (already 4-bit)")
    return "a fixed cost: a larger card (vram_budget_gib)"


def top_terms(plan: MemoryPlan, n: int = TOP_TERMS) -> list[tuple[str, int]]:
    """The `n` largest parts of the plan, largest first."""
    return sorted(plan.components.items(), key=lambda kv: -kv[1])[:n]


def budget_verdict(plan: MemoryPlan, recipe: Recipe) -> str | None:
    """None when `plan` fits `recipe.vram_budget_gib`; else one message naming the params file, the total against
    the budget, the three largest parts with their GiB, and for each what to change in the recipe."""
    if plan.fits:
        return None
    where = f"{plan.assumptions['backend']} on {plan.assumptions['device']}"
    parts = "; ".join(f"{name} {size / GIB:.2f} GiB: {term_advice(name, recipe, plan)}"
                      for name, size in top_terms(plan))
    return (f"{recipe_source(recipe)}: the memory plan needs {plan.total_bytes / GIB:.2f} GiB ({where}, "
            f"{plan.assumptions['tokens_per_step']} tokens per micro-batch) but vram_budget_gib is "
            f"{recipe.vram_budget_gib:g} ({recipe.hardware}). Largest parts, and what shrinks them: {parts}. "
            "Or set allow_over_budget: true to train anyway (python -m lib plan shows every part).")
