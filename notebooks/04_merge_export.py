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
# computed from the architecture alone (`lib.gguf_size`).

# %% tags=["parameters"]
model = "smollm2_135m"
dry_run = False
run_dir = ""

# %%
from IPython.display import JSON, display

from lib.reasoning_data import to_chat_messages
from lib.run_config import make_run_config
from lib.stage_data import load_splits
from lib.stage_export import run_export

cfg = make_run_config(model, dry_run, run_dir)
train, _ = load_splits(cfg)
# probe texts for the merge check: real training conversations, question and reasoning included
probe_texts = ["\n".join(m["content"] for m in to_chat_messages(row)) for row in train[:3]]

# %% [markdown]
# ## Merge, check, convert, quantize

# %%
facts = run_export(cfg, probe_texts)
display(JSON({k: v for k, v in facts.items() if k not in ("sizes", "files")}))

# %% [markdown]
# ## Real sizes beside the estimates
# The estimate follows llama.cpp's per-tensor rules (which tensors keep more bits in `*_K_M`, which fall
# back when a row length is not a multiple of the 256-wide K-quant block) plus the tokenizer metadata.

# %%
display(JSON({"sizes": facts.get("sizes", facts.get("files"))}))

# %% [markdown]
# ## In this notebook we
# - merged the adapter into the base weights and checked the merged logits against the adapter's,
# - exported an F16 GGUF with llama.cpp's converter and quantized it to the recipe's types,
# - compared every real file size with the architecture-based estimate.
#
# Next: **05_eval_edge** runs each file with llama.cpp and measures whether the model thinks and stops.
