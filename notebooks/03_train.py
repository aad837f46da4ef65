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
# from the hardware (`lib.training.select_backend`): Unsloth's `FastLanguageModel` with 4-bit NF4 when CUDA and
# unsloth are present, transformers + PEFT otherwise, both driven by TRL's `SFTTrainer` (or the distillation
# trainer when the recipe names a teacher). A dry-run builds the exact architecture on PyTorch's *meta*
# device — LoRA injected for real, no weights — and validates the trainer config.

# %% tags=["parameters"]
model = "smollm2_135m"
dry_run = False
run_dir = ""

# %%
from IPython.display import JSON, display

from lib.plan import memory_plan
from lib.run_config import make_run_config
from lib.stage_data import load_splits, with_data_length
from lib.stage_masking import mask_rows, tokenizer_for
from lib.stage_train import loss_curve, run_training

cfg = with_data_length(make_run_config(model, dry_run, run_dir))  # max_length as stage 01 chose it
train, _ = load_splits(cfg)
masked = mask_rows(cfg, train, tokenizer_for(cfg))
print(f"{len(masked.examples)} masked examples, {masked.stats['trained_tokens']} trained tokens")

# %% [markdown]
# ## Memory plan on the recipe's target card
# Weights at the chosen precision, LoRA weights/gradients/optimizer state, activations at `max_length`,
# logits, and the CUDA context, against `vram_budget_gib` (`lib.memory_plan` documents each assumption).

# %%
plan = memory_plan(cfg.recipe).as_dict()
display(JSON({"hardware": cfg.recipe.hardware, "fits": plan["fits"], "total_gib": plan["total_gib"],
              "budget_gib": plan["budget_gib"], "components_gib": plan["components_gib"]}))

# %% [markdown]
# ## Train (or validate on the meta device)

# %%
facts = run_training(cfg, masked)
display(JSON(facts))

# %% [markdown]
# ## Loss curve
# Loss on response tokens only. A falling curve here means the model is learning the format and the
# arithmetic style of the traces; whether it *closes* its thoughts is measured on the exported file in 05.

# %%
display(loss_curve(cfg))

# %% [markdown]
# ## In this notebook we
# - re-masked the training split exactly as 02 showed it,
# - checked the memory plan against the target card,
# - trained LoRA adapters (or validated the recipe on the meta device) and saved them under
#   `runs/<recipe>/03_train/adapter/` with checkpoints, a training log and the loss curve.
#
# Next: **04_merge_export** merges the adapter and writes GGUF files.
