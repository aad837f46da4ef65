"""What 04_merge_export will need of the machine, known before 03 starts: RAM for the merge, disk for every file.

Usage: ``export_plan(load_recipe("mistral22b"))["disk_gib"]["total"]``

The merge runs in the recipe's `torch_dtype` (lib.modes: `merge_checked(..., recipe.torch_dtype)`), in memory when
the machine has the RAM, else shard by shard (lib.export.sharded_merge, about one base shard at a time). llama.cpp's
converter and quantizer stream tensors from memory-mapped files, so the GGUF steps need disk more than RAM.
"""
from __future__ import annotations

import math

from lib.architectures import load_architecture, lora_parameter_count, parameter_count
from lib.plan.gguf_size import estimate_gguf_bytes
from lib.plan.memory import DTYPE_BYTES, GIB, LORA_WEIGHT_BYTES
from lib.recipe import Recipe

# RAM the in-memory merge needs beyond the weights: the same rule as lib.export.merge.in_memory_merge_bytes (its
# IN_MEMORY_MARGIN_BYTES / IN_MEMORY_MARGIN_FRACTION: measured +0.27 GiB over the weights for SmolLM2-135M; 2 GiB
# or 10 % of the weights, whichever is larger, for the probes' logits and transient copies). Kept equal by
# tests/plan/test_export_plan.py; lib/plan cannot import lib/export (the stages sit above lib/plan).
MERGE_MARGIN_BYTES = 2 * GIB
MERGE_MARGIN_FRACTION = 0.10


def gguf_estimates(recipe: Recipe) -> dict[str, int]:
    """Estimated GGUF bytes for every file the export stage writes (F16 first, then the recipe's quant types)."""
    arch = load_architecture(recipe.architecture)
    return {quant: estimate_gguf_bytes(arch, quant) for quant in recipe.gguf_files()}


def in_memory_merge_bytes(weight_bytes: int, adapter_bytes: int) -> int:
    """RAM of PEFT's in-memory merge: the weights in the merge dtype (merged in place, so once), the adapter, and
    the margin above."""
    return weight_bytes + adapter_bytes + max(MERGE_MARGIN_BYTES, math.ceil(MERGE_MARGIN_FRACTION * weight_bytes))


def export_plan(recipe: Recipe) -> dict:
    """04's needs in bytes and GiB: RAM for the merge, disk for the base download, adapter, merged folder and each
    GGUF file, and how the merge will run (in memory or shard by shard, decided by the RAM then available).

    The base download is counted in the checkpoint's own dtype (the bundled config's torch_dtype); the adapter in
    fp32 (PEFT keeps LoRA weights in fp32 and saves them so); safetensors headers are negligible.
    """
    arch = load_architecture(recipe.architecture)
    params = parameter_count(arch)
    weights = params * DTYPE_BYTES[recipe.torch_dtype]
    adapter = lora_parameter_count(arch, recipe.lora_r, list(recipe.lora_target_modules)) * LORA_WEIGHT_BYTES
    in_memory = in_memory_merge_bytes(weights, adapter)
    ram = {"base_weights": weights, "adapter": adapter, "in_memory_merge": in_memory}
    disk = {"base_download": params * DTYPE_BYTES[arch.torch_dtype or recipe.torch_dtype], "adapter": adapter,
            "merged": weights, **{f"{quant}.gguf": size for quant, size in gguf_estimates(recipe).items()}}
    disk["total"] = sum(disk.values())
    return {"merge_dtype": recipe.torch_dtype, "ram_bytes": ram, "disk_bytes": disk,
            "ram_gib": {k: round(v / GIB, 2) for k, v in ram.items()},
            "disk_gib": {k: round(v / GIB, 2) for k, v in disk.items()},
            "merge": f"in memory if available RAM >= {in_memory / GIB:.1f} GiB, else shard by shard "
                     "(one base shard at a time)"}


def export_plan_rows(plan: dict) -> dict:
    """`export_plan` flattened to one line per figure (GiB), for a two-column table."""
    return {"merge": plan["merge"], **{f"RAM: {k} (GiB)": v for k, v in plan["ram_gib"].items()},
            **{f"disk: {k} (GiB)": v for k, v in plan["disk_gib"].items()}}
