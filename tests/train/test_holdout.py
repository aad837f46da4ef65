"""The held-out loss: a seeded split of 02's examples never trained, its loss logged every holdout_eval_steps, and
with keep_best_checkpoint the adapter 03 saves is the checkpoint with the lowest one."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.recipe import ParamsError, load_recipe
from lib.train.backends import holdout_kwargs, split_holdout

CHILD = Path(__file__).with_name("train_child.py")
ROOT = Path(__file__).resolve().parents[2]


def test_split_is_seeded_disjoint_and_keeps_the_training_order():
    from datasets import Dataset

    data = Dataset.from_dict({"input_ids": [[i] for i in range(20)], "labels": [[i] for i in range(20)]})
    train, held = split_holdout(data, 5, seed=3)
    ids = [r[0] for r in train["input_ids"]]
    assert len(held) == 5 and len(train) == 15 and ids == sorted(ids)
    assert not set(ids) & {r[0] for r in held["input_ids"]}
    assert split_holdout(data, 5, seed=3)[1]["input_ids"] == held["input_ids"]
    assert split_holdout(data, 0, seed=3) == (data, None)
    with pytest.raises(ValueError, match="smaller than the 20"):
        split_holdout(data, 20, seed=3)


def test_recipe_keys_are_checked(tmp_path):
    text = (ROOT / "params" / "smollm2_135m.yaml").read_text()
    for extra, message in [("keep_best_checkpoint: true\n", "needs holdout_rows > 0"),
                           ("holdout_rows: 8\nholdout_eval_steps: 30\nkeep_best_checkpoint: true\n",
                            "save_steps \\(80\\) must be a multiple of holdout_eval_steps \\(30\\)")]:
        (tmp_path / "r.yaml").write_text(text + extra)
        with pytest.raises(ParamsError, match=message):
            load_recipe("r", tmp_path)


def test_trainer_arguments():
    recipe = dataclasses.replace(load_recipe("smollm2_135m"), holdout_rows=8, holdout_eval_steps=2,
                                 keep_best_checkpoint=True, save_steps=4)
    kwargs = holdout_kwargs(recipe)
    assert kwargs["eval_steps"] == 2 and kwargs["load_best_model_at_end"] and not kwargs["greater_is_better"]
    assert holdout_kwargs(load_recipe("smollm2_135m")) == {}


@pytest.mark.slow
def test_the_best_checkpoint_by_held_out_loss_is_the_saved_adapter(tmp_path):
    sys.path.insert(0, str(CHILD.parent))
    from train_child import make_tiny_model

    model = make_tiny_model(tmp_path / "model")
    spec = {"model_dir": str(model), "out": str(tmp_path / "run"), "examples": 40,
            "recipe": {"holdout_rows": 8, "holdout_eval_steps": 2, "keep_best_checkpoint": True, "save_steps": 2,
                       "max_steps": 6, "learning_rate": 5e-3}}
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(CHILD), json.dumps(spec)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = [s for s, _ in out["holdout_losses"]]
    assert steps == [2, 4, 6]
    best_step = min(out["holdout_losses"], key=lambda sl: sl[1])[0]
    assert out["best_checkpoint"] == f"checkpoint-{best_step}"
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    best = load_file(tmp_path / "run" / "checkpoints" / f"checkpoint-{best_step}" / "adapter_model.safetensors")
    assert saved.keys() == best.keys() and all((saved[k] == best[k]).all() for k in saved)
