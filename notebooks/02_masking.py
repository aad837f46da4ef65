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
# headers — gets label `-100`. The mask comes from the model's **own chat template** (`lib.masking.templates`),
# with no hand-written delimiters. This is the only place the training set is tokenised: the masked examples and
# the `max_length` they fit are saved here, and 03 trains on exactly them.

# %% tags=["parameters"]
model = "smollm2_135m"
dry_run = False
tiny = False
run_dir = ""
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
from IPython.display import display

from lib.display import (example_browser, facts_table, length_plot, mask_view, rejects_table, table,
                         trained_fraction_table)
from lib.masking.stage import STAGE, mask_rows, read_rows, save_masked, turn_type_examples
from lib.masking.templates import trained_text
from lib.modes import make_run_config

cfg = make_run_config(model, dry_run, run_dir, tiny=tiny)
rows = read_rows(cfg)
tokenizer = cfg.mode.tokenizer()
display(facts_table({"rows from 01_data": len(rows), "tokenizer": type(tokenizer).__name__,
                     "vocabulary": len(tokenizer), "eos token": tokenizer.eos_token}))

# %% [markdown]
# ## Mask every training example
# One batched tokenizer call per 256 rows. Every example is checked to train its `</think>`, its answer and its
# end-of-turn token; a row the template cannot mask is a counted reject.

# %%
masked = mask_rows(cfg.recipe, rows, tokenizer)
facts = save_masked(cfg, masked)
display(facts_table({k: facts[k] for k in ("examples", "tokens", "trained_tokens", "trained_fraction",
                                           "all_masked", "untrained_turns", "cannot_mask")}))

# %% [markdown]
# ## Token lengths and the length policy
# A trainer truncating at `max_length` would cut the end of the longest examples — their `</think>`, answer and
# end-of-turn token, which is how a model never learns to stop. So nothing is cut: `overlong_policy` raises,
# drops (counted), or fits `max_length` to a percentile of the lengths, with the memory this costs.

# %%
display(table([facts["lengths"]], title="Tokens per example, as trained"))
display(facts_table({"length policy": facts["length_policy"]["note"], "max_length for training": facts["max_length"],
                     "planned memory (GiB)": facts["memory_at_max_length"]["total_gib"],
                     "budget": f"{cfg.recipe.vram_budget_gib} GiB ({cfg.recipe.hardware})"}))
display(length_plot(list(masked.lengths.values()), [e.n_trained / len(e.input_ids) for e in masked.examples],
                    cfg.recipe.max_length, facts["max_length"], cfg.stage_dir(STAGE) / "lengths.png",
                    cfg.recipe.name))

# %% [markdown]
# Rows 02 could not train: the template refused them, or they are longer than `max_length` (the line is the row's
# line in `01_data/train.jsonl`; `02_masking/rejects.jsonl` has every one).

# %%
display(rejects_table(facts["rejected_per_reason"], facts["reject_samples"]))

# %% [markdown]
# ## What the loss sees, per turn type
# Green tokens are trained, grey ones are masked; hover a token for its id. First a training example as it is
# trained, then (with a chat template) two training rows joined into one two-turn conversation: with
# `assistant_turns: all` every reply is trained, with `last` only the final one. Templates that rewrite earlier
# replies (Qwen3 drops their `<think>`) leave those untrained and list them under `untrained_turns`.

# %%
for title, example in turn_type_examples(cfg.recipe, rows, tokenizer).items():
    display(mask_view(title, example, tokenizer))
    display(table([{"trained text (start)": trained_text(example, tokenizer)[:300],
                    "untrained turns": example.untrained_turns or "none"}]))

# %% [markdown]
# ## Browse every example
# In JupyterLab the slider shows any example's coloured view; a rendered (static) notebook only shows the
# widget's text, the fixed views above stand in for it.

# %%
display(example_browser(masked.examples, masked.ids, tokenizer))

# %% [markdown]
# ## Trained-token fraction per example

# %%
display(trained_fraction_table(masked.examples, masked.ids))

# %% [markdown]
# ## In this notebook we
# - rendered each conversation with the model's chat template and trained only the assistant's content and
#   its end-of-turn token,
# - measured every example and applied the length policy (nothing truncated, every drop counted),
# - saved `masked.parquet` (ids, input_ids, labels), `rejects.jsonl`, the length histogram and a manifest with
#   the max_length training uses under `runs/<recipe>/02_masking/`.
#
# Next: **03_train** fine-tunes LoRA adapters on exactly these labels.
