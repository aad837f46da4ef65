"""`python -m lib gpu-check`: the CPU run end to end (its JSON report and exit code), the recipes and memory plans of
the CUDA-only paths (built here without a GPU), the verdict and failure handling, and requirements-gpu-check.txt
against the versions a GPU install resolves to (constraints-gpu.txt)."""
import argparse
import importlib.util
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from lib import gpu_check
from lib.architectures import hf_config_dict
from lib.gpu_check import (FULL, PATHS, PATHS_BY_NAME, GpuCheckError, check_passed, loss_fell, resolve_device,
                           token_rows, trace_text, why_not_run)
from lib.paths import PROJECT_ROOT
from lib.tiny import shrunk_config

STEPS = 3
CPU_PATHS = {"lora", "distill"}
CUDA_PATHS = {"qlora_nf4", "adamw_8bit", "paged_adamw_8bit", "unsloth"}


@pytest.fixture(scope="module")
def cpu_run():
    """One real CPU check, as a user runs it: (exit code, report parsed from stdout). It trains twice, in two
    processes that import TRL: 43-45 s measured on 2 cores shared with other jobs (load 3-5), so not marked slow."""
    done = subprocess.run([sys.executable, "-m", "lib", "gpu-check", "--device", "cpu", "--small", "--steps",
                           str(STEPS)], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert done.stdout.strip(), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)  # stdout is the report and nothing else


def test_the_cpu_paths_train_and_their_loss_falls(cpu_run):
    code, report = cpu_run
    assert code == 0 and report["ok"] is True and report["device"] == "cpu" and report["gpu"] is None
    assert set(report["paths"]) == {path.name for path in PATHS}
    for name in CPU_PATHS:
        result = report["paths"][name]
        assert result["ran"] and result["ok"] and result["loss_fell"], (name, result)
        assert len(result["losses"]) == result["steps"] == STEPS
        assert result["loss_last"] < result["loss_first"] == result["losses"][0]
        assert result["tokens_per_s"] > 0 and result["trainable_params"] > 0
        assert result["backend"]["backend"] == "transformers+peft" and result["dtype"] == "float32"
    # a random model over the real 128,256-token vocabulary starts near ln(vocab)
    assert abs(report["paths"]["lora"]["loss_first"] - 11.76) < 0.5
    assert report["model"]["vocab_size"] == 128256 and report["model"]["num_layers"] == gpu_check.SMALL.num_layers


def test_every_cuda_only_path_is_listed_as_not_run_with_its_reason(cpu_run):
    _, report = cpu_run
    for name in CUDA_PATHS:
        result = report["paths"][name]
        assert result["ran"] is False and result["reason"].startswith("needs a CUDA GPU"), (name, result)
    if importlib.util.find_spec("bitsandbytes") is None:
        assert "package missing: bitsandbytes" in report["paths"]["qlora_nf4"]["reason"]


def test_each_measured_figure_has_the_plan_next_to_it(cpu_run):
    """On a CPU the measured figure is the peak growth of resident memory next to the CPU plan of the same shapes (no
    CUDA context): the ratio is reported, not judged."""
    _, report = cpu_run
    for name in CPU_PATHS:
        memory = report["paths"][name]["memory"]
        assert memory["measured"] == "cpu peak RSS growth" and memory["measured_bytes"] > 0
        assert memory["plan_bytes"] == memory["plan_without_cuda_context_bytes"] > 0
        assert "cuda_context" not in memory["plan_components_gib"]
        assert memory["ratio"] == round(memory["measured_bytes"] / memory["plan_bytes"], 3)
        assert memory["within_15_percent"] is None and "not judged" in memory["note"]
    distill = report["paths"]["distill"]["memory"]["plan_components_gib"]
    assert distill["teacher_weights"] > 0 and "teacher_weights" not in report["paths"]["lora"]["memory"][
        "plan_components_gib"]


def test_the_report_names_the_library_versions(cpu_run):
    _, report = cpu_run
    import transformers

    assert report["versions"]["transformers"] == transformers.__version__
    assert set(report["versions"]) == set(gpu_check.VERSIONS)


def test_why_a_path_cannot_run():
    qlora, lora = PATHS_BY_NAME["qlora_nf4"], PATHS_BY_NAME["lora"]
    everything = {"peft", "trl", "datasets", "bitsandbytes", "unsloth"}
    assert why_not_run(lora, "cpu", False, everything) is None
    assert why_not_run(qlora, "cuda", True, everything) is None
    assert why_not_run(qlora, "cpu", True, everything) == "needs a CUDA GPU: --device cpu"
    assert why_not_run(qlora, "cpu", False, {"peft", "trl", "datasets"}) == (
        "needs a CUDA GPU: torch.cuda.is_available() is False; package missing: bitsandbytes "
        "(requirements-gpu-check.txt)")
    assert why_not_run(lora, "cuda", True, {"peft"}).startswith("package missing: trl, datasets")


