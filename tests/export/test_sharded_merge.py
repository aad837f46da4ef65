"""The shard-by-shard merge (lib.export.sharded_merge): the same tensors as PEFT's in-memory merge, a per-tensor
check that catches wrong merges, and refusals of adapters it cannot merge exactly."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lib.export.merge import MergeMismatch, merge_checked
from lib.export.sharded_merge import (INDEX, ShardedMergeError, UnsupportedAdapter, base_shards,
                                      check_merged_tensors, lora_pairs, lora_scale, merge_sharded,
                                      refuse_unsupported, replace_dir, sample_keys, weights_bytes)
from tests.export.calibrate_merge_tolerance import PROBES


def _tensors(model_dir) -> dict[str, torch.Tensor]:
    return {key: value for name in base_shards(model_dir) for key, value in load_file(model_dir / name).items()}


@pytest.mark.parametrize("stored, dtype", [("bfloat16", "bfloat16"), ("float32", "float32"),
                                           ("float32", "bfloat16")])
def test_sharded_merge_equals_peft_in_memory_merge_bitwise(tiny, tmp_path, stored, dtype):
    # Bitwise, not within rounding: both compute W + (B@A)·scale in float32 (PEFT's merge_and_unload on the
    # float32-loaded base, this module on the upcast shard) and round once to the dtype.
    base, adapter = tiny[stored]
    assert len(base_shards(base)) > 2  # the base really is sharded
    sharded = merge_checked(str(base), adapter, tmp_path / "sharded", PROBES, dtype, strategy="sharded")
    in_memory = merge_checked(str(base), adapter, tmp_path / "memory", PROBES, dtype, strategy="in_memory")
    assert sharded["check"] == "per_tensor" and in_memory["check"] == "logits"
    ours, peft = _tensors(tmp_path / "sharded"), _tensors(tmp_path / "memory")
    assert sorted(ours) == sorted(peft)
    for key, tensor in peft.items():
        assert ours[key].dtype == tensor.dtype == getattr(torch, dtype), key
        assert torch.equal(ours[key], tensor), key
    merged_keys = [k for k in peft if "_proj" in k]
    base_tensors = _tensors(base)
    assert all(not torch.equal(peft[k], base_tensors[k]) for k in merged_keys)  # the adapter is in every one
    assert sharded["tensors_merged"] == sharded["lora_pairs"] == len(merged_keys) == 14


def test_sharded_output_is_a_loadable_model_with_index_config_and_tokenizer(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = tiny["bfloat16"]
    merge_sharded(base, adapter, tmp_path / "out", "bfloat16")
    out = tmp_path / "out"
    index = json.loads((out / INDEX).read_text())
    assert index["weight_map"] == json.loads((base / INDEX).read_text())["weight_map"]
    on_disk = sum(t.numel() * t.element_size() for t in _tensors(out).values())
    assert index["metadata"]["total_size"] == on_disk
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16 and AutoTokenizer.from_pretrained(out).vocab_size == 49152
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_sharded_merge_converts_to_the_merge_dtype_like_the_in_memory_path(tiny, tmp_path):
    base, adapter = tiny["float32"]
    merge_sharded(base, adapter, tmp_path / "out", "bfloat16")
    assert {t.dtype for t in _tensors(tmp_path / "out").values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    assert weights_bytes(base, "bfloat16") * 2 == weights_bytes(base, "float32") == weights_bytes(base)


def _copy_adapter(adapter, folder, config_changes=None, tensors=None):
    shutil.copytree(adapter, folder)
    if config_changes:
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps(config | config_changes))
    if tensors:
        save_file(tensors(load_file(folder / "adapter_model.safetensors")), folder / "adapter_model.safetensors")
    return folder


def test_a_lora_pair_without_its_base_weight_is_an_error_and_keeps_the_earlier_merge(tiny, tmp_path):
    base, adapter = tiny["float32"]

    def add_layer_7(tensors):
        extra = {k.replace("layers.1.", "layers.7."): v.clone()
                 for k, v in tensors.items() if "layers.1.mlp.up_proj" in k}
        return tensors | extra

    broken = _copy_adapter(adapter, tmp_path / "adapter", tensors=add_layer_7)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("an earlier merge")
    with pytest.raises(ShardedMergeError, match=r"1 LoRA pair.*model\.layers\.7\.mlp\.up_proj\.weight"):
        merge_sharded(base, broken, tmp_path / "out")
    # the failed merge left the earlier one as it was, and no temporary folder
    assert (tmp_path / "out" / "config.json").read_text() == "an earlier merge"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "out"]


def test_per_tensor_check_catches_a_wrong_scale(tiny, tmp_path, monkeypatch):
    # the check's oracle is PEFT's own delta, so a scale this module gets wrong cannot agree with it
    from lib.export import sharded_merge

    monkeypatch.setattr(sharded_merge, "lora_scale", lambda config: 2 * config["lora_alpha"] / config["r"])
    base, adapter = tiny["bfloat16"]
    with pytest.raises(MergeMismatch, match="per-tensor check.*nothing was written"):
        merge_checked(str(base), adapter, tmp_path / "merged", PROBES, "bfloat16", strategy="sharded")
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("damage", ["unmerged", "transposed", "untouched changed", "missing"])
def test_per_tensor_check_catches_damaged_output(tiny, tmp_path, damage):
    base, adapter = tiny["bfloat16"]
    out = tmp_path / "out"
    merge_sharded(base, adapter, out, "bfloat16")
    assert check_merged_tensors(base, adapter, out)["check_passed"]
    key = {"unmerged": "model.layers.0.self_attn.o_proj.weight", "transposed": "model.layers.1.self_attn.q_proj.weight",
           "untouched changed": "model.norm.weight", "missing": "model.layers.0.mlp.up_proj.weight"}[damage]
    shard = out / json.loads((out / INDEX).read_text())["weight_map"][key]
    tensors = load_file(shard)
    if damage == "unmerged":
        tensors[key] = _tensors(base)[key]
    elif damage == "transposed":  # q_proj is square here: the shapes alone would not show it
        tensors[key] = tensors[key].t().contiguous()
    elif damage == "untouched changed":
        tensors[key] = tensors[key] * 1.01
    else:
        del tensors[key]
    save_file(tensors, shard)
    assert not check_merged_tensors(base, adapter, out, sample=100)["check_passed"]


@pytest.mark.parametrize("change, named", [
    ({"use_dora": True}, "use_dora"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"fan_in_fan_out": True}, "fan_in_fan_out"),
    ({"bias": "all"}, "bias"),
    ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"),
    ({"init_lora_weights": "pissa"}, "init_lora_weights"),
    ({"use_some_future_feature": True}, "use_some_future_feature"),
])
def test_unsupported_adapter_settings_are_refused_by_name(change, named):
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_dora": False, "bias": "none"}
    refuse_unsupported(config)  # plain LoRA passes
    with pytest.raises(UnsupportedAdapter, match=rf"{named} = .*strategy='in_memory'"):
        refuse_unsupported(config | change)


def test_a_dora_adapter_is_refused_before_anything_is_written(tiny, tmp_path):
    base, adapter = tiny["float32"]
    dora = _copy_adapter(adapter, tmp_path / "adapter", {"use_dora": True})
    with pytest.raises(UnsupportedAdapter, match="adapter_config.json: use_dora = True"):
        merge_sharded(base, dora, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_lora_pairs_map_peft_keys_to_base_keys():
    keys = ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert lora_pairs(keys) == {"model.layers.0.self_attn.q_proj.weight": tuple(keys)}
    with pytest.raises(ShardedMergeError, match="q_proj.weight has lora_A but not its other half"):
        lora_pairs(keys[:1])
    for odd in ("base_model.model.model.embed_tokens.lora_embedding_A",
                "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                "base_model.model.lm_head.modules_to_save.default.weight"):
        with pytest.raises(UnsupportedAdapter, match="not a LoRA A/B weight"):
            lora_pairs(keys + [odd])


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_scale_is_the_one_peft_uses(use_rslora):
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=16, lora_alpha=32, target_modules=["proj"], use_rslora=use_rslora)
    holder = torch.nn.Module()
    holder.proj = torch.nn.Linear(8, 8)
    layer = inject_adapter_in_model(config, holder).proj
    assert lora_scale(config.to_dict()) == pytest.approx(layer.scaling["default"])
    assert lora_scale(config.to_dict()) == (32 / math.sqrt(16) if use_rslora else 2.0)


def test_sample_keys_spans_first_to_last():
    keys = [f"k{i:02d}" for i in range(20)]
    sample = sample_keys(keys, 5)
    assert sample[0] == "k00" and sample[-1] == "k19" and len(set(sample)) == 5
    assert sample_keys(keys[:3], 5) == keys[:3]


def test_weights_bytes_counts_every_stored_tensor(tiny):
    base, _ = tiny["bfloat16"]
    assert weights_bytes(base) == sum(t.numel() * t.element_size() for t in _tensors(base).values())


def test_replace_dir_swaps_in_a_finished_folder_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / "merged"
    replace_dir(target, lambda folder: (folder / "a").write_text("first"))
    assert (target / "a").read_text() == "first"

    def fails(folder):
        (folder / "a").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_dir(target, fails)
    assert (target / "a").read_text() == "first"
    replace_dir(target, lambda folder: (folder / "b").write_text("second"))
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]
