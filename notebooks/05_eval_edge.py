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
# asked the recipe's benchmarks (`eval_benchmarks`: 01's held-out rows, GSM8K, MATH-500, AIME24) with
# DeepSeek-R1's recommended sampling (temperature 0.6, top-p 0.95, fixed seed; greedy decoding sends small
# reasoning models into endless repetition), `eval_k` samples per problem. Answers are judged by math-verify, the
# rule the data stage verifies traces with. For every file and benchmark: **pass@1** (the mean over the k
# samples) with a 95 % interval (bootstrap over problems), maj@k, how often it **closes `</think>`**, hits the
# token budget or **loops**, how long it thinks, tokens/s, time to first token and peak RSS on this machine.
# A recipe that uses a repeat penalty names one file (`eval_ablation_file`) to judge again without it: the
# `…-no-repeat-penalty` row shows what the penalty buys. The same judge runs on any GGUF from a shell:
# `python -m lib eval FILE.gguf --benchmark math500 --n 50 --k 4`.

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
from IPython.display import Markdown, display

from lib.display import (accuracy_chart, budget_chart, budget_rows, eval_rows, facts_table, ladder_rows, table,
                         think_length_histograms)
from lib.evaluate.stage import STAGE, read_heldout, run_eval, samples_by_file
from lib.modes import make_run_config
from lib.paths import gguf_dir

cfg = make_run_config(model, dry_run, run_dir, tiny=tiny)
heldout = read_heldout(cfg)
display(facts_table({"held-out prompts": len(heldout), "benchmarks (problems, 0 = all)": cfg.recipe.eval_benchmarks,
                     "samples per problem (k)": cfg.recipe.eval_k, "sampling": cfg.recipe.eval_sampling(),
                     "max new tokens": cfg.recipe.eval_max_tokens}))

# %% [markdown]
# ## Run every file on every benchmark
# (In a dry-run no model runs: the prompts are checked and the memory each file needs on a device is estimated.)

# %%
facts = run_eval(cfg, heldout)
display(facts_table({"problems per benchmark": facts["problems"],
                     "held-out references math-verify cannot read": facts["unjudgeable_references"] or "none",
                     "files judged": facts["judged_files"] or "none (dry-run)",
                     "not judged (this machine's memory)": facts["not_judged"] or "none",
                     "not judged (the recipe's eval_files)": facts.get("not_judged_by_recipe") or "none"}))
display(table(facts["edge_memory"], title="Memory on a device: weights + KV cache at eval_n_ctx"))

# %%
display(table(eval_rows(facts["results"]), empty="No model was run (dry-run)."))

# %% [markdown]
# ## Accuracy with its interval, and closure, per file
# A bar's whisker is the 95 % interval of pass@1: two files whose intervals overlap widely are not shown apart by
# this many problems.

# %%
out, first = cfg.stage_dir(STAGE), next(iter(cfg.recipe.eval_benchmarks))
display(accuracy_chart(facts["results"], out / "results.png", cfg.recipe.name))

# %% [markdown]
# ## The quant ladder: what each quant loses against F16
# The same problems and seeds through F16 and each quant; a drop is F16 minus the quant, in percentage points,
# with a paired 95 % interval. A quant whose drop passes the recipe's `eval_max_drop` is flagged here (and in
# `results.json`), never hidden.

# %%
display(table(ladder_rows(facts["ladder"]), empty="No ladder: fewer than two distilled files judged (a dry-run "
              "judges none; the recipe's eval_files may name one)."))
display(facts_table({"flagged": facts["flagged"] or "none: every quant is within the recipe's eval_max_drop"}))

# %% [markdown]
# ## What a think budget costs
# Each distilled file again at the recipe's `eval_think_budgets` on the first benchmark: a thought still open at
# its budget is ended for the model (`</think>` + `eval_answer_prefix`, s1's budget forcing; llama.cpp's
# `--reasoning-budget` ends it the same way) and it answers. Where accuracy holds at a small budget, that budget is
# the deployment setting: fewer tokens, less time per answer on the device.

# %%
display(table(budget_rows(facts["think_budget"]), empty="No budget runs (dry-run or no eval_think_budgets)."))
display(budget_chart(facts["think_budget"], out / "think_budget.png", f"{cfg.recipe.name} · {first}"))

# %% [markdown]
# ## How long each file thinks
# Think length (tokens) of the samples that closed `</think>`, on the first benchmark; a quant that thinks much
# longer than F16, or never stops, shows here before it shows in accuracy.

# %%
display(think_length_histograms(samples_by_file(out, facts["results"], first), out / "think_lengths.png",
                                f"{cfg.recipe.name} · {first}"))

# %% [markdown]
# ## One answer from the distilled model

# %%
display(facts_table(facts["example"], empty="No generation in a dry-run."))

# %% [markdown]
# ## The model card
# 04 wrote `README.md` beside the GGUF files (recipe, data and licences, how to run them with the sampling judged
# here); 05 has just added its table. `python -m lib push RECIPE --repo ID` uploads that folder to the hub and
# `python -m lib serve RECIPE` serves a file of it.

# %%
card = gguf_dir(cfg.run_dir) / "README.md"
display(Markdown(card.read_text().split("---\n", 2)[-1] if card.is_file() else "*No files, no card (dry-run).*"))

# %% [markdown]
# ## In this notebook we
# - ran the base model and each exported GGUF through llama.cpp with the template stored in the file,
# - judged pass@1 (with its interval), maj@k, `</think>` closure, truncation, loops, think length, tokens/s, time
#   to first token and peak RSS on each benchmark the recipe names,
# - set each quant against F16 on the same problems (the quant ladder) and flagged any past `eval_max_drop`,
# - measured what ending the thought at a budget costs in accuracy and saves in tokens,
# - wrote `results.json`, one JSON and the judged samples per (file, benchmark) and the charts under
#   `runs/<recipe>/05_eval_edge/`, and the evaluation table into the model card beside the files.
#
# Low accuracy from a 135M model is expected and reported as measured: what distillation teaches it here is
# the *habit* — open a thought, reason, close it, answer — which is what the closure rate checks.
