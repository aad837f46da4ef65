"""The multi-GPU launch configs in accelerate/ pass accelerate's own launch code up to the spawn (lib.launch_configs),
carry the settings their comments promise, and a config broken in one key fails naming that key. No GPU, no model."""
import os
import sys

import pytest
import yaml

from lib.launch_configs import ACCELERATE_DIR, validate_launch_config

LAUNCHED = ["-u", "-m", "lib.train_launch", "mistral22b"]  # what each process runs after the interpreter


def summary(name, *launch_args):
    return validate_launch_config(ACCELERATE_DIR / f"{name}.yaml", "mistral22b", launch_args)


def broken(tmp_path, name, change):
    """A copy of a shipped config with one change applied to its parsed YAML."""
    config = yaml.safe_load((ACCELERATE_DIR / f"{name}.yaml").read_text())
    change(config)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_folder_holds_the_three_configs():
    assert sorted(p.name for p in ACCELERATE_DIR.glob("*.yaml")) == ["ddp.yaml", "deepspeed_zero3.yaml",
                                                                     "fsdp_qlora.yaml"]


def test_ddp_launches_two_processes_of_lib_train_in_bf16():
    ddp = summary("ddp")
    assert (ddp["distributed_type"], ddp["num_processes"], ddp["nproc_per_node"]) == ("MULTI_GPU", 2, 2)
    assert ddp["mixed_precision"] == "bf16" and ddp["launcher_env"]["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert ddp["command"] == [sys.executable, *LAUNCHED]
    assert "ACCELERATE_USE_FSDP" not in ddp["launcher_env"] and "ACCELERATE_USE_DEEPSPEED" not in ddp["launcher_env"]


def test_num_processes_on_the_command_line_overrides_the_config():
    assert summary("ddp", "--num_processes", "4")["nproc_per_node"] == 4


def test_fsdp_config_has_the_qlora_settings_as_the_processes_see_them():
    run = summary("fsdp_qlora")
    assert run["distributed_type"] == "FSDP" and run["nproc_per_node"] == 2
    fsdp = run["fsdp"]
    assert fsdp["version"] == 1  # FSDP2 + bitsandbytes 4-bit is not supported (accelerate#3874)
    assert fsdp["sharding_strategy"] == "FULL_SHARD"
    assert fsdp["use_orig_params"] is False
    assert fsdp["cpu_ram_efficient_loading"] is True and fsdp["sync_module_states"] is True
    assert fsdp["auto_wrap_policy"] == "transformer_auto_wrap_policy"
    assert fsdp["state_dict_type"] == "SHARDED_STATE_DICT"
    assert fsdp["activation_checkpointing"] is False  # the recipe's gradient_checkpointing does it
    assert run["launcher_env"]["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"  # what transformers' loader reads


def test_zero3_config_is_stage_3_and_gathers_16bit_weights_on_save():
    run = summary("deepspeed_zero3")
    ds = run["deepspeed"]
    assert run["distributed_type"] == "DEEPSPEED" and ds["zero_stage"] == 3
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["gradient_accumulation_steps"] == "auto"  # the Trainer fills it from the recipe
    assert ds["bf16"] is True and run["launcher_env"]["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"


def test_validation_leaves_the_environment_as_it_found_it():
    before = dict(os.environ)
    for name in ("ddp", "fsdp_qlora", "deepspeed_zero3"):
        summary(name)
    assert dict(os.environ) == before


@pytest.mark.parametrize("name, change, message", [
    ("ddp", lambda c: c.update(distributed_type="MULTI_GPUS"), r"ddp\.yaml: distributed_type: 'MULTI_GPUS'"),
    ("ddp", lambda c: c.update(distributed_type="NO"), r"distributed_type: 'NO' does not launch"),
    ("ddp", lambda c: c.update(num_processes=1), r"num_processes: 1 process"),
    ("fsdp_qlora", lambda c: c["fsdp_config"].update(fsdp_sharding_strategy="FULL_SHARDS"),
     r"fsdp_config\.fsdp_sharding_strategy: 'FULL_SHARDS' refused .*Fix: one of FULL_SHARD"),
    ("fsdp_qlora", lambda c: c["fsdp_config"].update(fsdp_use_orig_param=False),
     r"fsdp_config\.fsdp_use_orig_param: not an `accelerate launch` FSDP argument"),
    ("fsdp_qlora", lambda c: c["fsdp_config"].update(fsdp_sync_module_states=False),
     r"fsdp_config: When using `--fsdp_cpu_ram_efficient_loading` set `--fsdp_sync_module_states`"),
    ("deepspeed_zero3", lambda c: c["deepspeed_config"].update(zero_stage=5),
     r"deepspeed_config\.zero_stage: 5 is not a ZeRO stage"),
    ("deepspeed_zero3", lambda c: c["deepspeed_config"].update(offload_param_device="gpu"),
     r"deepspeed_config\.offload_param_device: 'gpu' is not an offload device"),
])
def test_a_config_broken_in_one_key_fails_naming_it(tmp_path, name, change, message):
    with pytest.raises(ValueError, match=message):
        validate_launch_config(broken(tmp_path, name, change))
