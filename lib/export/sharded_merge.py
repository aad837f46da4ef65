"""Merge a LoRA adapter into a base model one safetensors shard at a time, never holding the whole model.

Usage: ``facts = merge_sharded(base_dir, adapter_dir, out_dir, dtype="bfloat16"); check = check_merged_tensors(...)``

A 22B model in bfloat16 is ≈ 44 GB: loading it to call PEFT's `merge_and_unload` needs that much RAM. Here each
base shard is read (`safe_open`), every weight with a LoRA pair becomes W + scale·B@A (computed in float32, rounded
once to the output dtype), and the shard is written under the same name; the peak is about one shard. Only plain
LoRA is handled; anything else in `adapter_config.json` (DoRA, modules_to_save, fan_in_fan_out, biases, per-module
ranks...) is refused by name, because W + scale·B@A would silently be the wrong model for it. PEFT's in-memory merge
handles those (`strategy="in_memory"`, on a machine with the RAM).
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lib.paths import atomic_path, atomic_write_text

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PEFT_PREFIX = "base_model.model."
# small files of a model folder that travel with the weights (config, tokenizer, chat template, remote code);
# everything else (pytorch_model.bin, Mistral's consolidated.safetensors, Llama's original/) is another copy of the
# weights and stays behind
SMALL_FILE_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".py", ".tiktoken")
SMALL_FILE_MAX_BYTES = 64 * 2**20
SAMPLE_TENSORS = 8  # merged tensors re-derived by the check: first, last and evenly between (each costs one read)

# adapter_config.json keys whose value changes what merging means, with the values plain W + scale·B@A is right for
_NEUTRAL = {
    "peft_type": ("LORA",),
    "use_dora": (False, None),
    "modules_to_save": (None, []),
    "fan_in_fan_out": (False, None),
    "bias": ("none", None),
    "lora_bias": (False, None),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "init_lora_weights": (True, False, "gaussian", None),  # pissa/olora/corda/loftq also rewrite the base weights
}
# keys that describe the adapter but do not change the arithmetic of the merge
_HARMLESS = {"task_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode",
             "r", "lora_alpha", "use_rslora", "target_modules", "exclude_modules", "lora_dropout",
             "layers_to_transform", "layers_pattern", "megatron_core", "qalora_group_size", "loftq_config",
             "ensure_weight_tying"}
_FIX = "merge in memory instead (strategy='in_memory': PEFT's merge_and_unload handles it) on a machine with the RAM"


class UnsupportedAdapter(ValueError):
    """The adapter uses a feature the shard-by-shard merge does not implement; the message names it and the fix."""


class ShardedMergeError(RuntimeError):
    """The adapter and the base do not fit together (a LoRA pair without its base weight, or one used twice)."""


def refuse_unsupported(config: dict, source: Path | str = ADAPTER_CONFIG) -> None:
    """Raise `UnsupportedAdapter` for any adapter_config.json setting under which W + scale·B@A is not the merge.

    Known settings must hold their neutral value; unknown ones (a newer PEFT's features) must be empty or false:
    a feature this code has never seen is refused rather than guessed at.
    """
    for key, value in config.items():
        if key in _NEUTRAL:
            if value not in _NEUTRAL[key]:
                raise UnsupportedAdapter(f"{source}: {key} = {value!r} is not handled by the shard-by-shard merge; "
                                         f"{_FIX}")
        elif key not in _HARMLESS and value not in (None, False, {}, [], ""):
            raise UnsupportedAdapter(f"{source}: unknown adapter setting {key} = {value!r}; the shard-by-shard merge "
                                     f"only knows plain LoRA; {_FIX}")


def lora_scale(config: dict) -> float:
    """The factor PEFT multiplies B@A by: lora_alpha / r, or lora_alpha / sqrt(r) for rsLoRA (`use_rslora`)."""
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def lora_pairs(adapter_keys: list[str], source: Path | str = ADAPTER_WEIGHTS) -> dict[str, tuple[str, str]]:
    """{base weight key: (lora_A key, lora_B key)} from PEFT's saved key names.

    `base_model.model.<path>.<module>.lora_A.weight` belongs to the base's `<path>.<module>.weight`. Any other key
    (embedding LoRA, biases, modules_to_save copies, DoRA magnitudes) or a half pair is refused by name.
    """
    halves: dict[str, dict[str, str]] = {}
    for key in adapter_keys:
        stem, _, leaf = key.rpartition(".lora_")
        if not key.startswith(PEFT_PREFIX) or leaf not in ("A.weight", "B.weight"):
            raise UnsupportedAdapter(f"{source}: tensor {key!r} is not a LoRA A/B weight of a Linear; {_FIX}")
        halves.setdefault(stem[len(PEFT_PREFIX):] + ".weight", {})[leaf[0]] = key
    for base_key, pair in halves.items():
        if set(pair) != {"A", "B"}:
            raise ShardedMergeError(f"{source}: {base_key} has lora_{''.join(pair)} but not its other half; the "
                                    "adapter file is incomplete: save the adapter again")
    return {base_key: (pair["A"], pair["B"]) for base_key, pair in sorted(halves.items())}


def read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, tuple[str, str]]]:
    """(adapter_config.json, its LoRA pairs), refused early when the merge could not be exact."""
    from safetensors import safe_open

    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: point adapter_dir at the folder 03_train saved "
                                    "(model.save_pretrained writes both files)")
    config = json.loads(config_path.read_text())
    refuse_unsupported(config, config_path)
    with safe_open(weights_path, framework="pt") as adapter:
        pairs = lora_pairs(list(adapter.keys()), weights_path)
    return config, pairs


def base_shards(base_dir: Path) -> dict[str, list[str]]:
    """{shard file name: its tensor keys}, from `model.safetensors.index.json` or a single `model.safetensors`."""
    from safetensors import safe_open

    base_dir = Path(base_dir)
    if (base_dir / INDEX).is_file():
        shards: dict[str, list[str]] = {}
        for key, name in json.loads((base_dir / INDEX).read_text())["weight_map"].items():
            shards.setdefault(name, []).append(key)
        return shards
    if (base_dir / SINGLE).is_file():
        with safe_open(base_dir / SINGLE, framework="pt") as shard:
            return {SINGLE: list(shard.keys())}
    raise FileNotFoundError(f"{base_dir} holds neither {INDEX} nor {SINGLE}: the shard-by-shard merge reads "
                            "safetensors only; use strategy='in_memory' for other formats")


def weights_bytes(base_dir: Path, dtype: str | None = None) -> int:
    """Bytes of the base's weights once loaded in `dtype` (floating tensors; others keep their size), read from the
    shard headers alone. `None`: as stored."""
    import torch
    from safetensors import safe_open

    target = getattr(torch, dtype).itemsize if dtype else None
    total = 0
    for name in base_shards(base_dir):
        with safe_open(Path(base_dir) / name, framework="pt") as shard:
            for key in shard.keys():
                part = shard.get_slice(key)
                stored = _safetensors_dtype(part.get_dtype())
                size = target if target and stored.is_floating_point else stored.itemsize
                total += math.prod(part.get_shape()) * size
    return total


def _safetensors_dtype(code: str):
    import torch

    names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
             "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
    if code not in names:
        raise ValueError(f"safetensors dtype {code} is not one this merge sizes; use strategy='in_memory'")
    return getattr(torch, names[code])


def merged_weight(weight, lora_a, lora_b, scale: float, dtype=None):
    """W + scale·B@A computed in float32 and rounded once to `dtype` (default: W's own dtype)."""
    import torch

    delta = (lora_b.to(torch.float32) @ lora_a.to(torch.float32)) * scale
    if delta.shape != weight.shape:
        raise ShardedMergeError(f"B@A has shape {tuple(delta.shape)} but the base weight {tuple(weight.shape)}")
    return (weight.to(torch.float32) + delta).to(dtype or weight.dtype).contiguous()


def replace_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Build folder `target` in a temporary folder beside it (`fill` writes into it), then swap it in: a killed or
    failed merge never leaves a half-written model under the final name, and a re-run replaces an older one (kept
    until the new one is in place)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            target.rename(old)  # onto the empty folder: POSIX rename replaces an empty directory
        tmp.rename(target)
    finally:
        if not target.exists() and any(old.iterdir()):
            old.rename(target)  # the swap failed half way: put the previous merge back
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def merge_sharded(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str | None = None,
                  check: Callable[[Path], None] | None = None) -> dict:
    """Write base + adapter to `out_dir` shard by shard (same shard names and index as the base); the facts.

    Floating tensors are written in `dtype` (`None`: as stored), so the result matches what the in-memory merge
    saves. Every LoRA pair must find its base weight exactly once, else `ShardedMergeError`. `check` gets the
    finished folder before it becomes `out_dir`; it raises to keep it from being published.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    base_dir, adapter_dir = Path(base_dir), Path(adapter_dir)
    config, pairs = read_adapter(adapter_dir)
    scale = lora_scale(config)
    target = getattr(torch, dtype) if dtype else None
    shards = base_shards(base_dir)
    missing = sorted(set(pairs) - {key for keys in shards.values() for key in keys})
    if missing:  # before hours of merging, not after
        raise ShardedMergeError(f"{adapter_dir / ADAPTER_WEIGHTS}: {len(missing)} LoRA pair(s) have no weight in "
                                f"{base_dir}'s shards, e.g. {missing[0]} (a tied lm_head, or a checkpoint whose key "
                                "names differ from the model's): use strategy='in_memory'")
    used: dict[str, str] = {}
    weight_map: dict[str, str] = {}
    total_size = 0

    def fill(folder: Path) -> None:
        nonlocal total_size
        with safe_open(adapter_dir / ADAPTER_WEIGHTS, framework="pt") as adapter:
            for name, keys in shards.items():
                out: dict = {}
                with safe_open(base_dir / name, framework="pt") as shard:
                    metadata = shard.metadata()
                    for key in keys:
                        tensor = shard.get_tensor(key)
                        dtype_out = target if target is not None and tensor.is_floating_point() else tensor.dtype
                        if key in pairs:
                            if tensor.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                                raise ShardedMergeError(f"{key} in {base_dir / name} is stored as {tensor.dtype}: "
                                                        "a quantized checkpoint; merge into the unquantized base")
                            if key in used:
                                raise ShardedMergeError(f"{key} appears in {used[key]} and {name}: fix the index")
                            used[key] = name
                            a_key, b_key = pairs[key]
                            try:
                                tensor = merged_weight(tensor, adapter.get_tensor(a_key), adapter.get_tensor(b_key),
                                                       scale, dtype_out)
                            except ShardedMergeError as error:
                                raise ShardedMergeError(f"{key} in {base_dir / name}: {error}; was {adapter_dir} "
                                                        "trained on this base model?") from error
                        out[key] = tensor.to(dtype_out).contiguous()
                        weight_map[key] = name
                        total_size += out[key].numel() * out[key].element_size()
                with atomic_path(folder / name) as partial:
                    save_file(out, partial, metadata=metadata or {"format": "pt"})
                del out
        if set(used) != set(pairs):  # every pair merged exactly once (twice was refused above)
            raise ShardedMergeError(f"{sorted(set(pairs) - set(used))[:3]} of {adapter_dir} were never merged: "
                                    f"{base_dir}'s index names them but their shards do not hold them")
        if (base_dir / INDEX).is_file():
            index = json.loads((base_dir / INDEX).read_text())
            index["metadata"] = {**index.get("metadata", {}), "total_size": total_size}
            index["weight_map"] = weight_map
            atomic_write_text(folder / INDEX, json.dumps(index, indent=2) + "\n")
        _copy_small_files(base_dir, adapter_dir, folder, dtype)
        if check:
            check(folder)

    replace_dir(Path(out_dir), fill)
    return {"strategy": "sharded", "lora_pairs": len(pairs), "tensors_merged": len(used), "shards": len(shards),
            "lora_scale": scale, "merge_arithmetic": "float32, rounded once to the output dtype"}


def _copy_small_files(base_dir: Path, adapter_dir: Path, folder: Path, dtype: str | None) -> None:
    """config, generation config and the like from the base; the tokenizer the adapter was trained with (as the
    in-memory path saves it); config's dtype set to what the shards now hold."""
    from transformers import AutoTokenizer

    for path in sorted(base_dir.iterdir()):
        if (path.is_file() and path.suffix in SMALL_FILE_SUFFIXES and path.name != INDEX
                and path.stat().st_size <= SMALL_FILE_MAX_BYTES):
            with atomic_path(folder / path.name) as partial:
                shutil.copyfile(path, partial)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(folder)
    config_path = folder / "config.json"
    if dtype and config_path.is_file():
        config = json.loads(config_path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in config:
                config[key] = dtype
        atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")


def sample_keys(keys: list[str], count: int = SAMPLE_TENSORS) -> list[str]:
    """Up to `count` of `keys` (sorted), first and last included and the rest evenly between: every depth of the
    model is looked at without re-reading all of it."""
    keys = sorted(keys)
    if len(keys) <= count:
        return keys
    step = (len(keys) - 1) / (count - 1)
    return [keys[round(i * step)] for i in range(count)]


def peft_delta(weight, lora_a, lora_b, config: dict, module_name: str):
    """scale·B@A as PEFT itself computes it (float32): one Linear with W, wrapped by PEFT from `config`.

    The oracle of the per-tensor check: PEFT's own reading of adapter_config.json (r, alpha, rsLoRA) and its own
    `get_delta_weight`, not this module's `lora_scale`, so a wrong scale here is caught there.
    """
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    settings = {k: v for k, v in config.items() if k in LoraConfig.__dataclass_fields__}
    settings |= {"target_modules": [module_name], "layers_to_transform": None, "layers_pattern": None,
                 "exclude_modules": None, "lora_dropout": 0.0, "inference_mode": True}
    holder = torch.nn.Module()
    holder.add_module(module_name, torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta"))
    getattr(holder, module_name).weight = torch.nn.Parameter(weight.to(torch.float32), requires_grad=False)
    layer = getattr(inject_adapter_in_model(LoraConfig(**settings), holder), module_name)
    layer.lora_A["default"].weight.data = lora_a.to(torch.float32)
    layer.lora_B["default"].weight.data = lora_b.to(torch.float32)
    return layer.get_delta_weight("default")


def check_merged_tensors(base_dir: Path, adapter_dir: Path, out_dir: Path, sample: int = SAMPLE_TENSORS) -> dict:
    """The check when the model is never loaded: `out_dir` holds every base tensor (same keys and shapes), and a
    sample of merged tensors, read back from disk, equal W + PEFT's own delta rounded once to their dtype.

    Tolerance per element: one rounding to the stored dtype, |merged - oracle| <= eps(dtype)/2·|oracle|, plus the
    float32 rounding of a rank-r product, (r + 2)·eps(float32)/2·(|W| + scale·|B|@|A|): a merge into the wrong
    tensor, with the wrong scale, transposed, or never written exceeds it by orders of magnitude.
    Returns the facts; the caller (lib.export.merge) raises when `check_passed` is false.
    """
    import torch
    from safetensors import safe_open

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    config, pairs = read_adapter(adapter_dir)
    base, merged = _headers(base_dir), _headers(out_dir)
    lost = sorted(k for k in base if k not in merged or merged[k][1] != base[k][1])
    if lost or len(merged) != len(base):
        extra = sorted(set(merged) - set(base))
        return {"check": "per_tensor", "check_passed": False,
                "reason": f"{out_dir} lacks or reshapes {lost[:3]} and adds {extra[:3]} compared with {base_dir}"}
    worst, worst_ratio, worst_key = 0.0, 0.0, ""
    scale = lora_scale(config)
    with safe_open(adapter_dir / ADAPTER_WEIGHTS, framework="pt") as adapter:
        for key in sample_keys(list(pairs), sample):
            weight, written = _read(base_dir / base[key][0], key), _read(out_dir / merged[key][0], key)
            lora_a, lora_b = (adapter.get_tensor(k).to(torch.float32) for k in pairs[key])
            oracle = weight.to(torch.float32) + peft_delta(weight, lora_a, lora_b, config, key.rsplit(".", 2)[-2])
            u_out, u_32 = torch.finfo(written.dtype).eps / 2, torch.finfo(torch.float32).eps / 2
            spread = weight.to(torch.float32).abs() + scale * (lora_b.abs() @ lora_a.abs())
            bound = u_out * oracle.abs() + (lora_a.shape[0] + 2) * u_32 * spread + torch.finfo(written.dtype).tiny
            error = (written.to(torch.float32) - oracle).abs()
            ratio = float((error / bound).max())
            if ratio >= worst_ratio:
                worst, worst_ratio, worst_key = float(error.max()), ratio, key
    untouched = sample_keys([k for k in base if k not in pairs], sample)
    changed = [k for k in untouched if not _same(_read(base_dir / base[k][0], k), _read(out_dir / merged[k][0], k))]
    return {"check": "per_tensor", "check_passed": worst_ratio <= 1.0 and not changed,
            "tensors_checked": min(sample, len(pairs)), "untouched_tensors_checked": len(untouched),
            "untouched_tensors_changed": changed, "max_tensor_difference": worst,
            "max_difference_over_bound": worst_ratio, "worst_tensor": worst_key}


def _same(base, written) -> bool:
    """An untouched tensor is the base's, converted to the output dtype and nothing else."""
    return base.shape == written.shape and bool((base.to(written.dtype) == written).all())


def _headers(model_dir: Path) -> dict[str, tuple[str, list[int]]]:
    """{key: (shard file, shape)} of what a safetensors model folder's shards really hold (headers only; an index
    entry whose tensor is missing from its shard is missing here)."""
    from safetensors import safe_open

    found = {}
    for name in base_shards(model_dir):
        with safe_open(Path(model_dir) / name, framework="pt") as shard:
            found |= {key: (name, list(shard.get_slice(key).get_shape())) for key in shard.keys()}
    return found


def _read(path: Path, key: str):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as shard:
        return shard.get_tensor(key)
