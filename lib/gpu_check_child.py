"""One path of `python -m lib gpu-check`, in its own process: train the saved random model through the project's
`lib.train.backends.train_lora`, measure the path's peak memory and set it next to the memory plan's prediction for
the same shapes (`lib.plan.memory.plan_training_memory`).

Usage: ``lib.gpu_check.run_child`` starts ``python -c CHILD_CODE SPEC.json RESULT.json``, which calls
``import_first`` and then ``main(spec_file, result_file, import_failure)``.
"""
from __future__ import annotations

import contextlib
import json
import time
import traceback
from pathlib import Path
from typing import Iterator

from datasets import Dataset

from lib.architectures import architecture_from_config
from lib.gpu_check import FAMILY, PATHS_BY_NAME, SEED, TEACHER_FAMILY, TOKENIZER, CheckPath, loss_fell
from lib.plan.memory import GIB, MemoryPlan
from lib.plan.recipe_plan import memory_plan as recipe_memory_plan
from lib.recipe import Recipe, recipe_from_dict
from lib.tiny import RssPeak
from lib.train.backends import Backend, select_backend, train_lora

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# high for LoRA on purpose: the check asks whether gradients reach the adapters, so a fixed batch must be
# visibly overfitted within a few steps (a constant schedule: no warm-up to wait for)
LEARNING_RATE = 2e-3
CUDA_PEAK, CPU_PEAK = "cuda max_memory_allocated", "cpu peak RSS growth"
WITHIN = 0.15  # the plan's target accuracy against a measured peak
CPU_NOTE = ("ratio = peak RSS growth / the CPU plan of these shapes (no CUDA context), reported but not judged: "
            "resident memory also holds Python's and the allocator's own, which the plan does not model")
CUDA_NOTE = ("ratio = measured / (plan - cuda_context): max_memory_allocated counts tensors only, not the CUDA "
             "context, cuBLAS workspaces or allocator slack that the plan's cuda_context part stands for (reserved "
             "shows the allocator's high-water mark); paged optimizer state lives in CUDA unified memory, outside it")


def main(spec_file: str, result_file: str, import_failure: str | None) -> int:
    """Run the spec's path (or report why it could not start) and write its result as JSON; 0 unless this
    process itself breaks (the path's own failure is in the result)."""
    spec = json.loads(Path(spec_file).read_text())
    if import_failure:  # installed (else it would not have been started) but broken: a failure, not a skip
        result = {"ran": False, "ok": False, "reason": import_failure}
    else:
        result = run_path(PATHS_BY_NAME[spec["path"]], spec)
    Path(result_file).write_text(json.dumps(result))
    return 0


def run_path(path: CheckPath, spec: dict) -> dict:
    """Train `path` for the spec's steps; the facts of the report's entry for it (an exception is a failed path)."""
    start = time.time()
    facts: dict = {"ran": True, "ok": False}
    try:
        recipe = check_recipe(path, spec)
        backend = select_backend(recipe, has_cuda=spec["device"] == "cuda", has_unsloth=path.unsloth)
        plan = memory_plan(recipe, backend, spec)
        facts.update(backend=backend.as_dict(), dtype=recipe.torch_dtype,
                     plan_gib=round(plan.total_bytes / GIB, 3))
        dataset = Dataset.from_dict({"input_ids": spec["input_ids"], "labels": spec["input_ids"]})
        with peak_memory(backend.on_gpu) as measured:
            result = train_lora(recipe, spec["student_dir"], dataset, recipe.max_length, Path(spec["out_dir"]),
                                backend, teacher_path=spec["teacher_dir"] if path.distill else "")
    except Exception as err:  # the report names the failure; the parent turns it into exit code 1
        facts.update(error=f"{type(err).__name__}: {err}"[:2000], traceback=traceback.format_exc()[-3000:],
                     seconds=round(time.time() - start, 1))
        return facts
    losses = [round(loss, 4) for _, loss in result.losses()]
    tokens = result.steps * recipe.per_device_train_batch_size * recipe.max_length
    facts.update(ok=loss_fell(losses), loss_fell=loss_fell(losses), loss_first=losses[0] if losses else None,
                 loss_last=losses[-1] if losses else None, losses=losses, steps=result.steps,
                 trainable_params=result.trainable_params, seconds=round(time.time() - start, 1),
                 train_seconds=round(result.seconds, 2), tokens_per_s=round(tokens / max(result.seconds, 1e-9)),
                 memory=memory_versus_plan(measured, plan))
    return facts


