"""Dry validation of the `accelerate launch` configs in accelerate/: what `accelerate launch --config_file PATH -m
lib.train_launch RECIPE` would hand each process, worked out by accelerate's own launch code, with nothing spawned.

Usage: ``from lib.launch_configs import validate_launch_config; validate_launch_config("accelerate/ddp.yaml")``

What runs, on a CPU-only machine, all of it accelerate 1.15's (or torch's) own code:
1. `load_config_from_file`: the top-level keys and the enums `compute_environment` and `distributed_type`.
2. `launch_command_parser().parse_args` + `_validate_launch_command`: the config merged into the launch arguments as
   the CLI merges it (flags on the command line win, e.g. `--num_processes 4`).
3. `prepare_multi_gpu_env` (DDP, FSDP) or `prepare_deepspeed_cmd_env` (DeepSpeed): the environment every process gets;
   checks mixed precision, the dynamo backend and FSDP's cpu_ram_efficient_loading => sync_module_states rule.
4. torch's `torch.distributed.run.config_from_args` on the arguments accelerate would pass it (`_filter_args`, as
   `multi_gpu_launcher` does): processes per node and the exact command each runs.
5. The plugin the processes build from that environment: `FullyShardedDataParallelPlugin()` (the sharding strategy,
   wrap policy, prefetch, state-dict type and every boolean are parsed there) or `DeepSpeedPlugin()` followed by
   `set_mixed_precision`, as transformers' `TrainingArguments` builds it under `ACCELERATE_USE_DEEPSPEED`.

Checks of our own, where accelerate accepts silently what would be ignored or fail only on the GPUs:
- every key under fsdp_config / deepspeed_config must be one of the launcher's FSDP / DeepSpeed arguments: accelerate
  copies any key onto its argument namespace, so a misspelt one is dropped and its default used without a word;
- zero_stage in 0..3 and offload devices none|cpu|nvme: DeepSpeed's own rules (accelerate passes any value through;
  deepspeed, which would refuse it in `deepspeed.initialize`, is not installed here);
- at least 2 processes (the CLI checks `--num_processes`, not a config's `num_processes`).

Not validated here, and why:
- FSDP1's `sync_module_states` makes the plugin ask for the current accelerator device (for `param_init_fn`); a
  machine without one has none, so that one lookup answers cuda:0 here (`_device_lookup`). Nothing else is stubbed.
- DeepSpeed itself: `deepspeed_launcher` imports deepspeed before it launches, and DeepSpeed parses the generated
  config (train_batch_size arithmetic, offload support) only in `deepspeed.initialize`. deepspeed is not installed.
- `check_cuda_p2p_ib_support` (NCCL_P2P_DISABLE/NCCL_IB_DISABLE on RTX 4000-series cards) reads the GPU model.
- Everything after the spawn: the process group (NCCL), FSDP wrapping a real model, bitsandbytes 4-bit loading,
  whether mistral22b fits; and the GPU install's older transformers 5.17 / TRL 1.15 (this env: 5.23 / 1.16).
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import yaml

from lib.paths import PROJECT_ROOT

ACCELERATE_DIR = PROJECT_ROOT / "accelerate"
LAUNCHED_MODULE = ("-m", "lib.train_launch")  # every config launches `python -m lib.train_launch RECIPE`
DISTRIBUTED_TYPES = ("MULTI_GPU", "FSDP", "DEEPSPEED")  # data-parallel kinds `lib.train_launch` is written for
ZERO_STAGES = (0, 1, 2, 3)  # DeepSpeed's ZeroStageEnum
OFFLOAD_DEVICES = ("none", "cpu", "nvme")  # DeepSpeed's OffloadDeviceEnum
_DS_BOOLEANS = ("zero3_init_flag", "zero3_save_16bit_model")
_FSDP_ENV_KEY = {"FSDP_TRANSFORMER_CLS_TO_WRAP": "fsdp_transformer_layer_cls_to_wrap"}  # the one irregular name


def validate_launch_config(path: str | Path, recipe: str = "RECIPE", launch_args: Sequence[str] = ()) -> dict:
    """Run accelerate's launch code on `path` up to the spawn; return what the processes would see.

    `launch_args`: extra `accelerate launch` flags, e.g. ("--num_processes", "4"). Raises ValueError naming the file,
    the key and the fix. Leaves os.environ as it found it.
    """
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    path = Path(path)
    if not path.is_file():
        shipped = sorted(str(p.relative_to(PROJECT_ROOT)) for p in ACCELERATE_DIR.glob("*.yaml"))
        raise _error(path, "(file)", "no such file", f"one of {', '.join(shipped)}")
    try:
        config = load_config_from_file(str(path))
    except yaml.YAMLError as exc:
        raise _error(path, "(YAML)", f"not valid YAML: {exc}", "correct the syntax at the line it names") from exc
    except (ValueError, TypeError) as exc:
        raise _unreadable(path, exc) from exc
    kind = config.distributed_type.value
    if kind not in DISTRIBUTED_TYPES:
        raise _error(path, "distributed_type", f"{kind!r} does not launch `lib.train_launch` data-parallel",
                     f"one of {', '.join(DISTRIBUTED_TYPES)}")
    launch = _launch_module()
    parser = launch.launch_command_parser()
    _check_nested_keys(path, config, parser)
    if kind == DistributedType.DEEPSPEED.value:
        _check_deepspeed_values(path, config.deepspeed_config)

    try:
        args = parser.parse_args(["--config_file", str(path), *launch_args, *LAUNCHED_MODULE, recipe])
    except SystemExit as exc:  # argparse exits on a bad flag; its message went to stderr
        raise _error(path, "launch_args", f"`accelerate launch` refused {list(launch_args)}",
                     "flags as `accelerate launch --help` lists them") from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            args, defaults, mixed_precision_from_config = launch._validate_launch_command(args)
        except ValueError as exc:
            raise _error(path, "(launch arguments)", str(exc), "see the message: accelerate's own check") from exc
        if args.num_processes is None or args.num_processes < 2:
            raise _error(path, "num_processes", f"{args.num_processes} process(es) is not data-parallel",
                         "2 or more (one per GPU), or pass --num_processes N")
        launcher_env = _launcher_env(path, kind, args, defaults, mixed_precision_from_config)
        torchrun = _torchrun_config(args, launcher_env)
        launcher_env.update(torchrun["env"])
        summary = {"config": str(path), "distributed_type": kind, "num_processes": args.num_processes,
                   "num_machines": args.num_machines, "mixed_precision": args.mixed_precision,
                   "nproc_per_node": torchrun["nproc_per_node"], "command": torchrun["command"],
                   "launcher_env": launcher_env}
        if kind == DistributedType.FSDP.value:
            summary["fsdp"] = _fsdp_settings(path, launcher_env)
        elif kind == DistributedType.DEEPSPEED.value:
            summary["deepspeed"] = _deepspeed_settings(launcher_env, args.mixed_precision)
    summary["warnings"] = sorted({str(w.message) for w in caught})
    return summary


def _error(path: Path, key: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"{path}: {key}: {problem.rstrip('.')}. Fix: {fix}")


def _unreadable(path: Path, exc: Exception) -> ValueError:
    """accelerate's refusal of the top level, pinned on the key it concerns (its enums are the ones checked)."""
    from accelerate.utils import ComputeEnvironment, DistributedType

    raw = yaml.safe_load(path.read_text()) or {}
    for key, enum in (("compute_environment", ComputeEnvironment), ("distributed_type", DistributedType)):
        if key in raw and raw[key] not in {e.value for e in enum}:
            return _error(path, key, f"{raw[key]!r} is not an accelerate {enum.__name__}",
                          f"one of {', '.join(DISTRIBUTED_TYPES) if key == 'distributed_type' else 'LOCAL_MACHINE'}")
    return _error(path, "(top level)", f"accelerate cannot read it: {exc}", "remove or correct the key it names")


