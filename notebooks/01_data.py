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
# # 01 · Data: reasoning traces in one canonical form
#
# A model learns to *think before answering* only from examples that show a complete thought: an opening
# `<think>`, the reasoning, a closing `</think>`, then the answer. This notebook reads the recipe's source,
# turns every row into one canonical form (`lib.reasoning_data`), sets aside held-out prompts the model never
# trains on, and counts every row it could not use — nothing is dropped silently.

# %% tags=["parameters"]
model = "smollm2_135m"  # a recipe in params/ (python -m lib recipes lists them)
dry_run = False  # True: no GPU, no download; a few rows and fixture tokenizers (see lib.run_config)
run_dir = ""  # empty: runs/<model>[-dry-run]/

# %%
from IPython.display import JSON, Markdown, display

from lib.run_config import make_run_config
from lib.stage_data import build_splits, save_splits

cfg = make_run_config(model, dry_run, run_dir)
display(JSON(cfg.summary()))

# %% [markdown]
# ## Read the source and split off held-out prompts
# For GSM8K the human-written rationale becomes the think trace (calculator notes like `<<48/2=24>>` removed)
# and `The answer is N.` the answer. Held-out prompts are a seeded sample of the GSM8K **test** split, so they
# are disjoint from training by construction; a verbatim-overlap check guards that anyway.

# %%
splits = build_splits(cfg)
facts = save_splits(cfg, splits)
display(JSON(facts))

# %% [markdown]
# ## One canonical example
# `messages` holds the user turn and an assistant turn split into `think` and `answer`; the chat template
# only sees them joined as `<think>\n…\n</think>\n\nanswer` (`lib.reasoning_data.assistant_text`).

# %%
display(JSON(splits.train[0]))

# %% [markdown]
# ## What was rejected, and why
# Each reject keeps its line number, so a bad row can be found and fixed in the source file.

# %%
rejects = splits.train_rejects + splits.heldout_rejects
display(Markdown("\n".join([f"- line {r.line}: {r.reason}" for r in rejects[:10]]) or "No rejected rows."))

# %% [markdown]
# ## In this notebook we
# - turned the recipe's source into canonical `{id, messages, answer, source, domain}` rows,
# - set aside held-out prompts from a split the model never sees in training,
# - wrote `train.jsonl`, `heldout.jsonl`, `rejects.jsonl` and a manifest under `runs/<recipe>/01_data/`.
#
# Next: **02_masking** decides which of these tokens the model is trained on.