def test_the_verdict_needs_one_path_that_ran_and_every_ran_path_ok():
    ok, not_run = {"ran": True, "ok": True}, {"ran": False, "reason": "x"}
    assert check_passed({"a": ok, "b": not_run})
    assert not check_passed({"a": ok, "b": {"ran": True, "ok": False, "error": "boom"}})
    assert not check_passed({"a": not_run})  # nothing checked is not a pass
    assert not check_passed({"a": ok, "b": {"ran": False, "ok": False, "reason": "not started: time budget"}})
    assert loss_fell([3.0, 2.0]) and not loss_fell([3.0, 3.0]) and not loss_fell([3.0])


def test_a_path_left_out_by_the_time_budget_fails_the_check(tmp_path):
    results = gpu_check.run_paths([PATHS_BY_NAME["lora"]], {"device": "cpu"}, tmp_path, deadline=time.time())
    assert results["lora"]["ran"] is False and results["lora"]["ok"] is False
    assert not check_passed({**results, "distill": {"ran": True, "ok": True}})


def test_main_maps_the_report_to_the_exit_code(monkeypatch, capsys):
    args = argparse.Namespace(device="cpu", small=True, steps=2)
    monkeypatch.setattr(gpu_check, "gpu_check", lambda *a: {"ok": False, "paths": {}})
    assert gpu_check.main(args) == 1 and json.loads(capsys.readouterr().out) == {"ok": False, "paths": {}}

    def cannot_start(*a):
        raise GpuCheckError("--device cuda, but no GPU")

    monkeypatch.setattr(gpu_check, "gpu_check", cannot_start)
    assert gpu_check.main(args) == 2 and "no GPU" in capsys.readouterr().err


def test_the_device_choice():
    assert resolve_device("auto", True) == "cuda" and resolve_device("auto", False) == "cpu"
    assert resolve_device("cpu", True) == "cpu"
    with pytest.raises(GpuCheckError, match="torch.cuda.is_available"):
        resolve_device("cuda", False)


def test_the_batch_is_real_token_rows_of_the_planned_shape():
    texts = ["aa bb", "cc", "dd ee ff"]
    rows = token_rows(str.split, texts, batch=2, length=3)
    assert rows == [["aa", "bb", "cc"], ["dd", "ee", "ff"]]
    with pytest.raises(ValueError, match="hold 6 tokens"):
        token_rows(str.split, texts, batch=2, length=4)
    text = trace_text({"question": "Q?", "answer": "2+2=4\n#### 4"})
    assert text == "Q?\n<think>\n2+2=4\n</think>\nThe answer is 4."


def test_a_crashed_or_hung_path_process_is_a_failed_path(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "CHILD_CODE", "import sys; print('segfault-ish'); sys.exit(3)")
    crashed = gpu_check.run_child(PATHS_BY_NAME["lora"], {}, tmp_path, timeout_s=60)
    assert crashed["ran"] and not crashed["ok"] and crashed["error"] == "its process exited with code 3"
    assert "segfault-ish" in crashed["output_tail"]
    monkeypatch.setattr(gpu_check, "CHILD_CODE", "import time; time.sleep(30)")
    hung = gpu_check.run_child(PATHS_BY_NAME["distill"], {}, tmp_path, timeout_s=1)
    assert hung["error"] == "timed out after 1 s" and not check_passed({"hung": hung})


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is not None, reason="needs a machine without unsloth")
def test_an_import_error_is_a_failed_path_with_its_message(tmp_path):
    """The child starts only for a path whose packages are installed: one that then fails to import is broken (a
    bitsandbytes/CUDA mismatch, a broken unsloth), and fails the check instead of passing as a skip."""
    from lib.gpu_check_child import main

    spec_file, result_file = tmp_path / "spec.json", tmp_path / "result.json"
    spec_file.write_text(json.dumps({"path": "unsloth"}))
    failure = gpu_check.import_first(str(spec_file))
    assert failure == "import error: unsloth: ModuleNotFoundError: No module named 'unsloth'"
    assert main(str(spec_file), str(result_file), failure) == 0
    result = json.loads(result_file.read_text())
    assert result == {"ran": False, "ok": False, "reason": failure}
    assert not gpu_check.check_passed({"lora": {"ran": True, "ok": True}, "unsloth": result})
    assert gpu_check.check_passed({"lora": {"ran": True, "ok": True}, "unsloth": {"ran": False, "reason": "x"}})


