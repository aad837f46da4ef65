"""Data-parallel training for real: 03's `train_lora` in 2 CPU processes (torchrun, gloo) trains the same loss
curve as 1 process at the same global batch (≤ 1e-4 per step), and one adapter is written, by rank 0."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("train_child.py")
ROOT = Path(__file__).resolve().parents[2]
# dropout off: each rank draws its own masks, so with dropout the two runs would differ by more than rounding
SAME = {"lora_dropout": 0.0, "max_steps": 6}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    sys.path.insert(0, str(CHILD.parent))
    from train_child import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama-ddp"))


def run(cmd: list[str], spec: dict) -> list[dict]:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, str(CHILD), json.dumps(spec)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tiny_model, tmp_path):
    one = run([sys.executable], {"model_dir": str(tiny_model), "out": str(tmp_path / "one"),
                                 "recipe": SAME | {"per_device_train_batch_size": 4}})[0]
    two_out = tmp_path / "two"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    reports = run(launcher, {"model_dir": str(tiny_model), "out": str(two_out),
                             "recipe": SAME | {"per_device_train_batch_size": 2}})
    assert len(reports) == 1, "only rank 0 reports"
    two = reports[0]
    assert two["processes"] == 2 and one["processes"] == 1
    assert len(one["losses"]) == len(two["losses"]) == 6
    worst = max(abs(a[1] - b[1]) for a, b in zip(one["losses"], two["losses"]))
    print(f"2 gloo processes vs 1: per-step loss max |Δ| {worst:.3g}")
    assert worst <= 1e-4, f"per-step loss differs by {worst}: {one['losses']} vs {two['losses']}"
    assert (two_out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(two_out.glob(".adapter.*")), "a second writer left a temporary adapter folder"
