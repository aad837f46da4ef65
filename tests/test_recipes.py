"""Every shipped recipe loads, plans, and says what the brief promises (hyper-parameters, fit, file sizes)."""
import json
import subprocess
import sys

import pytest

from lib.recipe import list_recipes, load_recipe
from lib.plan.recipe_plan import recipe_plan
from lib.modes import make_run_config

RECIPES = ["llama32_1b_kd", "llama32_1b_t4", "llama32_3b", "llama32_3b_thinking8k", "mistral22b", "nanbeige4_3b_coldstart",
           "qwen3_1_7b", "r1_distill_qwen_1_5b", "smollm2_135m", "smollm2_135m_arithmetic", "smollm2_135m_kd"]


def test_all_recipes_present():
    assert list_recipes() == RECIPES


def test_the_colab_recipe_is_planned_for_a_t4():
    """A free Colab T4: 15 GB, no bf16 (so float16 compute), QLoRA, a few hundred traces; the plan on Unsloth fits
    with room (its T4 memory is this estimate until measured on a T4)."""
    recipe = load_recipe("llama32_1b_t4")
    assert (recipe.vram_budget_gib, recipe.torch_dtype, recipe.load_in_4bit) == (15, "float16", True)
    assert 100 <= recipe.train_rows <= 1000
    plan = recipe_plan(recipe)["memory_plan"]
    assert plan["fits"] and plan["total_gib"] < 0.5 * 15


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_and_plans(name):
    plan = recipe_plan(load_recipe(name))
    assert plan["parameters"] > 1e8
    assert set(plan["gguf_bytes"]) >= {"F16", *load_recipe(name).quant_types}
    assert plan["memory_plan"]["fits"], f"{name} does not fit its own vram_budget_gib"


@pytest.mark.parametrize("name, card_gib, q4km_bytes", [("llama32_3b", 8, 2.02e9), ("mistral22b", 24, 13.3e9)])
def test_gpu_recipes_fit_their_card_and_q4km_is_the_published_size(name, card_gib, q4km_bytes):
    plan = recipe_plan(load_recipe(name))
    assert plan["memory_plan"]["total_bytes"] <= card_gib * 2**30
    assert abs(plan["gguf_bytes"]["Q4_K_M"] - q4km_bytes) / q4km_bytes < 0.02


def test_dry_run_is_one_switch_turned_into_a_mode(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from lib.models import ModelNotFoundError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    real = make_run_config("mistral22b", dry_run=False, run_dir=str(tmp_path / "a"))
    dry = make_run_config("mistral22b", dry_run=True, run_dir=str(tmp_path / "b"))
    assert real.recipe == dry.recipe  # one recipe, read the same way in both modes
    # a hub id resolves to its downloaded snapshot folder (lib.models.resolve_base_model); offline with an empty
    # cache that is an error saying how to download it at the recipe's revision
    with pytest.raises(ModelNotFoundError, match=f"hf download mistralai/Mistral-Small-Instruct-2409 --revision "
                                                 f"{real.recipe.revision}"):
        real.mode.model_path
    assert real.mode.train_source == real.recipe.dataset_path and real.mode.train_rows == real.recipe.train_rows
    assert dry.mode.train_source == dry.recipe.dry_run_dataset_path and 0 < dry.mode.train_rows < 100
    assert dry.mode.summary()["tokenizer"] == "fixtures/tokenizers/mistral_v3"
    assert dry.mode.tokenizer().eos_token == "</s>"
    assert dry.mode.convert(dry, tmp_path, tmp_path) == {} and dry.mode.judged_files(dry, tmp_path) == {}
    assert dry.mode.evaluate(dry, [{"label": "x"}], tmp_path, tmp_path) == []
    assert dry.mode.train(dry, [], 8192, tmp_path)[1] == {}  # validated on the meta device: no adapter produced
    assert dry.summary()["mode"] == "dry-run" and real.summary()["mode"] == "real"


def test_plan_cli_prints_one_json_object():
    out = subprocess.run([sys.executable, "-m", "lib", "plan", "llama32_3b"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["gguf_bytes"]["Q4_K_M"] > 0 and "components" in plan["memory_plan"]


def test_cli_unknown_recipe_lists_known_ones():
    out = subprocess.run([sys.executable, "-m", "lib", "plan", "llama3b"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown recipe 'llama3b'" in out.stderr and "llama32_3b" in out.stderr