def test_importing_the_check_imports_no_hf_library():
    """The Unsloth path's process imports lib.gpu_check first, then unsloth: nothing may import transformers,
    TRL or PEFT before it (nor torch, which unsloth also wants to see first)."""
    code = ("import sys, lib.gpu_check; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'trl', 'peft'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def cuda_spec(path_name: str) -> dict:
    student = shrunk_config(hf_config_dict(gpu_check.FAMILY), FULL.vocab_size, FULL.hidden_size, FULL.num_layers)
    teacher = shrunk_config(hf_config_dict(gpu_check.TEACHER_FAMILY), FULL.vocab_size, FULL.hidden_size,
                            FULL.num_layers)
    return {"path": path_name, "device": "cuda", "dtype": "bfloat16", "steps": 20, "shapes": asdict(FULL),
            "student_config": student, "teacher_config": teacher, "student_dir": "/nonexistent/student",
            "teacher_dir": "/nonexistent/teacher", "budget_gib": 139.8}


@pytest.mark.parametrize("name, load_in_4bit, optim, checkpointing, backend", [
    ("lora", False, "adamw_torch", True, "transformers+peft"),
    ("distill", False, "adamw_torch", True, "transformers+peft"),
    ("qlora_nf4", True, "adamw_torch", True, "transformers+peft"),
    ("adamw_8bit", False, "adamw_8bit", True, "transformers+peft"),
    ("paged_adamw_8bit", False, "paged_adamw_8bit", True, "transformers+peft"),
    ("unsloth", True, "adamw_8bit", "unsloth", "unsloth"),
])
def test_each_gpu_path_trains_what_it_names_and_is_planned_for_it(name, load_in_4bit, optim, checkpointing, backend):
    """What a CUDA child builds before its first GPU call, built here: the recipe, the backend and the plan."""
    from lib.gpu_check_child import check_recipe, memory_plan
    from lib.train.backends import select_backend

    path, spec = PATHS_BY_NAME[name], cuda_spec(name)
    recipe = check_recipe(path, spec)
    chosen = select_backend(recipe, has_cuda=True, has_unsloth=path.unsloth)
    assert (chosen.name, chosen.load_in_4bit, chosen.optim, chosen.gradient_checkpointing) == (
        backend, load_in_4bit, optim, checkpointing)
    assert recipe.torch_dtype == "bfloat16" and recipe.max_steps == 20 and recipe.logging_steps == 1
    plan = memory_plan(recipe, chosen, spec)
    assert plan.assumptions["load_in_4bit"] is load_in_4bit and plan.assumptions["optim"] == optim
    assert (plan.components["dequant_workspace"] > 0) is load_in_4bit
    assert plan.assumptions["tokens_per_step"] == FULL.batch * FULL.max_length
    assert (plan.assumptions["teacher"] is not None) is path.distill


def test_the_cuda_ratio_is_measured_over_the_plan_without_the_cuda_context():
    from lib.gpu_check_child import CUDA_PEAK, memory_versus_plan
    from lib.plan.memory import GIB, MemoryPlan

    plan = MemoryPlan({"base_weights": 3 * GIB, "cuda_context": GIB}, 4 * GIB, 80 * GIB, True)
    near = memory_versus_plan({"kind": CUDA_PEAK, "bytes": int(3.3 * GIB), "reserved_bytes": 4 * GIB}, plan)
    assert near["ratio"] == 1.1 and near["within_15_percent"] is True and near["reserved_gib"] == 4.0
    far = memory_versus_plan({"kind": CUDA_PEAK, "bytes": int(1.5 * GIB), "reserved_bytes": 2 * GIB}, plan)
    assert far["ratio"] == 0.5 and far["within_15_percent"] is False


# ---- requirements-gpu-check.txt: the wheels carried to a GPU machine ----
spec = importlib.util.spec_from_file_location("gpu_constraints", PROJECT_ROOT / "tools" / "gpu_constraints.py")
gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu)
GPU_INSTALL = gpu.read_pins(gpu.CONSTRAINTS.read_text()) | gpu.recorded_pins(gpu.CONSTRAINTS.read_text())
CHECK_TEXT = (PROJECT_ROOT / "requirements-gpu-check.txt").read_text()


def listed_pins(text: str) -> dict[str, str]:
    """The `#   name==version` lines of the not-carried block (needed, already on the GPU image)."""
    return {gpu.canonicalize_name(m[1]): m[2] for m in re.finditer(r"^#\s+([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def disagreements(pins: dict[str, str]) -> list[str]:
    return [f"{name}=={version} (GPU install: {GPU_INSTALL.get(name)})" for name, version in pins.items()
            if GPU_INSTALL.get(name) != version]


def test_every_carried_and_listed_pin_is_the_gpu_install_version():
    carried, listed = gpu.read_pins(CHECK_TEXT), listed_pins(CHECK_TEXT)
    assert disagreements(carried) == [] and disagreements(listed) == []
    assert len(listed) >= 5 and not set(carried) & set(listed)


def test_the_pin_check_sees_a_wrong_version():
    assert disagreements({"trl": "1.16.0", "peft": "0.21.2"}) == ["trl==1.16.0 (GPU install: 1.15.0)"]
    assert disagreements({"not-a-gpu-package": "1.0"}) == ["not-a-gpu-package==1.0 (GPU install: None)"]


def test_the_carried_wheels_are_what_the_check_imports_beyond_the_gpu_image():
    carried = gpu.read_pins(CHECK_TEXT)
    assert {"peft", "trl", "datasets", "dill", "multiprocess", "bitsandbytes"} == set(carried)
    # the GPU machine's own CUDA builds must never be replaced by a carried wheel
    assert not {"torch", "transformers", "triton", "xformers", "unsloth"} & set(carried)
