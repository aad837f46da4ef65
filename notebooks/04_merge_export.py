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
# # 04 · Merge and export: one GGUF file per quantization
#
# llama.cpp runs a single file with the weights already merged. This notebook folds the LoRA adapter into
# the base weights (`merge_and_unload`), **proves** the merge changed nothing (merged logits equal adapter
# logits within 1e-3), converts the merged model with llama.cpp's own `convert_hf_to_gguf.py` (from the
# `llama-cpp-python` sdist, with the chat template embedded in the file), and quantizes it with
# `llama_cpp.llama_model_quantize` to each type the recipe lists. Real file sizes sit beside the estimates
# computed from the architecture alone (`lib.plan.gguf_size`).

# %% tags=["parameters"]
model = "smollm2_135m"
dry_run = False
tiny = False
run_dir = ""

# %%
from IPython.display import display

from lib.display import facts_table, table
from lib.export.stage import merge_probe_texts, run_export
from lib.jsonl import read_jsonl
from lib.export.merge import MERGE_FACTS
from lib.modes import make_run_config
from lib.run_config import stage_file

cfg = make_run_config(model, dry_run, run_dir, tiny=tiny)
train = read_jsonl(stage_file(cfg, "01_data", "train"))
# probe texts for the merge check: real training conversations, question and reasoning included
probe_texts = merge_probe_texts(train)

# %% [markdown]
# ## Merge, check, convert, quantize
# The merge runs in memory when the machine has the RAM (merged and checked in float32, saved in the recipe's
# dtype), else shard by shard. The check compares the merged model's logits with the adapter model's, against a
# tolerance that follows from the dtype (bf16 rounds each merged weight once); a sharded merge re-derives merged
# tensors instead. For a QLoRA adapter the gap to the NF4 forward it was trained against is shown too.

# %%
facts = run_export(cfg, probe_texts)
display(facts_table({k: v for k, v in facts.items() if k in MERGE_FACTS}))

# %% [markdown]
# ## Real sizes beside the estimates
# The estimate follows llama.cpp's per-tensor rules (which tensors keep more bits in `*_K_M`, which fall
# back when a row length is not a multiple of the 256-wide K-quant block) plus the tokenizer metadata.

# %%
display(table(facts["sizes"]))
display(table([{"file": quant, **counts} for quant, counts in facts["tensor_types"].items()],
              title="Tensors per ggml type", empty="No file was written (dry-run): estimates only."))

# %% [markdown]
# ## In this notebook we
# - merged the adapter into the base weights and checked the merge (logits against the adapter's, or merged
#   tensors re-derived when it went shard by shard),
# - exported an F16 GGUF with llama.cpp's converter and quantized it to the recipe's types,
# - compared every real file size with the architecture-based estimate.
#
# Next: **05_eval_edge** runs each file with llama.cpp and measures whether the model thinks and stops.
