"""A training process for the resume and data-parallel tests: 03's own `train_lora` on a tiny random Llama (the
SmolLM2 fixture tokenizer, 2 layers × 64) and seeded synthetic masked examples, with the CPU recipe's settings.

Usage: ``python tests/train/train_child.py '{"model_dir": ..., "out": ..., ...}'`` (also under ``torchrun``); prints
one JSON line: {"resumed_from", "losses", "steps"}. Spec keys: model_dir (made by `make_tiny_model`), out,
restart, examples (default 32), data_seed (0), step_sleep (seconds slept after each step, so a test can kill it
mid-run), kill_in_save_at (SIGKILL itself while saving the checkpoint of this step: after the adapter, before the
optimizer), recipe (key overrides).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

RECIPE_OVERRIDES = {"max_steps": 8, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 4,
                    "gradient_accumulation_steps": 1, "padding_free": True}


def make_tiny_model(folder: Path) -> Path:
    """A 2-layer Llama with the SmolLM2 fixture tokenizer's vocabulary, saved with that tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from lib.models import fixture_dir

    tokenizer = AutoTokenizer.from_pretrained(fixture_dir("smollm2"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def synthetic_examples(n: int, seed: int):
    """`n` masked examples of 20-80 tokens, the first third of each a prompt (label -100)."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    rows = {"input_ids": [], "labels": []}
    for _ in range(n):
        ids = [rng.randrange(100, 40000) for _ in range(rng.randint(20, 80))]
        rows["input_ids"].append(ids)
        rows["labels"].append([-100] * (len(ids) // 3) + ids[len(ids) // 3:])
    return Dataset.from_dict(rows)


def main(spec: dict) -> dict:
    from transformers import Trainer, TrainerCallback

    from lib.recipe import load_recipe
    from lib.train.backends import detect_backend, train_lora

    recipe = dataclasses.replace(load_recipe("smollm2_135m"), **(RECIPE_OVERRIDES | spec.get("recipe", {})))
    if spec.get("kill_in_save_at"):
        save_rest = Trainer._save_optimizer_and_scheduler

        def killed_while_saving(self, output_dir):
            if self.state.global_step == spec["kill_in_save_at"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return save_rest(self, output_dir)

        Trainer._save_optimizer_and_scheduler = killed_while_saving
    if spec.get("step_sleep"):
        class Slow(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                time.sleep(spec["step_sleep"])

        add_callback = Trainer.add_callback
        Trainer.__init__ = _after_init(Trainer.__init__, lambda trainer: add_callback(trainer, Slow()))
    data = synthetic_examples(spec.get("examples", 32), spec.get("data_seed", 0))
    result = train_lora(recipe, spec["model_dir"], data, 512, Path(spec["out"]), detect_backend(recipe),
                        restart=spec.get("restart", False), progress=False)
    return {"resumed_from": result.resumed_from, "losses": result.losses(), "steps": result.steps,
            "processes": result.processes, "holdout_losses": result.holdout_losses(),
            "best_checkpoint": result.best_checkpoint}


def _after_init(init, then):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        then(self)
    return wrapped


if __name__ == "__main__":
    out = main(json.loads(sys.argv[1]))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(out), flush=True)
