"""What 04_merge_export will need of the machine, known before 03 starts: RAM for the merge, disk for every file.

Usage: ``export_plan(load_recipe("mistral22b"))["disk_gib"]["total"]``

The merge runs in the recipe's `torch_dtype` (lib.modes: `merge_checked(..., recipe.torch_dtype)`), in memory when
the machine has the RAM, else shard by shard (lib.export.sharded_merge, about one base shard at a time). llama.cpp's
converter and quantizer stream tensors from memory-mapped files, so the GGUF steps need disk more than RAM.
"""
from __future__ import annotations

from lib.architectures import Architecture, load_architecture, lora_parameter_count, parameter_count
from lib.plan.gguf_size import estimate_gguf_bytes
from lib.plan.memory import DTYPE_BYTES, GIB, LORA_WEIGHT_BYTES
from lib.recipe import Recipe

# probes are cut to their first tokens: any token runs through every merged weight, while a whole 8k-token training
# conversation would cost tokens x vocab x 4 bytes of logits per forward (4 GB for Llama 3's 128k vocabulary)
MAX_PROBE_TOKENS = 256
PROBES = 3  # 04 checks the merge on the first three training conversations (lib.export.stage.merge_probe_texts)
# RAM of the in-memory merge beyond its weights, adapter and logits: runtime, PEFT's per-layer deltas, allocator
# slack. Measured (peak RSS, SmolLM2-135M, bf16 checkpoint merged to bf16): 0.83 GiB = 0.50 float32 weights + 0.25
# bf16 weights + 0.08; a fixed 1 GiB covers that with room for a larger model's per-layer temporaries
IN_MEMORY_MARGIN_BYTES = GIB


def gguf_estimates(recipe: Recipe, architecture: Architecture | None = None) -> dict[str, int]:
    """Estimated GGUF bytes for every file the export stage writes (F16 first, then the recipe's quant types), of
    the recipe's architecture or of `architecture` (a --tiny run's shrunk one)."""
    arch = architecture or load_architecture(recipe.architecture)
    return {quant: estimate_gguf_bytes(arch, quant) for quant in recipe.gguf_files()}


def in_memory_merge_bytes(float32_bytes: int, dtype_bytes: int, adapter_bytes: int, logits_bytes: int) -> int:
    """RAM the in-memory merge and its logit check need at their peak (the one rule: lib.export.merge uses it).

    The model is merged and checked in float32 (`lib.export.merge.merge_in_memory`): `float32_bytes`. Casting it to
    the merge dtype for saving (or reading a bf16 checkpoint into float32) holds `dtype_bytes` more (0 for a float32
    merge). Then the adapter, the kept logits (`probe_logits_bytes`) and `IN_MEMORY_MARGIN_BYTES`.
    """
    return float32_bytes + dtype_bytes + adapter_bytes + logits_bytes + IN_MEMORY_MARGIN_BYTES


def probe_logits_bytes(probe_count: int, vocab_size: int) -> int:
    """float32 logits the check keeps: adapter and merged, `MAX_PROBE_TOKENS` tokens per probe."""
    return 2 * probe_count * MAX_PROBE_TOKENS * vocab_size * 4


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
    cast = 0 if recipe.torch_dtype == "float32" else weights
    in_memory = in_memory_merge_bytes(params * 4, cast, adapter, probe_logits_bytes(PROBES, arch.vocab_size))
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
