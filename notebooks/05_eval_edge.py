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
tiny = False
run_dir = ""

# %%
from IPython.display import display

from lib.display import facts_table, results_chart, table
from lib.evaluate.stage import STAGE, read_heldout, run_eval
from lib.modes import make_run_config

cfg = make_run_config(model, dry_run, run_dir, tiny=tiny)
heldout = read_heldout(cfg)
display(facts_table({"held-out prompts": len(heldout), "sampling": cfg.recipe.eval_sampling(),
                     "max new tokens": cfg.recipe.eval_max_tokens}))

# %% [markdown]
# ## Run every file on the held-out prompts
# (In a dry-run no model runs: the prompts are checked and the memory each file needs on a device is estimated.)

# %%
facts = run_eval(cfg, heldout)
display(facts_table({"prompts judged": facts["prompts"],
                     "references the exact-match judge cannot read": facts["unparseable_references"] or "none"}))
display(table(facts["edge_memory"], title="Memory on a device: weights + KV cache at eval_n_ctx"))

# %%
display(table([{"file": f"{r['label']} ({r['file']})", "closed </think>": f"{r['closure_rate']:.0%}",
                "opened": f"{r['opened_think_rate']:.0%}", "accuracy": f"{r['accuracy']:.0%}",
                "mean think tokens": r["mean_think_tokens"], "hit max_tokens": r["hit_max_tokens"],
                "tok/s": r["tokens_per_second"], "peak RSS MiB": r["peak_rss_mib"]} for r in facts["results"]],
              empty="No model was run (dry-run)."))

# %% [markdown]
# ## Closure and accuracy per file

# %%
display(results_chart(facts["results"], cfg.stage_dir(STAGE) / "results.png", cfg.recipe.name))

# %% [markdown]
# ## One answer from the distilled model

# %%
display(facts_table(facts["example"], empty="No generation in a dry-run."))

# %% [markdown]
# ## In this notebook we
# - ran the base model and each exported GGUF through llama.cpp with the template stored in the file,
# - measured `</think>` closure, exact-match accuracy, think length, tokens/s and peak RSS,
# - wrote `results.json`, per-prompt outputs and the chart under `runs/<recipe>/05_eval_edge/`.
#
# Low accuracy from a 135M model is expected and reported as measured: what distillation teaches it here is
# the *habit* — open a thought, reason, close it, answer — which is what the closure rate checks.
