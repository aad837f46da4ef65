"""budget_verdict: a plan over vram_budget_gib gets one message naming the params file, the total against the
budget, the three largest parts and, for each, the recipe key that shrinks it."""
from lib.plan.budget import budget_verdict, term_advice, top_terms
from lib.plan.recipe_plan import gpu_unsloth_backend, memory_plan
from lib.paths import PARAMS_DIR
from lib.recipe import load_recipe, with_overrides


def _verdict(name: str, **overrides) -> tuple[str | None, object]:
    recipe = with_overrides(load_recipe(name), **overrides)
    plan = memory_plan(recipe, backend=gpu_unsloth_backend(recipe))
    return budget_verdict(plan, recipe), plan


def test_a_plan_that_fits_has_no_verdict():
    assert _verdict("llama32_3b")[0] is None


def test_an_over_budget_plan_names_the_file_the_total_the_three_largest_parts_and_the_fix():
    message, plan = _verdict("llama32_3b", vram_budget_gib=2)
    assert message.startswith(f"{PARAMS_DIR / 'llama32_3b.yaml'}: the memory plan needs")
    assert ("needs 4.87 GiB (unsloth on cuda, 8192 tokens per micro-batch) but vram_budget_gib is 2 "
            "(1x 8 GB GPU)") in message
    # llama32_3b at 4096 x 2 on Unsloth: NF4 body 1.35, activations 1.12, the CUDA context 1.00 GiB
    assert [name for name, _ in top_terms(plan)] == ["base_weights", "activations", "cuda_context"]
    assert "base_weights 1.35 GiB: already 4-bit" in message
    assert ("activations 1.12 GiB: lower max_length (4096) or per_device_train_batch_size (2; raise "
            "gradient_accumulation_steps to keep the batch)") in message
    assert "cuda_context 1.00 GiB: a fixed cost" in message
    assert message.endswith("Or set allow_over_budget: true to train anyway (python -m lib plan shows every part).")


def test_the_advice_follows_the_parts_that_dominate():
    lora_heavy, _ = _verdict("mistral22b", vram_budget_gib=8)  # r=64 on all 7 modules: 1.42 GiB of LoRA weights
    assert "lora_weights 1.42 GiB: lower lora_r (64) or fewer lora_target_modules (7 now)" in lora_heavy
    kd, plan = _verdict("llama32_1b_kd", vram_budget_gib=4)  # no checkpointing, 16 x 128 tokens, full logits
    assert [name for name, _ in top_terms(plan)] == ["logits", "teacher_weights", "activations"]
    assert "lower max_length (128) or per_device_train_batch_size (16;" in kd
    assert "turn on gradient_checkpointing: true" in kd and "a smaller teacher (already 4-bit)" in kd
    recipe = load_recipe("smollm2_135m")
    plan = memory_plan(recipe)
    assert term_advice("base_weights", recipe, plan).startswith("load_in_4bit: true")
    assert "optim: adamw_8bit" in term_advice("optimizer_state", recipe, plan)
    assert "optim: adamw_8bit" not in term_advice("optimizer_state", load_recipe("llama32_3b"),
                                                  memory_plan(load_recipe("llama32_3b")))
