"""Real GRPO steps on the real SmolLM2-135M (CPU): TRL's GRPOTrainer generating, our rewards scoring, the LoRA
trained (with a KL term) and saved; killed after its first checkpoint and resumed from it by a second process. Slow (~1-2 min)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lib.grpo.rewards import REWARD_NAMES
from lib.grpo.train import trl_log_probs_available

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("grpo_child.py")
SETTINGS = {"start_from": "base", "max_steps": 2, "prompts_per_step": 2, "num_generations": 2,
            "max_completion_length": 24, "overlong_buffer": 8, "save_steps": 1, "learning_rate": 1.0e-4,
            "beta": 0.04}  # a KL term: TRL's reference is the base (the fresh LoRA switched off)


def run_child(spec: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHILD), json.dumps(spec)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={"HF_HUB_OFFLINE": "1", **__import__("os").environ})


def test_two_real_grpo_steps_killed_after_the_first_resume_from_it(tmp_path):
    from safetensors.torch import load_file

    spec = {"out": str(tmp_path / "grpo"), "grpo": SETTINGS}
    if not trl_log_probs_available():  # TRL 1.15 on CPU torch, the GPU-versions environment: one clear error before anything loads
        refused = run_child(spec)
        assert refused.returncode == 1 and "Triton is not installed" in refused.stderr, refused.stderr[-2000:]
        assert not (tmp_path / "grpo" / "checkpoints").exists()
        return
    killed = run_child(spec | {"kill_after_checkpoint": 1})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL, after checkpoint-1 was marked complete
    assert not (tmp_path / "grpo" / "adapter").exists()
    resumed = run_child(spec)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["resumed_from"] == "checkpoint-1" and result["steps"] == 2
    assert "[06] resuming from checkpoint-1 (step 1)" in resumed.stdout
    # the log holds step 1 (restored from the checkpoint's trainer state) and step 2 (trained after the resume),
    # each with every reward, the KL, the length and the clipped share
    assert [entry["step"] for entry in result["log"]] == [1, 2]
    entry = result["log"][1]
    for name in REWARD_NAMES:
        assert f"rewards/{name}/mean" in entry
    assert entry["kl"] >= 0
    assert 0 <= entry["completions/clipped_ratio"] <= 1 and entry["completions/mean_length"] <= 24
    weights = load_file(tmp_path / "grpo" / "adapter" / "adapter_model.safetensors")
    assert any("lora_A" in key for key in weights) and any("lora_B" in key for key in weights)
    log = json.loads((tmp_path / "grpo" / "grpo_log.json").read_text())
    assert [e["step"] for e in log if "reward" in e] == [1, 2]
    assert entry["rewards/overlong/mean"] <= -entry["completions/clipped_ratio"]  # a cut completion gets -1