def _launch_module():
    """accelerate.commands.launch without its import-time side effect: as the CLI it installs a rich handler on the
    root logger, which would reformat every log line of the notebook or test process that imports it."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    from accelerate.commands import launch

    root.handlers[:] = handlers
    return launch


def _check_nested_keys(path: Path, config, parser) -> None:
    """fsdp_config / deepspeed_config keys must be launcher arguments of their group, with a value among the
    argument's declared choices: `_validate_launch_command` copies config values onto the namespace past argparse,
    so an unknown key is ignored and a value outside `choices` is not refused there."""
    # argparse has no public view of a group's arguments; _action_groups has been there since Python 2.7
    groups = {g.title: {a.dest: a for a in g._group_actions} for g in parser._action_groups}
    for block, group, prefix in (("fsdp_config", "FSDP Arguments", "fsdp"),
                                 ("deepspeed_config", "DeepSpeed Arguments", "")):
        arguments = groups[group]
        for key, value in getattr(config, block).items():
            # accelerate prefixes fsdp_config keys that lack it (`_validate_launch_command`); mirror that
            name = key if not prefix or key.startswith(prefix) else f"{prefix}_{key}"
            if name not in arguments:
                raise _error(path, f"{block}.{key}", f"not an `accelerate launch` {group.split()[0]} argument, so "
                             "accelerate would ignore it", f"one of {', '.join(sorted(arguments))}")
            choices = arguments[name].choices
            if choices and str(value) not in choices:
                raise _error(path, f"{block}.{key}", f"{value!r} is not one of accelerate's choices",
                             f"one of {', '.join(choices)}")


def _check_deepspeed_values(path: Path, deepspeed_config: dict) -> None:
    """What DeepSpeed (not installed) would refuse; accelerate passes these values through unchecked."""
    from accelerate.utils import str_to_bool

    stage = deepspeed_config.get("zero_stage")
    if stage is not None and stage not in ZERO_STAGES:
        raise _error(path, "deepspeed_config.zero_stage", f"{stage!r} is not a ZeRO stage",
                     "3 (shards parameters, gradients and optimizer state); 0-2 shard less")
    for key in ("offload_optimizer_device", "offload_param_device"):
        if key in deepspeed_config and str(deepspeed_config[key]).lower() not in OFFLOAD_DEVICES:
            raise _error(path, f"deepspeed_config.{key}", f"{deepspeed_config[key]!r} is not an offload device",
                         f"one of {', '.join(OFFLOAD_DEVICES)}")
    for key in _DS_BOOLEANS:
        if key in deepspeed_config:
            try:
                str_to_bool(str(deepspeed_config[key]))  # how accelerate reads them back from the environment
            except ValueError as exc:
                raise _error(path, f"deepspeed_config.{key}", str(exc), "true or false") from exc


def _launcher_env(path: Path, kind: str, args, defaults, mixed_precision_from_config: bool) -> dict[str, str]:
    """The variables `accelerate launch` adds to (or changes in) this environment for its processes."""
    from accelerate.utils import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    before = dict(os.environ)
    try:
        if kind == "DEEPSPEED":
            # what `launch_command` sets before `deepspeed_launcher`: which fields the config (not a DS file) gave
            fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
            args.deepspeed_fields_from_accelerate_config = ",".join(fields)
            _, env = prepare_deepspeed_cmd_env(args)
        else:
            env = prepare_multi_gpu_env(args)
    except ValueError as exc:
        key = "mixed_precision" if "mixed_precision" in str(exc) else "fsdp_config" if "fsdp" in str(exc) else \
            "(launch arguments)"
        raise _error(path, key, str(exc), "see the message: accelerate's own check") from exc
    return {k: v for k, v in env.items() if before.get(k) != v}


def _torchrun_config(args, launcher_env: dict[str, str]) -> dict:
    """torch's launch config for the arguments accelerate hands `torch.distributed.run.run` (no process started),
    and what torchrun adds to the environment itself (OMP_NUM_THREADS=1 where accelerate set none: DeepSpeed)."""
    import torch.distributed.run as distrib_run
    from accelerate.utils import _filter_args

    torchrun_args = _filter_args(args, distrib_run.get_args_parser(),
                                 ["--training_script", args.training_script,
                                  "--training_script_args", args.training_script_args])
    # patch.dict, not accelerate's patch_environment: it also takes back what torchrun writes into os.environ
    with mock.patch.dict(os.environ, launcher_env):
        before = dict(os.environ)
        config, cmd, cmd_args = distrib_run.config_from_args(torchrun_args)
        added = {k: v for k, v in os.environ.items() if before.get(k) != v}
    return {"nproc_per_node": config.nproc_per_node, "command": [str(cmd), *cmd_args], "env": added}


def _device_lookup():
    """Answer FSDP's current-device lookup with cuda:0 where there is no GPU (see the module docstring)."""
    import torch
    from accelerate.utils import dataclasses as accelerate_dataclasses

    stack = contextlib.ExitStack()
    if not torch.cuda.is_available():
        stack.enter_context(mock.patch.object(accelerate_dataclasses, "is_cuda_available", return_value=True))
        stack.enter_context(mock.patch.object(torch.cuda, "current_device", return_value=0))
    return stack


