# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Train: LoRA adapters that learn to think
#
# The base model stays frozen; small LoRA matrices in the attention (and, if the recipe says so, MLP)
# projections learn the `<think>…</think>` habit from the masked examples of 02. The backend is chosen
# from the hardware (`lib.train.backends.select_backend`): Unsloth's `FastLanguageModel` with 4-bit NF4 when CUDA
# and unsloth are present, transformers + PEFT otherwise, both driven by TRL's `SFTTrainer` (or the
# distillation trainer when the recipe names a teacher). A dry-run builds the exact architecture on PyTorch's
# *meta* device — LoRA injected for real, no weights — and validates the trainer config.

# %% tags=["parameters"]
model = "smollm2_135m"
dry_run = False
tiny = False
run_dir = ""
restart = False  # True: start training at step 0 (deletes this run's checkpoints); default: continue a killed run
runs_on_drive = None  # Colab: run folders on Google Drive (None: yes on Colab; see the next cell)

# %% [markdown]
# **Colab.** The next cell does nothing outside Colab (this repository after `make install`). On Colab it clones the
# project, installs it into the runtime (once per runtime, most of the time compiling llama.cpp) and picks what the
# runtime can run (`lib.colab`): the recipe planned for a T4 on a GPU, the CPU recipe or a GPU recipe's dry-run
# without one. Each Colab notebook has a runtime of its own, so run folders live on Google Drive there
# (`runs_on_drive`, None = on Colab): 02 finds what 01 wrote, and a disconnected session resumes training.

# %%
import os, sys  # noqa: E401
COLAB = "google.colab" in sys.modules or os.environ.get("THINKDISTILL_COLAB") == "1"  # the latter: tests/test_colab.py
try:
    import lib.colab
except ModuleNotFoundError as missing:  # on Colab: clone the project and install it into this kernel's Python
    if not COLAB or missing.name not in ("lib", "lib.colab"):
        raise ModuleNotFoundError(f"{missing}: install this project first (`make install`, or `pip install -e .` in "
                                  "its folder) and pick its kernel") from missing
    import subprocess, shutil  # noqa: E401
    REPOSITORY = "https://github.com/thinkdistill/thinkdistill"  # pyproject.toml's [project.urls] Repository
    _home = os.environ.get("THINKDISTILL_HOME", "/content/thinkdistill")
    if not os.path.isdir(_home):
        subprocess.run(["git", "clone", "-q", "--depth", "1",
                        os.environ.get("THINKDISTILL_REPOSITORY", REPOSITORY), _home], check=True)
    _gpu = shutil.which("nvidia-smi") is not None  # the gpu extra: Unsloth, bitsandbytes, llama.cpp built for CUDA
    # compat: a plain path entry, so after a restart our regular `lib` package wins over llama-cpp-python's `lib/`
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{_home}[{'gpu' if _gpu else 'colab'}]",
                    "--config-settings", "editable_mode=compat"], check=True,
                   env=dict(os.environ, **({"CMAKE_ARGS": "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native"}
                                           if _gpu else {})))
    sys.path.insert(0, _home)  # the install's path entry is read only when Python starts
    sys.modules.pop("lib", None)  # llama-cpp-python's `lib/` folder may be imported already: ours must win
    import lib.colab
model, dry_run, tiny = lib.colab.setup(model, dry_run, tiny, COLAB, runs_on_drive)

# %%
import lib.train.unsloth_first  # noqa: F401  first: unsloth (GPU backend only) must patch transformers/TRL/PEFT
from IPython.display import display

from lib.display import facts_table, loss_plot
from lib.modes import make_run_config
from lib.plan.recipe_plan import memory_plan
from lib.train.stage import STAGE, read_masked_examples, run_training, train_log

cfg = make_run_config(model, dry_run, run_dir, tiny=tiny)
dataset, max_length = read_masked_examples(cfg)  # exactly what 02 masked, and the max_length it chose
display(facts_table({"masked examples": len(dataset), "max_length (from 02)": max_length}))

# %% [markdown]
# ## Memory plan on the recipe's target card, and what 04 will need
# The plan is for the backend a real run uses (`planned_backend`: the one found on a CUDA machine, else Unsloth
# on the recipe's GPU): weights at the chosen precision, LoRA weights/gradients/optimizer state, activations at
# `max_length`, the logits as that backend's loss holds them, and the CUDA context, against `vram_budget_gib`
# (`lib.plan.memory` documents each assumption). Training below refuses a plan over the budget unless the recipe
# sets `allow_over_budget: true`. The second table is 04's RAM for the merge and disk for every file, known
# before the hours of training rather than after.

# %%
from lib.plan.export_plan import export_plan, export_plan_rows
from lib.train.backends import planned_backend

backend, how = planned_backend(cfg.recipe)
plan = memory_plan(cfg.recipe, max_length, backend).as_dict()
display(facts_table({"hardware": cfg.recipe.hardware, "backend": backend.name, "backend chosen by": how,
                     "fits": plan["fits"], "total GiB": plan["total_gib"], "budget GiB": plan["budget_gib"],
                     **plan["components_gib"]}))
display(facts_table(export_plan_rows(export_plan(cfg.recipe)), title="04 merge + export: RAM and disk"))

# %% [markdown]
# ## Train (or validate on the meta device)
# A line every ~5 % of the steps shows the loss, tokens/s and the time left. A checkpoint is written every
# `save_steps`; if this run is killed (Ctrl-C, a Colab disconnect, a preempted instance), running this notebook or
# `python -m lib run RECIPE --stages 03` again continues from the last complete checkpoint — on a CPU the same adapter
# as an uninterrupted run, on a GPU as close as its non-deterministic kernels allow — when the recipe and 02's
# examples are unchanged, and refuses otherwise (`restart` starts over). A finished run, run again, trains anew.

# %%
facts = run_training(cfg, dataset, max_length, restart=restart)
display(facts_table(facts))

# %% [markdown]
# ## Loss curve
# Loss on response tokens only. A falling curve here means the model is learning the format and the
# arithmetic style of the traces; whether it *closes* its thoughts is measured on the exported file in 05.

# %%
display(loss_plot(train_log(cfg), cfg.stage_dir(STAGE) / "loss.png",
                  f"{cfg.recipe.name}: LoRA r={cfg.recipe.lora_r}"))

# %% [markdown]
# ## Distillation: the loss's two terms
# With a teacher (`teacher_model_name_or_path`) the loss is α·T²·KL(teacher ‖ student) + (1 − α)·CE, both on the
# response tokens: the KL pulls the student's whole next-token distribution towards the teacher's, the CE towards
# the trace's own token. Plotted apart, so a KL that stalls while the CE falls (or the reverse) is visible.

# %%
from lib.display import distillation_plot

display(distillation_plot(train_log(cfg), cfg.stage_dir(STAGE) / "distillation.png",
                          f"{cfg.recipe.name}: distillation terms", cfg.recipe.distill_alpha,
                          cfg.recipe.distill_temperature))

# %% [markdown]
# ## In this notebook we
# - read the masked examples 02 saved (nothing re-tokenised),
# - checked the memory plan against the target card,
# - trained LoRA adapters (or validated the recipe on the meta device) and saved them under
#   `runs/<recipe>/03_train/adapter/` with checkpoints, a training log and the loss curve (and, when
#   distilling, the KL and CE terms apart).
#
# Next: **04_merge_export** merges the adapter and writes GGUF files.
