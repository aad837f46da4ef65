"""Training speed: 03's trainer against TRL's `SFTTrainer`, in one process, on the same masked examples.

Usage: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_speed.py [--examples 48] [--levers] [--kd]``

The examples are the CPU recipe's (smollm2_135m): the first `--examples` of what its 01 and 02 stages write (run
into ``runs/benchmarks/train_speed-data`` first if missing). Every side trains the same LoRA adapters (the
recipe's r, alpha, dropout, all 7 projections) on SmolLM2-135M in fp32 from the same seed, 4 examples per optimizer
step (the recipe's global batch), the recipe's learning rate and schedule, for `examples / 4` steps:

- ``trl_default``: `SFTTrainer` with TRL's defaults otherwise: gradient checkpointing on, bf16 autocast on, the
  batch padded to its longest example (TRL's own default batch is 8; 4 here so both see the same steps).
- ``trl_best``: TRL at its best CPU settings: no gradient checkpointing, no bf16, ``padding_free=True`` (one row,
  `position_ids` per example; transformers' sdpa then masks across examples itself).
- ``ours``: `lib.train.backends.train_lora` with the recipe as shipped — the 03 code path.
- with ``--levers``, ours with one lever taken out at a time (what each gives), and with the recipe's dtype set to
  bfloat16 (bf16 weights, and the Trainer's bf16 autocast).

Tokens/s counts the examples' real tokens (no padding) over `trainer.train()`'s wall time. Model FLOP/s: the
matmuls a step needs (`step_flops`), over the time, as a share of the machine's peak measured here with a plain
`torch.matmul` loop (2048², fp32). Prints one JSON object, writes it and the loss curves (PNG) under
``runs/benchmarks/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `lib` when run as a plain script

from lib.paths import PROJECT_ROOT, atomic_write_text  # noqa: E402

RECIPE = "smollm2_135m"
KD_RECIPE = "smollm2_135m_kd"  # --kd: timed on the same examples; its losses (KL + CE) are not plotted with SFT's
DATA_DIR = PROJECT_ROOT / "runs" / "benchmarks" / "train_speed-data"
BATCH = 4  # examples per optimizer step: the recipe's global batch


def masked_examples(n: int):
    """The first `n` masked examples of the CPU recipe, made by its own 01 and 02 stages when missing."""
    from lib.masking.dataset import read_masked
    from lib.runner import run_recipe

    path = DATA_DIR / "02_masking" / "masked.parquet"
    if not path.is_file():
        run_recipe(RECIPE, stages="01,02", run_dir=str(DATA_DIR))
    data = read_masked(path).select_columns(["input_ids", "labels"])
    if len(data) < n:
        raise SystemExit(f"{path} has {len(data)} examples, --examples asks for {n}")
    return data.select(range(n))


def matmul_peak_flops(size: int = 2048, seconds: float = 3.0) -> float:
    """FLOP/s of a plain fp32 `torch.matmul` loop on this machine now (the best of 1-second windows)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best, end = 0.0, time.time() + seconds
    while time.time() < end:
        start, n = time.time(), 0
        while time.time() - start < 1.0:
            a @ b
            n += 1
        best = max(best, 2 * size**3 * n / (time.time() - start))
    return best


def step_flops(config, recipe, examples) -> float:
    """Matmul FLOPs of training on `examples` (forward + backward): the frozen projections and the LM head (at the
    trained positions only, as both TRL's loss and ours compute it) forward and for the input gradient (4 FLOPs
    per weight per token), each LoRA pair forward, input and weight gradient (6), attention scores and values
    (causal: half the square, 3 × forward). Embedding lookups, norms and activations are not counted."""
    d, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q_out, kv_out = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    shapes = {"q_proj": (d, q_out), "k_proj": (d, kv_out), "v_proj": (d, kv_out), "o_proj": (q_out, d),
              "gate_proj": (d, config.intermediate_size), "up_proj": (d, config.intermediate_size),
              "down_proj": (config.intermediate_size, d)}
    frozen = layers * sum(i * o for i, o in shapes.values())
    lora = layers * sum(recipe.lora_r * (i + o) for name, (i, o) in shapes.items()
                        if name in recipe.lora_target_modules)
    flops = 0.0
    for row in examples:
        n, trained = len(row["input_ids"]), sum(label != -100 for label in row["labels"])
        flops += 4 * frozen * n + 4 * config.vocab_size * d * trained + 6 * lora * n
        flops += 3 * layers * 2 * 2 * q_out * n * (n + 1) / 2
    return flops


