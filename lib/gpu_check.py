"""`python -m lib gpu-check`: real training steps on every GPU path this machine can run, each path's peak memory
next to the memory plan's prediction, as one JSON report on stdout.

Usage: ``python -m lib gpu-check`` on a CUDA machine (≤ 5 min); ``python -m lib gpu-check --device cpu --small
--steps 6`` anywhere (the CPU-capable paths, small shapes). Exit 0 when every path that could run ran and its loss
fell; 1 otherwise: a path failed, its loss did not fall, the 290 s budget left one out, or no path could run at all
(nothing checked is no pass); 2 when the check could not start (--device cuda without a GPU, --steps < 2).

The model is Llama-3.2-1B's config (`lib/model_configs/llama-3.2-1b.json`) shrunk by `lib.tiny.shrunk_config` to
8 layers x 1024 hidden (`--small`: 2 x 256) with the real 128,256-token vocabulary, random weights, built here and
saved to a temporary folder (nothing is downloaded). Every path trains it through the project's own code
(`lib.train.backends.train_lora`) on one fixed batch of GSM8K traces tokenised by the Llama 3 fixture tokenizer,
which a working path must overfit: its loss falls from the first step to the last.

Each path runs in its own process (`lib.gpu_check_child`): a CUDA error or a crash ends that path alone, its peak
memory is its own (a fresh CUDA allocator), and the Unsloth path imports unsloth before transformers, TRL and PEFT.
This module stays light (no torch at import) so that each child, which imports it first, can import unsloth before
anything else.

Memory figures (see `lib.gpu_check_child.memory_versus_plan`): on CUDA, `torch.cuda.max_memory_allocated` against
the plan's total less its `cuda_context` part (the allocator does not see the CUDA context), with their ratio; on a
CPU, the peak growth of the process's resident memory (sampled) next to the plan, without a ratio: the plan models a
GPU (16-bit weights, a CUDA context) and a CPU run holds float32 weights and Python's own allocations.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from lib.architectures import hf_config_dict
from lib.jsonl import jsonl_records
from lib.models import load_fixture_tokenizer
from lib.paths import DATA_DIR, PROJECT_ROOT
from lib.tiny import shrunk_config

FAMILY, TEACHER_FAMILY = "llama-3.2-1b", "llama-3-8b"  # one recipe family: llama32_1b_kd (same 128k vocabulary)
TOKENIZER = "llama3_2"
LLAMA3_VOCAB = 128256  # the real one: embeddings, LM head and logits are the largest tensors of a real run
TRACES = DATA_DIR / "gsm8k" / "train.jsonl.gz"
TIME_BUDGET_S = 290  # the whole check, so that it runs twice in a 15-minute GPU loan with time to read the report
MIN_CHILD_S = 20  # a path is not started with less time left than this
SEED = 3407
VERSIONS = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "unsloth",
            "unsloth_zoo")


@dataclass(frozen=True)
class Shapes:
    """The model and batch sizes of a check."""

    hidden_size: int
    num_layers: int
    batch: int
    max_length: int
    vocab_size: int = LLAMA3_VOCAB


# 2 x 512 tokens a step: the full-vocabulary logits (the plan's largest part at these sizes) are 0.25 G elements
FULL = Shapes(hidden_size=1024, num_layers=8, batch=2, max_length=512)
SMALL = Shapes(hidden_size=256, num_layers=2, batch=2, max_length=32)  # a CPU test: about a second a step on 2 cores


@dataclass(frozen=True)
class CheckPath:
    """One training path: what it needs and how its recipe differs from plain LoRA."""

    name: str
    needs_cuda: bool
    packages: tuple[str, ...]  # import names, in import order (unsloth first: it patches the others)
    load_in_4bit: bool = False
    optim: str = "adamw_torch"
    distill: bool = False
    unsloth: bool = False


_HF = ("peft", "trl", "datasets")
PATHS = (
    CheckPath("lora", False, _HF),
    CheckPath("distill", False, _HF, distill=True),
    CheckPath("qlora_nf4", True, _HF + ("bitsandbytes",), load_in_4bit=True),
    CheckPath("adamw_8bit", True, _HF + ("bitsandbytes",), optim="adamw_8bit"),
    CheckPath("paged_adamw_8bit", True, _HF + ("bitsandbytes",), optim="paged_adamw_8bit"),
    # the llama32_3b recipe's stack: Unsloth + NF4 + 8-bit AdamW; last, as its import compiles for a while
    CheckPath("unsloth", True, ("unsloth",) + _HF + ("bitsandbytes",), load_in_4bit=True, optim="adamw_8bit",
              unsloth=True),
)
PATHS_BY_NAME = {path.name: path for path in PATHS}

# The child process: `import_first` runs before lib.gpu_check_child (whose lib.train imports pull in torch), so a
# path's packages (unsloth first) are imported in their order and an import error is caught and reported.
CHILD_CODE = ("import sys\n"
              "from lib.gpu_check import import_first\n"
              "failure = import_first(sys.argv[1])\n"
              "from lib.gpu_check_child import main\n"
              "sys.exit(main(sys.argv[1], sys.argv[2], failure))\n")


class GpuCheckError(RuntimeError):
    """The check cannot start (e.g. --device cuda without a GPU); the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `gpu-check` options (for lib.__main__)."""
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="cuda: every path; cpu: the CPU-capable ones (LoRA, distillation). auto: cuda if present")
    parser.add_argument("--small", action="store_true",
                        help=f"{SMALL.num_layers} layers x {SMALL.hidden_size} hidden, {SMALL.batch}x"
                             f"{SMALL.max_length} tokens (a CPU test) instead of {FULL.num_layers} x "
                             f"{FULL.hidden_size}, {FULL.batch}x{FULL.max_length}")
    parser.add_argument("--steps", type=int, default=20, help="training steps per path (default 20)")


def main(args: argparse.Namespace) -> int:
    """Run the check, print the report as JSON; the exit code of `python -m lib gpu-check`."""
    try:
        report = gpu_check(args.device, args.small, args.steps)
    except GpuCheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def gpu_check(device: str = "auto", small: bool = False, steps: int = 20, budget_s: float = TIME_BUDGET_S) -> dict:
    """Run every path this machine can run and return the report (see the module docstring).

    Usage: ``report = gpu_check("cpu", small=True, steps=6); report["paths"]["lora"]["loss_fell"]``
    """
    if steps < 2:
        raise GpuCheckError("--steps must be at least 2 (the loss of the first step is compared with the last)")
    start = time.time()
    has_cuda = cuda_available()
    device = resolve_device(device, has_cuda)
    shapes = SMALL if small else FULL
    student = shrunk_config(hf_config_dict(FAMILY), shapes.vocab_size, shapes.hidden_size, shapes.num_layers)
    teacher = shrunk_config(hf_config_dict(TEACHER_FAMILY), shapes.vocab_size, shapes.hidden_size, shapes.num_layers)
    installed = {name for path in PATHS for name in path.packages if importlib.util.find_spec(name) is not None}
    reasons = {path.name: why_not_run(path, device, has_cuda, installed) for path in PATHS}
    results = {name: {"ran": False, "reason": reason} for name, reason in reasons.items() if reason}
    runnable = [path for path in PATHS if not reasons[path.name]]
    report = {"check": "python -m lib gpu-check", "device": device, "gpu": gpu_facts() if device == "cuda" else None,
              "versions": versions(), "steps": steps,
              "model": {"family": FAMILY, "teacher_family": TEACHER_FAMILY, **asdict(shapes),
                        "weights": "random (built here, nothing downloaded)"}}
    if runnable:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            base = prepare_inputs(Path(tmp), device, shapes, steps, student, teacher,
                                  any(path.distill for path in runnable))
            report["model"].update(student_params=base.pop("student_params"),
                                   teacher_params=base.pop("teacher_params", None))
            results.update(run_paths(runnable, base, Path(tmp), deadline=start + budget_s))
    report["paths"] = {path.name: results[path.name] for path in PATHS}
    report["ok"] = check_passed(report["paths"])
    report["seconds"] = round(time.time() - start, 1)
    return report


def run_paths(paths: list[CheckPath], base: dict, tmp: Path, deadline: float) -> dict[str, dict]:
    """Each path in its own process, one after the other, each given the time left before `deadline`."""
    results = {}
    for path in paths:
        left = deadline - time.time()
        if left < MIN_CHILD_S:  # it could have run: a failed check, not a "could not run" line
            results[path.name] = {"ran": False, "ok": False, "reason": "not started: the check's time budget is spent"}
            continue
        print(f"gpu-check: {path.name} ({base['device']}) ...", file=sys.stderr, flush=True)
        results[path.name] = run_child(path, base, tmp, left)
        print(f"gpu-check: {path.name}: {summary_line(results[path.name])}", file=sys.stderr, flush=True)
    return results


def cuda_available() -> bool:
    import torch  # here, not at the top: the Unsloth child imports this module before unsloth

    return torch.cuda.is_available()


def resolve_device(requested: str, has_cuda: bool) -> str:
    """The device the check trains on: "auto" picks CUDA when present; "cuda" without a GPU cannot start."""
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if requested == "cuda" and not has_cuda:
        raise GpuCheckError("--device cuda, but torch.cuda.is_available() is False (a CPU build of torch, or no "
                            "GPU/driver visible); run with --device cpu --small to check the CPU paths")
    return requested


def why_not_run(path: CheckPath, device: str, has_cuda: bool, installed: set[str]) -> str | None:
    """Why `path` cannot run here (every reason, joined), or None when it can. Import errors are found later, in
    the path's own process (importing unsloth here would patch this process's transformers)."""
    reasons = []
    if path.needs_cuda and device != "cuda":
        reasons.append("needs a CUDA GPU: " + ("--device cpu" if has_cuda else "torch.cuda.is_available() is False"))
    missing = [name for name in path.packages if name not in installed]
    if missing:
        reasons.append(f"package missing: {', '.join(missing)} (requirements-gpu-check.txt)")
    return "; ".join(reasons) or None


def check_passed(paths: dict[str, dict]) -> bool:
    """The exit verdict: at least one path ran, every path that ran is ok (it trained and its loss fell), and none
    that should have run failed without running (ok False: its installed packages failed to import, or the time
    budget ran out before it). A path whose packages are absent, or that needs CUDA here, is a skip. The plan's
    15 % target is reported per path (`within_15_percent`), not judged here: it measures the plan, not the GPU."""
    ran = [result for result in paths.values() if result["ran"]]
    left_out = [result for result in paths.values() if not result["ran"] and result.get("ok") is False]
    return bool(ran) and all(result.get("ok") for result in ran) and not left_out


def loss_fell(losses: list[float]) -> bool:
    """A fixed batch seen `steps` times must be fitted better at the end than at the start."""
    return len(losses) >= 2 and losses[-1] < losses[0]


def trace_text(row: dict) -> str:
    """A GSM8K row as a reasoning trace: question, <think> rationale </think>, answer (real-looking token ids)."""
    rationale, _, answer = row["answer"].rpartition("####")
    return f"{row['question']}\n<think>\n{rationale.strip()}\n</think>\nThe answer is {answer.strip()}."


def token_rows(encode: Callable[[str], list[int]], texts: Iterable[str], batch: int, length: int) -> list[list[int]]:
    """`batch` rows of exactly `length` token ids: the texts' ids, end to end, cut into rows (no padding, so
    every position is trained and the batch has the planned shape)."""
    need, ids = batch * length, []
    for text in texts:
        ids += encode(text)
        if len(ids) >= need:
            return [ids[i * length:(i + 1) * length] for i in range(batch)]
    raise ValueError(f"the texts hold {len(ids)} tokens; {batch} rows of {length} need {need}")


def gsm8k_traces() -> Iterable[str]:
    """The shipped GSM8K training rows as trace texts, read lazily (a check needs a few dozen)."""
    return (trace_text(record) for _, record in jsonl_records(TRACES) if isinstance(record, dict))


def prepare_inputs(tmp: Path, device: str, shapes: Shapes, steps: int, student: dict, teacher: dict,
                   with_teacher: bool) -> dict:
    """Save the random student (and teacher) with the fixture tokenizer under `tmp`; the spec every path shares."""
    dtype = "bfloat16" if device == "cuda" else "float32"  # the GPU recipes' dtype; exact gradients on a CPU
    tokenizer = load_fixture_tokenizer(TOKENIZER)
    ids = token_rows(lambda text: tokenizer.encode(text, add_special_tokens=False), gsm8k_traces(),
                     shapes.batch, shapes.max_length)
    spec = {"device": device, "dtype": dtype, "steps": steps, "shapes": asdict(shapes), "input_ids": ids,
            "student_config": student, "teacher_config": teacher, "student_dir": str(tmp / "student"),
            "teacher_dir": str(tmp / "teacher") if with_teacher else "", "budget_gib": memory_budget_gib(device)}
    spec["student_params"] = save_random_model(student, dtype, tmp / "student", SEED)
    tokenizer.save_pretrained(tmp / "student")  # train_lora and Unsloth load the tokenizer from the model folder
    if with_teacher:
        spec["teacher_params"] = save_random_model(teacher, dtype, tmp / "teacher", SEED + 1)
    return spec


def save_random_model(config: dict, dtype: str, folder: Path, seed: int) -> int:
    """A causal LM of `config` (an HF config dict) with random weights, saved in `dtype`; its parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = copy.deepcopy(config)  # transformers rewrites nested rope settings in place (see lib.tiny)
    model_type = fields.pop("model_type")  # for_model takes it positionally
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **fields))
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    return model.num_parameters()


