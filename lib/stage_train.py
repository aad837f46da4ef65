"""Stage 03: LoRA SFT (or logit distillation) of the recipe, or its exact dry-run check.

Usage: ``outcome = run_training(cfg, masked)``

Without a model source (dry-run) nothing is downloaded: the recipe's architecture is instantiated on the meta
device with its LoRA adapters, the TRL config is built and validated, and the memory plan is computed.
"""
from __future__ import annotations

from lib.plan import memory_plan
from lib.run_config import RunConfig, write_manifest
from lib.stage_masking import MaskedRows
from lib import training

STAGE = "03_train"


def run_training(cfg: RunConfig, masked: MaskedRows) -> dict:
    """Train (real run) or validate (dry-run); returns the facts also written to the stage manifest."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    facts = {"memory_plan_gib": memory_plan(recipe).as_dict()["total_gib"], "examples": len(masked.examples)}
    if cfg.model_source is None:
        facts.update(_validate_on_meta_device(cfg, out))
    else:
        facts.update(_train(cfg, masked, out))
    write_manifest(cfg, STAGE, {"masked_examples": len(masked.examples)}, {"stage_dir": out}, facts)
    return facts


def _validate_on_meta_device(cfg: RunConfig, out) -> dict:
    recipe = cfg.recipe
    _, trainable, total = training.meta_lora_model(recipe)
    training.sft_config(recipe, out / "checkpoints", on_gpu=False)  # TRL validates every argument it can here
    facts = {"mode": "dry-run (meta device, no weights)", "trainable_params": trainable, "total_params": total,
             "backend_with_cuda_and_unsloth": training.select_backend(recipe, has_cuda=True, has_unsloth=True),
             "gpu_sft_config": {k: v for k, v in training.sft_kwargs(recipe, out, on_gpu=True).items()
                                if k != "output_dir"}}
    if recipe.teacher_architecture:
        from lib.architectures import load_architecture, parameter_count

        facts["teacher_params"] = parameter_count(load_architecture(recipe.teacher_architecture))
    return facts


def _train(cfg: RunConfig, masked: MaskedRows, out) -> dict:
    from lib.base_model import resolve_base_model

    recipe = cfg.recipe
    backend = training.detect_backend(recipe)
    teacher = resolve_base_model(recipe.teacher_model_name_or_path) if recipe.teacher_model_name_or_path else ""
    result = training.train_lora(recipe, resolve_base_model(cfg.model_source), masked.examples, out, backend,
                                 teacher_path=teacher)
    training.plot_loss(result, out / "loss.png", f"{recipe.name}: LoRA r={recipe.lora_r} on {backend}")
    losses = result.losses()
    return {"mode": "trained", "backend": backend, "adapter_dir": str(result.adapter_dir),
            "trainable_params": result.trainable_params, "total_params": result.total_params,
            "steps": result.steps, "train_seconds": round(result.seconds, 1),
            "first_loss": losses[0][1] if losses else None, "last_loss": losses[-1][1] if losses else None}


def loss_curve(cfg: RunConfig):
    """The loss plot of this run for display, or a note saying why there is none (dry-run)."""
    from IPython.display import Image, Markdown

    path = cfg.run_dir / STAGE / "loss.png"
    return Image(filename=str(path)) if path.is_file() else Markdown("_No loss curve: nothing was trained "
                                                                      "(dry-run on the meta device)._")