def lora_config(recipe):
    from lib.train.backends import lora_config as recipe_lora

    return recipe_lora(recipe)


def trl_side(name: str, recipe, model_path: str, data, out: Path, **overrides) -> dict:
    """Train with TRL's SFTTrainer directly: `overrides` on top of TRL's defaults."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(recipe.seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), lora_config(recipe))
    args = SFTConfig(output_dir=str(out / name), max_steps=len(data) // BATCH, per_device_train_batch_size=BATCH,
                     learning_rate=recipe.learning_rate, lr_scheduler_type=recipe.lr_scheduler_type,
                     warmup_steps=recipe.warmup_steps, seed=recipe.seed, logging_steps=1, save_strategy="no",
                     report_to=[], disable_tqdm=True, max_length=None, **overrides)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data,
                         processing_class=AutoTokenizer.from_pretrained(model_path))
    start = time.time()
    trainer.train()
    return {"seconds": time.time() - start, "log": trainer.state.log_history}


def our_side(recipe, model_path: str, data, out: Path, backend=None, teacher_path: str = "") -> dict:
    """Train through 03's own code (`train_lora`) with `recipe` (shortened to the benchmark's steps)."""
    from lib.train.backends import detect_backend, train_lora

    recipe = dataclasses.replace(recipe, max_steps=len(data) // (recipe.per_device_train_batch_size
                                                                 * recipe.gradient_accumulation_steps),
                                 logging_steps=1, save_steps=10**6)
    result = train_lora(recipe, model_path, data, recipe.max_length, out, backend or detect_backend(recipe),
                        teacher_path=teacher_path)
    return {"seconds": result.seconds, "log": result.log_history}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=48, help="masked examples (a multiple of 4)")
    parser.add_argument("--levers", action="store_true", help="also time ours with each lever taken out")
    parser.add_argument("--kd", action="store_true",
                        help="also time the CPU distillation recipe (smollm2_135m_kd: its teacher, the demo's merged "
                             "model, must exist) on the same examples: its cost per token against SFT's")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "runs" / "benchmarks" / "train_speed.json"))
    args = parser.parse_args(argv)
    if args.examples % BATCH:
        parser.error(f"--examples must be a multiple of {BATCH}")
    import torch
    import transformers
    import trl

    from lib.modes import make_run_config
    from lib.train.backends import detect_backend

    cfg = make_run_config(RECIPE)
    recipe, model_path = cfg.recipe, cfg.mode.model_path
    data = masked_examples(args.examples)
    tokens = sum(len(ids) for ids in data["input_ids"])
    config = transformers.AutoConfig.from_pretrained(model_path)
    flops = step_flops(config, recipe, data)
    peak = matmul_peak_flops()
    sides = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plans = {
            "ours": lambda: our_side(recipe, model_path, data, out / "ours"),
            "trl_best": lambda: trl_side("trl_best", recipe, model_path, data, out, gradient_checkpointing=False,
                                         bf16=False, padding_free=True),
            # use_cpu: TRL's default bf16=True is refused on a machine without a GPU unless the CPU is asked for
            "trl_default": lambda: trl_side("trl_default", recipe, model_path, data, out, use_cpu=True),
        }
        if args.levers:
            backend = detect_backend(recipe)
            plans |= {
                "ours_without_packed_attention": lambda: our_side(
                    recipe, model_path, data, out / "a", dataclasses.replace(backend, packed_attention=False)),
                "ours_without_fast_dropout": lambda: our_side(
                    recipe, model_path, data, out / "b", dataclasses.replace(backend, fast_lora_dropout=False)),
                "ours_without_trained_positions_loss": lambda: our_side(
                    recipe, model_path, data, out / "e", dataclasses.replace(backend, trained_positions_loss=False)),
                "ours_without_packing": lambda: our_side(
                    dataclasses.replace(recipe, padding_free=False, per_device_train_batch_size=1,
                                        gradient_accumulation_steps=BATCH),
                    model_path, data, out / "f", dataclasses.replace(backend, packed_attention=False)),
                "ours_before_issue_12": lambda: our_side(
                    dataclasses.replace(recipe, padding_free=False, per_device_train_batch_size=1,
                                        gradient_accumulation_steps=BATCH),
                    model_path, data, out / "c", dataclasses.replace(
                        backend, packed_attention=False, fast_lora_dropout=False, trained_positions_loss=False)),
                "ours_with_bf16": lambda: our_side(
                    dataclasses.replace(recipe, torch_dtype="bfloat16"), model_path, data, out / "d"),
            }
        if args.kd:
            from lib.models import resolve_base_model
            from lib.recipe import load_recipe

            kd_recipe = load_recipe(KD_RECIPE)
            teacher = resolve_base_model(kd_recipe.teacher_model_name_or_path)
            plans["kd_ours"] = lambda: our_side(kd_recipe, model_path, data, out / "kd", teacher_path=teacher)
        for name, run in plans.items():
            print(f"[train_speed] {name} …", file=sys.stderr, flush=True)
            side = run()
            losses = [row["loss"] for row in side["log"] if "loss" in row]
            sides[name] = {"seconds": round(side["seconds"], 2), "tokens_per_s": round(tokens / side["seconds"], 1),
                           "model_gflop_per_s": round(flops / side["seconds"] / 1e9, 1),
                           "share_of_matmul_peak": round(flops / side["seconds"] / peak, 3),
                           "losses": [round(x, 4) for x in losses]}
    ours = sides["ours"]["tokens_per_s"]
    report = {
        "examples": len(data), "tokens": tokens, "optimizer_steps": len(data) // BATCH,
        "model_gflop": round(flops / 1e9, 1), "matmul_peak_gflop_per_s": round(peak / 1e9, 1),
        "ratio_ours_over_trl_default": round(ours / sides["trl_default"]["tokens_per_s"], 2),
        "ratio_ours_over_trl_best": round(ours / sides["trl_best"]["tokens_per_s"], 2),
        "sides": sides,
        "max_abs_loss_difference_ours_vs_trl_default": round(max(
            abs(a - b) for a, b in zip(sides["ours"]["losses"], sides["trl_default"]["losses"])), 4),
        **({"ratio_kd_over_ours": round(sides["kd_ours"]["tokens_per_s"] / ours, 2)} if "kd_ours" in sides else {}),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    out_json = Path(args.out)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_json, json.dumps(report, indent=1))
    plot_losses(sides, out_json.with_suffix(".png"))
    print(json.dumps({k: v for k, v in report.items() if k != "sides"}
                     | {"tokens_per_s": {k: v["tokens_per_s"] for k, v in sides.items()}}, indent=1))
    return report


def plot_losses(sides: dict, path: Path) -> None:
    """The loss per optimizer step of every side, overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=90)
    for name, side in sides.items():
        if name.startswith("kd_"):  # another loss (KL + CE): not comparable on this axis
            continue
        ax.plot(range(1, len(side["losses"]) + 1), side["losses"], marker="o", markersize=3,
                label=f"{name} ({side['tokens_per_s']:.0f} tok/s)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_title(f"{RECIPE}: same examples, same LoRA, same seed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