def memory_budget_gib(device: str) -> float:
    """The plan's budget: the GPU's memory (or the machine's RAM on a CPU); it decides only the plan's `fits`."""
    if device == "cuda":
        import torch

        return round(torch.cuda.get_device_properties(0).total_memory / 1024**3, 1)
    import psutil

    return round(psutil.virtual_memory().total / 1024**3, 1)


def run_child(path: CheckPath, base: dict, tmp: Path, timeout_s: float) -> dict:
    """Run `path` in its own Python process (CHILD_CODE) and return its result; a crash or a timeout is a failed
    path with the end of the process's output."""
    work = tmp / path.name
    work.mkdir()
    spec_file, result_file, log_file = work / "spec.json", work / "result.json", work / "output.log"
    spec_file.write_text(json.dumps({**base, "path": path.name, "out_dir": str(work / "out")}))
    # offline: no hub lookups (Unsloth checks the hub unless told); the repository importable from the work folder,
    # where Unsloth writes its compiled cache
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.time()
    with open(log_file, "wb") as log:
        try:
            code = subprocess.run([sys.executable, "-c", CHILD_CODE, str(spec_file), str(result_file)], cwd=work,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = None
    if code == 0 and result_file.is_file():
        return json.loads(result_file.read_text())
    why = f"timed out after {timeout_s:.0f} s" if code is None else f"its process exited with code {code}"
    return {"ran": True, "ok": False, "error": why, "seconds": round(time.time() - start, 1),
            "output_tail": log_file.read_text(errors="replace")[-2000:]}


def import_first(spec_file: str) -> str | None:
    """In a path's process, before anything imports transformers: import the path's packages in order (unsloth
    first, so it can patch transformers, TRL and PEFT); the first failure as "import error: …", else None."""
    path = PATHS_BY_NAME[json.loads(Path(spec_file).read_text())["path"]]
    for name in path.packages:
        try:
            importlib.import_module(name)
        except Exception as err:  # bitsandbytes and unsloth raise more than ImportError (missing CUDA libraries)
            return f"import error: {name}: {type(err).__name__}: {err}"[:1000]
    return None


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries a path uses (None: not installed); read without importing them."""
    found = {}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def gpu_facts() -> dict:
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": torch.cuda.get_device_name(0), "total_memory_gib": round(props.total_memory / 1024**3, 2),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))), "cuda": torch.version.cuda}


def summary_line(result: dict) -> str:
    """One line of progress for stderr."""
    if not result["ran"]:
        return f"not run ({result['reason']})"
    if "error" in result:
        return f"FAILED: {result['error'][:200]}"
    ratio = result.get("memory", {}).get("ratio")
    return (f"loss {result['loss_first']} -> {result['loss_last']} ({'ok' if result['ok'] else 'did NOT fall'}), "
            f"{result['train_seconds']} s" + (f", memory/plan {ratio}" if ratio is not None else ""))

