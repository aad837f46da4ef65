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
# # 05 · Evaluate on the edge: does the exported file think, stop and answer?
#
# The only model that matters is the file a user will run. Each GGUF — and the untrained base model for
# comparison — is loaded by llama.cpp (`llama-cpp-python`) with the chat template embedded in the file and
# asked the held-out questions with DeepSeek-R1's recommended sampling (temperature 0.6, top-p 0.95, fixed
# seed; greedy decoding sends small reasoning models into endless repetition) and the recipe's repeat penalty.
# For every file: how often it **closes `</think>`**, how often the final number is exactly right, how long it
# thinks, generation tokens/s and peak RSS on this machine. A recipe that uses a repeat penalty names one file
# (`eval_ablation_file`) to judge again without it: the `…-no-repeat-penalty` row shows what the penalty buys.

# %% tags=["parameters"]
model = "smollm2_135m"
dry_run = False
run_dir = ""

# %%
from IPython.display import JSON, display

from lib.run_config import make_run_config
from lib.stage_data import load_splits
from lib.stage_eval import STAGE, results_chart, run_eval, results_table

cfg = make_run_config(model, dry_run, run_dir)
_, heldout = load_splits(cfg)
print(f"{len(heldout)} held-out prompts")

# %% [markdown]
# ## Run every file on the held-out prompts
# (In a dry-run: the prompts are checked and the memory each file needs on a device is estimated.)

# %%
facts = run_eval(cfg, heldout)
display(results_table(facts))

# %% [markdown]
# ## Closure and accuracy per file

# %%
display(results_chart(facts, cfg.stage_dir(STAGE) / "results.png", cfg.recipe.name))

# %% [markdown]
# ## One answer from the distilled model

# %%
display(JSON(facts.get("example", {"note": "no generation in a dry-run"})))

# %% [markdown]
# ## In this notebook we
# - ran the base model and each exported GGUF through llama.cpp with the template stored in the file,
# - measured `</think>` closure, exact-match accuracy, think length, tokens/s and peak RSS,
# - wrote `results.json`, per-prompt outputs and the chart under `runs/<recipe>/05_eval_edge/`.
#
# Low accuracy from a 135M model is expected and reported as measured: what distillation teaches it here is
# the *habit* — open a thought, reason, close it, answer — which is what the closure rate checks.