def _fsdp_plugin(env: dict[str, str]):
    from accelerate.utils import FullyShardedDataParallelPlugin

    # only these variables: the plugin reads FSDP_* from os.environ, and a stray one from the shell must not count
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FSDP_")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True), _device_lookup():
        return FullyShardedDataParallelPlugin()


def _fsdp_settings(path: Path, launcher_env: dict[str, str]) -> dict:
    """The FSDP plugin every process builds from the launcher's environment, as plain values."""
    fsdp_env = {k: v for k, v in launcher_env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    try:
        plugin = _fsdp_plugin(fsdp_env)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise _fsdp_culprit(path, fsdp_env, exc) from exc
    offload = plugin.cpu_offload
    return {"version": plugin.fsdp_version, "sharding_strategy": _name(plugin.sharding_strategy),
            "auto_wrap_policy": getattr(plugin.auto_wrap_policy, "__name__", None),
            "transformer_cls_names_to_wrap": plugin.transformer_cls_names_to_wrap,
            "backward_prefetch": _name(plugin.backward_prefetch), "forward_prefetch": plugin.forward_prefetch,
            "offload_params": bool(getattr(offload, "offload_params", offload)),
            "state_dict_type": _name(plugin.state_dict_type), "use_orig_params": plugin.use_orig_params,
            "sync_module_states": plugin.sync_module_states,
            "cpu_ram_efficient_loading": plugin.cpu_ram_efficient_loading,
            "activation_checkpointing": plugin.activation_checkpointing}


def _fsdp_culprit(path: Path, fsdp_env: dict[str, str], exc: Exception) -> ValueError:
    """Name the fsdp_config key the plugin refused: the first variable that makes it fail on its own."""
    from accelerate.utils.constants import (FSDP_AUTO_WRAP_POLICY, FSDP_BACKWARD_PREFETCH, FSDP_SHARDING_STRATEGY,
                                            FSDP_STATE_DICT_TYPE)

    choices = {"fsdp_sharding_strategy": FSDP_SHARDING_STRATEGY, "fsdp_auto_wrap_policy": FSDP_AUTO_WRAP_POLICY,
               "fsdp_backward_prefetch": FSDP_BACKWARD_PREFETCH, "fsdp_state_dict_type": FSDP_STATE_DICT_TYPE}
    base = {k: v for k, v in fsdp_env.items() if k in ("ACCELERATE_USE_FSDP", "FSDP_VERSION")}
    for var, value in fsdp_env.items():
        if var in base or not var.startswith("FSDP_"):
            continue
        try:
            _fsdp_plugin({**base, var: value})
        except (ValueError, KeyError, TypeError, RuntimeError):
            key = _FSDP_ENV_KEY.get(var, "fsdp_" + var.removeprefix("FSDP_").lower())
            fix = (f"one of {', '.join(choices[key])}" if key in choices
                   else "true or false" if "truth value" in str(exc) else "see accelerate's message")
            return _error(path, f"fsdp_config.{key}", f"{value!r} refused by accelerate's "
                          f"FullyShardedDataParallelPlugin ({type(exc).__name__}: {exc})", fix)
    return _error(path, "fsdp_config", f"refused by accelerate's FullyShardedDataParallelPlugin "
                  f"({type(exc).__name__}: {exc})", "see accelerate's message")


def _name(value) -> str | None:
    """An enum's name (ShardingStrategy.FULL_SHARD -> 'FULL_SHARD'), None for None."""
    return None if value is None else getattr(value, "name", str(value))


def _deepspeed_settings(launcher_env: dict[str, str], mixed_precision: str) -> dict:
    """The DeepSpeed plugin transformers' TrainingArguments builds in every process from the launcher's environment
    (deepspeed itself is not needed for this)."""
    from accelerate.utils import DeepSpeedPlugin

    with mock.patch.dict(os.environ, launcher_env):
        plugin = DeepSpeedPlugin()
        plugin.set_mixed_precision(mixed_precision)
    config = plugin.deepspeed_config
    return {"zero_stage": plugin.zero_stage, "zero3_init_flag": plugin.zero3_init_flag,
            "zero3_save_16bit_model": plugin.zero3_save_16bit_model,
            "offload_optimizer_device": plugin.offload_optimizer_device,
            "offload_param_device": plugin.offload_param_device,
            "gradient_accumulation_steps": plugin.gradient_accumulation_steps,
            "gradient_clipping": plugin.gradient_clipping,
            "zero_optimization": config["zero_optimization"], "bf16": config.get("bf16", {}).get("enabled", False)}