def check_recipe(path: CheckPath, spec: dict) -> Recipe:
    """The recipe a path trains with: the llama32_1b_kd family, LoRA r16 on every projection, the spec's shapes,
    logging every step (the loss curve), never saving a checkpoint mid-run."""
    shapes, steps = spec["shapes"], spec["steps"]
    return recipe_from_dict({
        "name": f"gpu-check-{path.name}", "description": "python -m lib gpu-check (random weights)",
        "hardware": spec["device"], "vram_budget_gib": float(spec["budget_gib"]),
        "model_name_or_path": spec["student_dir"], "architecture": FAMILY, "tokenizer_fixture": TOKENIZER,
        "load_in_4bit": path.load_in_4bit, "torch_dtype": spec["dtype"],
        "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_target_modules": list(LORA_TARGETS),
        "max_length": shapes["max_length"], "max_steps": steps, "per_device_train_batch_size": shapes["batch"],
        "learning_rate": LEARNING_RATE, "lr_scheduler_type": "constant", "optim": path.optim,
        # as the GPU recipes do (llama32_3b), on a CPU too: the trainer's flags are the same wherever it runs, so a
        # CPU run already checks that gradients reach the adapters through recomputed layers
        "gradient_checkpointing": True, "logging_steps": 1, "save_steps": steps + 1, "seed": SEED,
        "teacher_model_name_or_path": spec["teacher_dir"] if path.distill else "",
        "teacher_architecture": TEACHER_FAMILY if path.distill else "", "teacher_load_in_4bit": False,
    })


def memory_plan(recipe: Recipe, backend: Backend, spec: dict) -> MemoryPlan:
    """The plan for exactly what this path trains: its shapes, and its backend's device, 4-bit, optimizer and
    checkpointing (`lib.plan.recipe_plan.memory_plan`, the plan 03 checks)."""
    teacher = (architecture_from_config(TEACHER_FAMILY, spec["teacher_config"])
               if recipe.teacher_model_name_or_path else None)
    return recipe_memory_plan(recipe, recipe.max_length, backend,
                              architecture=architecture_from_config(FAMILY, spec["student_config"]),
                              teacher_architecture=teacher)


@contextlib.contextmanager
def peak_memory(on_gpu: bool) -> Iterator[dict]:
    """Measure the peak memory of the `with` block into the yielded dict: {"kind", "bytes", "reserved_bytes"}.

    CUDA: the allocator's own peak (reset at entry; this process has touched no GPU memory before). CPU: no
    allocator statistic to reset, so the resident set size is sampled in a thread and its growth reported.
    """
    figures: dict = {}
    if on_gpu:
        import torch

        torch.cuda.reset_peak_memory_stats()
        try:
            yield figures
        finally:
            torch.cuda.synchronize()
            figures.update(kind=CUDA_PEAK, bytes=torch.cuda.max_memory_allocated(),
                           reserved_bytes=torch.cuda.max_memory_reserved())
        return
    rss = RssPeak()
    try:
        with rss:
            yield figures
    finally:
        if rss.peak:  # 0 when RssPeak could not start: its own error is the one to see
            figures.update(kind=CPU_PEAK, bytes=rss.peak - rss.before)


def memory_versus_plan(measured: dict, plan: MemoryPlan) -> dict:
    """The measured peak next to the plan's prediction; on CUDA their ratio and whether it is within 15 %."""
    context = plan.components.get("cuda_context", 0)
    comparable = plan.total_bytes - context
    figures = {"measured": measured["kind"], "measured_bytes": measured["bytes"],
               "measured_gib": round(measured["bytes"] / GIB, 3), "plan_bytes": plan.total_bytes,
               "plan_gib": round(plan.total_bytes / GIB, 3), "plan_without_cuda_context_bytes": comparable,
               "plan_components_gib": {k: round(v / GIB, 4) for k, v in plan.components.items()}}
    ratio = measured["bytes"] / comparable
    if measured["kind"] != CUDA_PEAK:  # reported, not judged: see CPU_NOTE
        return {**figures, "ratio": round(ratio, 3), "within_15_percent": None, "note": CPU_NOTE}
    return {**figures, "reserved_gib": round(measured["reserved_bytes"] / GIB, 3), "ratio": round(ratio, 3),
            "within_15_percent": abs(ratio - 1) <= WITHIN, "note": CUDA_NOTE}
