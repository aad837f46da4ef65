"""export_plan: 04's RAM for the merge and disk for every file, planned from the recipe before 03 starts."""
import pytest

from lib.architectures import load_architecture, lora_parameter_count, parameter_count
from lib.plan.export_plan import (IN_MEMORY_MARGIN_BYTES, PROBES, export_plan, export_plan_rows, gguf_estimates,
                                  probe_logits_bytes)
from lib.plan.memory import GIB
from lib.recipe import load_recipe


def test_mistral22b_needs_44_gb_of_weights_about_140_gb_of_ram_in_memory_and_over_100_gb_of_disk():
    plan = export_plan(load_recipe("mistral22b"))
    ram, disk = plan["ram_bytes"], plan["disk_bytes"]
    assert ram["base_weights"] == parameter_count(load_architecture("mistral-small-2409")) * 2  # bf16
    assert 44e9 < ram["base_weights"] < 45e9
    adapter = lora_parameter_count(load_architecture("mistral-small-2409"), 64, ["q_proj", "k_proj", "v_proj",
                                                                                 "o_proj", "gate_proj", "up_proj",
                                                                                 "down_proj"]) * 4
    assert ram["adapter"] == disk["adapter"] == adapter
    # merged and checked in float32, then cast to bf16: both copies, the adapter, the probes' logits, the margin
    logits = probe_logits_bytes(PROBES, 32768)
    assert ram["in_memory_merge"] == 3 * ram["base_weights"] + adapter + logits + IN_MEMORY_MARGIN_BYTES
    assert 130e9 < ram["in_memory_merge"] < 140e9  # a 22B merge goes shard by shard on any ordinary machine
    assert list(disk) == ["base_download", "adapter", "merged", "F16.gguf", "Q4_K_M.gguf", "Q5_K_M.gguf",
                          "Q8_0.gguf", "total"]
    assert disk["base_download"] == disk["merged"] == ram["base_weights"]  # a bf16 checkpoint, merged in bf16
    assert disk["F16.gguf"] == gguf_estimates(load_recipe("mistral22b"))["F16"]
    assert disk["total"] == sum(v for k, v in disk.items() if k != "total") > 100e9
    assert plan["merge"] == (f"in memory if available RAM >= {ram['in_memory_merge'] / GIB:.1f} GiB, else shard by "
                             "shard (one base shard at a time)")
    assert plan["ram_gib"]["base_weights"] == round(ram["base_weights"] / GIB, 2)


def test_a_small_float32_recipe_merges_in_float32_with_no_second_copy():
    recipe = load_recipe("smollm2_135m")  # float32; the bundled config's checkpoint dtype is bfloat16
    plan = export_plan(recipe)
    params = parameter_count(load_architecture("smollm2-135m"))
    assert plan["merge_dtype"] == "float32"
    assert plan["ram_bytes"]["base_weights"] == plan["disk_bytes"]["merged"] == params * 4
    assert plan["disk_bytes"]["base_download"] == params * 2
    assert plan["ram_bytes"]["in_memory_merge"] == (params * 4 + plan["ram_bytes"]["adapter"]
                                                    + probe_logits_bytes(PROBES, 49152) + IN_MEMORY_MARGIN_BYTES)
    assert set(plan["disk_bytes"]) >= {"F16.gguf", "Q8_0.gguf", "Q4_K_M.gguf"}
    rows = export_plan_rows(plan)
    assert rows["merge"] == plan["merge"] and rows["disk: total (GiB)"] == plan["disk_gib"]["total"]
