"""03's memory-budget gate: a run whose real-size plan (on the backend a real run uses) exceeds vram_budget_gib is
refused before anything trains, in every mode, unless the recipe says allow_over_budget: true."""
import pytest

from lib.modes import config_for
from lib.plan.budget import top_terms
from lib.plan.recipe_plan import memory_plan
from lib.recipe import ParamsError, list_recipes, load_recipe, with_overrides
from lib.train.backends import planned_backend, select_backend
from lib.train.stage import STAGE, OverBudget, check_memory_budget, run_training


def _small_card(**overrides):
    return with_overrides(load_recipe("llama32_3b"), vram_budget_gib=2, **overrides)


def test_a_dry_run_over_budget_is_refused_before_anything_trains(tmp_path):
    recipe = _small_card()
    cfg = config_for(recipe, dry_run=True, run_dir=str(tmp_path))
    with pytest.raises(OverBudget) as refused:
        run_training(cfg, [], recipe.max_length)
    message = str(refused.value)
    assert isinstance(refused.value, ParamsError) and "params/llama32_3b.yaml: the memory plan needs" in message
    plan = memory_plan(recipe, recipe.max_length, planned_backend(recipe)[0])
    for name, _ in top_terms(plan):  # the three largest parts of the plan that was checked, each with its fix
        assert f" {name} " in message
    assert "lower max_length (4096) or per_device_train_batch_size (2; raise gradient_accumulation_steps" in message
    assert "allow_over_budget: true" in message and "vram_budget_gib is 2" in message
    assert not (tmp_path / STAGE / "manifest.json").exists()


def test_allow_over_budget_trains_on_with_the_warning_in_the_facts():
    facts = check_memory_budget(_small_card(allow_over_budget=True), 4096)
    assert facts["warning"].startswith("allow_over_budget: true, so training goes on: ")
    assert "vram_budget_gib is 2" in facts["warning"] and facts["memory_plan_gib"] > facts["memory_budget_gib"] == 2


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_fits_on_its_planned_backend(name):
    recipe = load_recipe(name)
    facts = check_memory_budget(recipe, recipe.max_length)
    assert "warning" not in facts and facts["memory_plan_gib"] <= recipe.vram_budget_gib
    assert facts["memory_plan_backend"].startswith(planned_backend(recipe)[0].name)


def test_a_gpu_without_unsloth_is_refused_with_the_way_to_fit():
    """mistral22b fits its 24 GB only with Unsloth: on a CUDA machine without it, 03 refuses and says so."""
    recipe = load_recipe("mistral22b")
    without = (select_backend(recipe, has_cuda=True, has_unsloth=False), "a CUDA machine without unsloth")
    with pytest.raises(OverBudget, match=r"transformers\+peft on cuda.* With Unsloth \(pip install -e '\.\[gpu\]' -c "
                                         r"constraints-gpu\.txt\) the plan is 1\d\.\d\d GiB: within the budget\."):
        check_memory_budget(recipe, recipe.max_length, without)
    with_unsloth = (select_backend(recipe, has_cuda=True, has_unsloth=True), "with unsloth")
    assert check_memory_budget(recipe, recipe.max_length, with_unsloth)["memory_plan_gib"] <= 24
