"""Every shipped recipe loads, plans, and says what the brief promises (hyper-parameters, fit, file sizes)."""
import json
import subprocess
import sys

import pytest

from lib.params import list_recipes, load_recipe
from lib.plan import recipe_plan
from lib.run_config import make_run_config

RECIPES = ["llama32_1b_kd", "llama32_3b", "llama32_3b_thinking8k", "mistral22b", "nanbeige4_3b_coldstart",
           "smollm2_135m"]


def test_all_recipes_present():
    assert list_recipes() == RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_and_plans(name):
    plan = recipe_plan(load_recipe(name))
    assert plan["parameters"] > 1e8
    assert set(plan["gguf_bytes"]) >= {"F16", *load_recipe(name).quant_types}
    assert plan["memory_plan"]["fits"], f"{name} does not fit its own vram_budget_gib"


def test_llama32_3b_recipe_is_the_8gb_qlora_recipe():
    r = load_recipe("llama32_3b")
    assert (r.lora_r, r.lora_alpha, r.lora_dropout) == (16, 32, 0.05)
    assert r.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert r.load_in_4bit and r.optim == "adamw_8bit" and r.num_train_epochs == 3 and r.max_length == 4096
    plan = recipe_plan(r)
    assert plan["memory_plan"]["total_bytes"] <= 8 * 2**30
    assert abs(plan["gguf_bytes"]["Q4_K_M"] - 2.02e9) / 2.02e9 < 0.02


def test_mistral22b_recipe_fits_24gb_and_q4km_is_13_3_gb():
    r = load_recipe("mistral22b")
    assert (r.lora_r, r.lora_alpha, r.max_length, r.load_in_4bit) == (64, 128, 8192, True)
    assert len(r.lora_target_modules) == 7
    plan = recipe_plan(r)
    assert plan["memory_plan"]["total_bytes"] <= 24 * 2**30
    assert abs(plan["gguf_bytes"]["Q4_K_M"] - 13.3e9) / 13.3e9 < 0.02


def test_kd_recipe_hyperparameters():
    r = load_recipe("llama32_1b_kd")
    assert (r.lora_r, r.lora_alpha, r.lora_target_modules) == (4, 8, ["q_proj", "k_proj", "v_proj"])
    assert (r.distill_alpha, r.distill_temperature, r.learning_rate) == (0.5, 2.0, 5e-5)
    assert (r.per_device_train_batch_size, r.num_train_epochs, r.max_length) == (16, 1.0, 128)
    assert r.teacher_load_in_4bit and r.teacher_architecture == "llama-3-8b"


def test_dry_run_is_one_switch_turned_into_config(tmp_path):
    real = make_run_config("mistral22b", dry_run=False, run_dir=str(tmp_path / "a"))
    dry = make_run_config("mistral22b", dry_run=True, run_dir=str(tmp_path / "b"))
    assert real.model_source == "mistralai/Mistral-Small-Instruct-2409" and real.tokenizer_fixture is None
    assert dry.model_source is None and dry.tokenizer_fixture == "mistral_v3"
    assert dry.train_rows and dry.train_rows < 100


def test_plan_cli_prints_one_json_object():
    out = subprocess.run([sys.executable, "-m", "lib", "plan", "llama32_3b"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["gguf_bytes"]["Q4_K_M"] > 0 and "components" in plan["memory_plan"]


def test_cli_unknown_recipe_lists_known_ones():
    out = subprocess.run([sys.executable, "-m", "lib", "plan", "llama3b"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown recipe 'llama3b'" in out.stderr and "llama32_3b" in out.stderr
