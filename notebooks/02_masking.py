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
# # 02 · Masking: train on the answer, not on the question
#
# Response-only fine-tuning computes the loss on the assistant's tokens only: its think, its answer and the
# end-of-turn token that teaches it to stop. Everything else — system text, the user's question, role
# headers — gets label `-100`. The mask comes from the model's **own chat template** (`lib.masking`), with no
# hand-written delimiters, and is checked on the family's real tokenizer.

# %% tags=["parameters"]
model = "smollm2_135m"
dry_run = False
run_dir = ""

# %%
from IPython.display import HTML, JSON, Image, display

from lib.masking import colored_html, trained_text
from lib.run_config import make_run_config, write_manifest
from lib.stage_data import load_splits, with_data_length
from lib.stage_masking import (
    STAGE, example_browser, mask_histograms, mask_rows, tokenizer_for, trained_fraction_table, turn_type_examples,
)

cfg = with_data_length(make_run_config(model, dry_run, run_dir))  # max_length as stage 01 chose it
train, heldout = load_splits(cfg)
tokenizer = tokenizer_for(cfg)
print(type(tokenizer).__name__, "vocab", len(tokenizer), "eos", tokenizer.eos_token)

# %% [markdown]
# ## Mask every training example
# Examples longer than `max_length` are never cut (a cut example loses its `</think>`, answer or end-of-turn
# token): the recipe's `overlong_policy` either stops here or skips them, and they are counted.

# %%
masked = mask_rows(cfg, train, tokenizer)
display(JSON(masked.stats))

# %% [markdown]
# ## What the loss sees, per turn type
# Green tokens are trained, grey ones are masked; hover a token for its id. First a training example as it is
# trained, then (with a chat template) two training rows joined into one two-turn conversation: with
# `assistant_turns: all` every reply is trained, with `last` only the final one. Templates that rewrite earlier
# replies (Qwen3 drops their `<think>`) leave those untrained and list them under `untrained_turns`.

# %%
for title, example in turn_type_examples(cfg, train, tokenizer).items():
    display(HTML(f"<h4>{title}</h4>"))
    display(HTML(colored_html(example, tokenizer)))
    print("trained text:", repr(trained_text(example, tokenizer)[:300]),
          "| untrained turns:", example.untrained_turns or "none")

# %% [markdown]
# ## Browse every example
# In JupyterLab the slider shows any example's coloured view; a rendered (static) notebook only shows the
# widget's text, the fixed views above stand in for it.

# %%
display(example_browser(masked, tokenizer))

# %% [markdown]
# ## Trained-token fraction and lengths

# %%
display(trained_fraction_table(masked))
plot = mask_histograms(masked, cfg.stage_dir(STAGE) / "lengths.png", cfg.recipe.max_length, cfg.recipe.name)
display(Image(filename=str(plot)))
write_manifest(cfg, STAGE, {"train": len(train)}, {"lengths": plot}, masked.stats)

# %% [markdown]
# ## In this notebook we
# - rendered each conversation with the model's chat template and trained only the assistant's content and
#   its end-of-turn token,
# - checked that no example is fully masked and none is silently truncated,
# - saved the length histogram and mask statistics under `runs/<recipe>/02_masking/`.
#
# Next: **03_train** fine-tunes LoRA adapters on exactly these labels.
