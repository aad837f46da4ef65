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
# # 01 · Data: reasoning traces in one canonical form, audited
#
# A model learns to *think before answering* only from examples that show a complete thought: an opening
# `<think>`, the reasoning, a closing `</think>`, then the answer and the end-of-turn token. This notebook reads
# the recipe's source in whatever schema it comes in, turns every row into one canonical form, and audits it:
# answers checked against the reference, duplicates and evaluation-set leaks removed, every example measured in
# tokens with the recipe's own tokenizer and chat template. Nothing is dropped silently and nothing is ever cut:
# every removed row is counted with its reason and line number.

# %% tags=["parameters"]
model = "smollm2_135m"  # a recipe in params/ (python -m lib recipes lists them)
dry_run = False  # True: no GPU, no download; a few rows and fixture tokenizers (see lib.run_config)
run_dir = ""  # empty: runs/<model>[-dry-run]/

# %%
from IPython.display import JSON, Image, Markdown, display

from lib.run_config import make_run_config
from lib.stage_data import build_splits, rejects_table, save_splits, teacher_traces

cfg = make_run_config(model, dry_run, run_dir)
display(JSON(cfg.summary()))

# %% [markdown]
# ## Optional: traces from a teacher
# `lib.teacher_generation` asks a teacher (any OpenAI-compatible endpoint: vLLM, llama.cpp's server, Ollama; or a
# local GGUF) to solve prompts, keeps only complete traces whose answer matches the reference, and appends them to
# a resumable JSONL whose kept traces the recipe can name as its `dataset_path`. It runs only when the recipe sets
# `teacher_generation`; API keys come from the environment, never from the recipe or this notebook.

# %%
display(teacher_traces(cfg))

# %% [markdown]
# ## Read, convert, verify, deduplicate, decontaminate, measure
# `lib.data_pipeline` streams the source once. The schema is detected from the first row (GSM8K, triplets,
# OpenR1-Math, ShareGPT, OpenThoughts, s1K, LIMO, R1-Distill-SFT, chat messages — `lib.data_schemas`) unless
# the recipe names one. Answers are compared with the reference by `math-verify`; duplicates are exact (case and
# spacing aside) or near (estimated Jaccard ≥ `near_duplicate_threshold`); a prompt covering at least
# `decontamination_min_overlap` of the word `decontamination_ngram`-grams of a GSM8K-test, MATH-500 or AIME24
# problem is removed (a shared stock phrase is not enough). Held-out prompts are a seeded sample of the GSM8K
# **test** split, so they never reach training.

# %%
splits = build_splits(cfg)
facts = save_splits(cfg, splits)
audit = facts["train_audit"]
display(JSON({k: audit[k] for k in ("source", "schema", "rows_read", "examples", "kept", "rejected",
                                    "rejected_per_reason", "duplicates", "contaminated", "answer_verification",
                                    "stopped_at_limit", "rows_per_s")}))

# %% [markdown]
# ## What was rejected or removed, and why
# Each reason with its count and the first source lines (the rejects file `01_data/rejects.jsonl` has all of
# them). Bad rows (format, verification, template) stop the stage only above the recipe's
# `max_reject_fraction`; duplicates, contamination and length are removals, reported but never a failure.

# %%
display(Markdown(rejects_table(splits)))

# %% [markdown]
# ## Token lengths as trained, and the length policy
# Each example is measured exactly as 02 will build it (chat template, response-only mask). A trainer truncating
# at `max_length` would cut the end of the longest examples — their `</think>`, answer and end-of-turn token,
# which is how a model never learns to stop. So nothing is cut: `overlong_policy` raises, drops (counted), or
# fits `max_length` to a percentile of the lengths, with the memory this costs.

# %%
display(JSON({"lengths": audit["lengths"], "length_policy": audit["length_policy"],
              "memory_at_max_length": facts["memory_at_max_length"]}))
display(Image(filename=str(cfg.run_dir / "01_data" / "lengths.png")))

# %% [markdown]
# ## One canonical example
# `messages` holds the user turn and an assistant turn split into `think` and `answer`; the chat template
# only sees them joined as `<think>\n…\n</think>\n\nanswer` (`lib.reasoning_data.assistant_text`).

# %%
display(JSON(splits.train[0]))

# %% [markdown]
# ## In this notebook we
# - turned the recipe's source into canonical `{id, messages, answer, source, domain}` rows,
# - verified answers, removed duplicates and evaluation-set overlaps, and measured every example in tokens,
# - set aside held-out prompts from a split the model never sees in training,
# - wrote `train.jsonl`, `heldout.jsonl`, `rejects.jsonl`, `lengths.png` and a manifest under
#   `runs/<recipe>/01_data/` (the manifest holds the max_length training uses).
#
# Next: **02_masking** decides which of these tokens the model is trained on.
