"""Resume after SIGKILL, for real: 03's `train_lora` in a subprocess, killed mid-run and while saving a checkpoint,
then run again, ends with the same adapter and the same loss curve as a run never interrupted (CPU fp32: ≤ 1e-6)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.train.resume import MARKER, ResumeRefused, checkpoints, resume_point

CHILD = Path(__file__).with_name("train_child.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    sys.path.insert(0, str(CHILD.parent))
    from train_child import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def start(spec: dict) -> subprocess.Popen:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(CHILD), json.dumps(spec)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(spec: dict) -> dict:
    proc = start(spec)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not path.is_file():
        assert proc.poll() is None, f"child ended before {path} appeared: {proc.communicate()[1][-3000:]}"
        assert time.time() < end, f"no {path} after {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_killed_twice_resumed_equals_uninterrupted(tiny_model, tmp_path):
    base = {"model_dir": str(tiny_model)}
    reference = finish(base | {"out": str(tmp_path / "straight")})
    assert reference["steps"] == 8 and reference["resumed_from"] == ""

    out = tmp_path / "killed"
    spec = base | {"out": str(out)}
    # 1. SIGKILL while the step-4 checkpoint is half written (adapter saved, optimizer not): it must not count
    proc = start(spec | {"kill_in_save_at": 4})
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    ckpt = out / "checkpoints"
    assert [(s, (p / MARKER).is_file()) for s, p in checkpoints(ckpt)] == [(2, True), (4, False)]
    # 2. resume (from step 2), then SIGKILL at a random moment after the step-4 checkpoint is complete
    proc = start(spec | {"step_sleep": 0.3})
    wait_for(ckpt / "checkpoint-4" / MARKER, proc)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # 3. resume again and finish
    resumed = finish(spec)
    assert resumed["resumed_from"] in {"checkpoint-4", "checkpoint-6"} and resumed["steps"] == 8

    assert [s for s, _ in resumed["losses"]] == [s for s, _ in reference["losses"]] == list(range(1, 9))
    assert [x for _, x in resumed["losses"]] == pytest.approx([x for _, x in reference["losses"]], abs=1e-6)
    a, b = adapter(tmp_path / "straight"), adapter(out)
    assert a.keys() == b.keys() and len(a) > 0
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"resumed after 2 kills vs uninterrupted: adapter max |Δ| {worst:.3g}, losses {resumed['losses']}")
    assert worst <= 1e-6, f"max |Δ| between the adapters: {worst}"
    # …and the adapter did train: it is not the initial one (B starts at zero)
    assert max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k) > 1e-4


@pytest.mark.slow
def test_other_data_is_refused_restart_starts_over_and_a_finished_run_trains_anew(tiny_model, tmp_path):
    spec = {"model_dir": str(tiny_model), "out": str(tmp_path / "run")}
    proc = start(spec | {"kill_in_save_at": 4})  # leaves checkpoint-2, complete
    proc.communicate(timeout=600)
    proc = start(spec | {"data_seed": 1})
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "the masked examples (02's output) changed" in err and "--restart" in err
    again = finish(spec | {"data_seed": 1, "restart": True})
    assert again["resumed_from"] == "" and again["steps"] == 8
    # finished: the same command trains anew instead of resuming at the last step (or refusing other settings)
    anew = finish(spec | {"data_seed": 2})
    assert anew["resumed_from"] == "" and anew["steps"] == 8 and len(anew["losses"]) == 8


def test_resume_point_rules(tmp_path):
    fingerprint = {"recipe": "r", "recipe_keys": {"learning_rate": 0.001}, "data_sha": "b", "backend": {},
                   "processes": 1}
    folder = tmp_path / "checkpoints"
    assert resume_point(folder, fingerprint) == (None, [])
    for step, complete in [(2, True), (4, True), (6, False)]:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (folder / f"checkpoint-{step}" / MARKER).write_text(json.dumps(fingerprint | {"step": step}))
    (folder / "checkpoint-x").mkdir()  # not the Trainer's: left alone
    start_from, notes = resume_point(folder, fingerprint)
    assert start_from == folder / "checkpoint-4" and not (folder / "checkpoint-6").exists()
    assert notes == ["checkpoint-6: no completion marker (killed while saving, or written by an older version), "
                     "deleted", "resuming from checkpoint-4 (step 4)"]
    other = fingerprint | {"recipe_keys": {"learning_rate": 0.002}, "processes": 2}
    with pytest.raises(ResumeRefused, match=r"learning_rate: 0.001 -> 0.002; data-parallel processes: 1 -> 2"):
        resume_point(folder, other)
    # another process of a data-parallel run picks the same checkpoint and deletes nothing
    assert resume_point(folder, fingerprint, restart=True, may_delete=False) == (None, [])
    assert (folder / "checkpoint-4").is_dir()
    assert resume_point(folder, fingerprint, restart=True) == (
        None, [f"restart: deleted 2 checkpoint(s) in {folder}; training from step 0"])
    assert not folder.exists() and not list(tmp_path.glob(".checkpoints*"))


def test_what_cannot_change_the_adapter_does_not_block_a_resume():
    import dataclasses

    from lib.recipe import load_recipe
    from lib.train.resume import training_keys

    recipe = load_recipe("smollm2_135m")
    same = dataclasses.replace(recipe, eval_rows=7, save_steps=3, logging_steps=9, quant_types=["Q8_0"])
    assert training_keys(same) == training_keys(recipe)
    assert training_keys(dataclasses.replace(recipe, learning_rate=2e-3)) != training_keys(recipe)


def test_a_teacher_written_anew_is_another_teacher(tmp_path):
    # run:smollm2_135m is whatever the demo's latest 04 wrote: a checkpoint distilled from an older one is refused
    from lib.train.resume import fingerprint_differences, teacher_identity

    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first teacher")
    before = {"recipe": "r", "recipe_keys": {}, "data_sha": "x", "backend": {}, "processes": 1,
              "teacher": teacher_identity(str(tmp_path))}
    assert fingerprint_differences(before, dict(before)) == []
    weights.write_bytes(b"the demo, run again")
    after = dict(before, teacher=teacher_identity(str(tmp_path)))
    assert fingerprint_differences(before, after) == [f"the teacher's files ({tmp_path}) changed"]
