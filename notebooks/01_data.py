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
# answers checked against the reference, duplicates and evaluation-set leaks removed. Nothing is dropped
# silently: every removed row is counted with its reason and line number. (Token lengths come in 02, which
# renders each example with the model's chat template.)

# %% tags=["parameters"]
model = "smollm2_135m"  # a recipe in params/ (python -m lib recipes lists them)
dry_run = False  # True: no GPU, no download; a few rows and fixture tokenizers (see lib.modes)
tiny = False  # True: the real code path on CPU with a tiny random model of the recipe's family (lib.tiny)
run_dir = ""  # empty: runs/<model>[-dry-run|-tiny]/
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

from lib.data.stage import build_splits, save_splits, teacher_traces
from lib.display import facts_table, rejects_table, table
from lib.modes import make_run_config

cfg = make_run_config(model, dry_run, run_dir, tiny=tiny)
display(facts_table(cfg.summary(), "This run"))

# %% [markdown]
# ## Optional: traces from a teacher
# `lib.teacher` asks a teacher (any OpenAI-compatible endpoint: vLLM, llama.cpp's server, Ollama; or a local
# GGUF) to solve prompts, keeps only complete traces whose answer matches the reference, and appends them to a
# resumable JSONL whose kept traces the recipe can name as its `dataset_path`. It runs only when the recipe sets
# `teacher_generation`; API keys come from the environment, never from the recipe or this notebook.

# %%
display(facts_table(teacher_traces(cfg), "Teacher traces",
                    empty="No teacher configured: this recipe trains on its dataset_path."))

# %% [markdown]
# ## Read, convert, verify, deduplicate, decontaminate
# `lib.data.pipeline` streams the source once. The schema is detected from the first row (GSM8K, triplets,
# OpenR1-Math, ShareGPT, OpenThoughts, s1K, LIMO, R1-Distill-SFT, chat messages — `lib.data.schemas`) unless
# the recipe names one. Held-out prompts are a seeded sample of the GSM8K **test** split, so they never reach
# training.

# %%
splits = build_splits(cfg)
facts = save_splits(cfg, splits)
audit = facts["train_audit"]
display(table([{k: audit[k] for k in ("schema", "rows_read", "examples", "kept", "rejected", "rows_per_s")}],
              title=audit["source"]))

# %% [markdown]
# ## Answers, duplicates and evaluation-set leaks
# Answers are compared with the reference by `math-verify`; duplicates are exact (case and spacing aside) or near
# (estimated Jaccard ≥ `near_duplicate_threshold`); a prompt covering at least `decontamination_min_overlap` of
# the word `decontamination_ngram`-grams of a GSM8K-test, MATH-500 or AIME24 problem is removed (a shared stock
# phrase is not enough).

# %%
display(facts_table({"answer verification": audit["answer_verification"], "duplicates": audit["duplicates"],
                     "contaminated (per evaluation set)": audit["contaminated"],
                     "stopped at train_rows": audit["stopped_at_limit"],
                     "held-out prompts": facts["heldout_rows"]}))

# %% [markdown]
# ## What was rejected or removed, and why
# Each reason with its count and the first source lines (`01_data/rejects.jsonl` has all of them). Bad rows
# stop the stage only above the recipe's `max_reject_fraction`; duplicates and contamination are removals,
# reported but never a failure.

# %%
display(rejects_table(audit["rejected_per_reason"], audit["reject_samples"],
                      {f"held-out: {reason}": n for reason, n in facts["heldout_rejects"].items()}))

# %% [markdown]
# ## One canonical example
# `messages` holds the user turn and an assistant turn split into `think` and `answer`; the chat template
# only sees them joined as `<think>\n…\n</think>\n\nanswer` (`lib.think.assistant_text`).

# %%
example = splits.train[0]
display(table([{"role": m["role"], "think": m.get("think", ""), "content or answer": m.get("answer", m.get("content"))}
               for m in example["messages"]], title=f"{example['id']} (reference answer: {example['answer']})"))

# %% [markdown]
# ## In this notebook we
# - turned the recipe's source into canonical `{id, messages, answer, source, domain}` rows,
# - verified answers, removed duplicates and evaluation-set overlaps, counting every removal with its reason,
# - set aside held-out prompts from a split the model never sees in training,
# - wrote `train.jsonl`, `heldout.jsonl`, `rejects.jsonl` and a manifest under `runs/<recipe>/01_data/`.
#
# Next: **02_masking** renders each example with the model's chat template, measures it, and decides which of
# its tokens the model is trained on.
