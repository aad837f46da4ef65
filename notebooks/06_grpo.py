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
# # 06 · GRPO: reward correct, closed, concise thinking
#
# SFT (03) taught the model the *habit* of thinking from a teacher's traces. GRPO — the method behind DeepSeek-R1's
# reasoning — lets it learn from its own attempts: for each prompt it samples a group of completions, scores each with
# **verifiable rewards** (is the answer right, by math-verify against the reference; is there exactly one closed
# `<think>…</think>` before an answer; did it stop before the length limit), and pushes up the completions that
# scored above their group's mean. No learned reward model, no value network: the group is the baseline.
#
# The policy continues 03's LoRA adapter on the same base (`grpo.start_from: sft`), with TRL's `GRPOTrainer`. Then
# the adapter goes through 04's merge (checked) and GGUF export, and the exported file through 05's judgement on
# the very held-out prompts 05 used, so the last table shows base → SFT → SFT+GRPO side by side. A dry-run checks
# TRL's arguments and plans the memory of one step; nothing loads.

# %% tags=["parameters"]
model = "smollm2_135m_arithmetic"
dry_run = False
tiny = False
run_dir = ""
restart = False  # True: delete this stage's checkpoints and train GRPO from step 0
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

from lib.display import facts_table, table
from lib.grpo.stage import grpo_prompts, recipe_settings, source_rows
from lib.modes import make_run_config

cfg = make_run_config(model, dry_run, run_dir, tiny=tiny)
settings = recipe_settings(cfg)  # the recipe's grpo: section, checked
# 01's training rows (never the held-out split), or grpo.dataset_path's through 01's checks, with reference answers
rows, source, dropped = source_rows(cfg)
prompts = grpo_prompts(cfg, rows, source)
display(facts_table(dropped, title=f"Rows of {source}, and every one left out with its reason"))
display(facts_table({"prompts": len(prompts), "from": source, "group (completions per prompt)": settings.num_generations,
                     "prompts per step": settings.prompts_per_step, "steps": settings.max_steps,
                     "max completion tokens": settings.max_completion_length, "beta (KL)": settings.beta,
                     "loss": settings.loss_type, "learning rate": settings.learning_rate,
                     "reward weights": settings.reward_weights}, title="GRPO settings"))

# %% [markdown]
# ## The rewards, on the prompts' own traces first
# Each reward is a small pure function (`lib.grpo.rewards`). Before any sampling they are run on the verified traces
# of the rows the prompts come from, rendered as the model writes them: every one must earn full correctness and
# format rewards, or 06 stops here: a reward that failed the training data would punish exactly what SFT taught.
# Then one example prompt as the trainer sees it.

# %%
from lib.grpo.stage import reward_check

checked = reward_check(rows)
display(facts_table(checked, title="Rewards summed over the first verified traces (each equals the number of traces)"))
print(prompts[0])

# %% [markdown]
# ## Train (or plan)
# One line per step: the weighted reward, each reward's mean, the mean completion length and the share of
# completions cut at `max_completion_length`. A checkpoint is written every `save_steps`; a killed run continues
# from the last complete one when the recipe, prompts and 03's adapter are unchanged (as 03 does), `restart` starts
# over. After training: 04's merge and export of the new adapter and 05's judgement of the files.

# %%
from lib.grpo.stage import run_grpo

facts = run_grpo(cfg, prompts, restart=restart, extra_facts={"prompt_source": dropped, "reward_check": checked})
display(facts_table({k: v for k, v in facts.items() if k not in ("results", "gain_over_sft", "settings", "merge",
                                                                        "prompt_source")}))

# %% [markdown]
# ## Reward curves
# The means per step of each reward (left) and the completions' length with the share cut at the limit (right).
# A rising correctness curve is the model getting answers right more often on its training prompts; whether that
# carries to the held-out problems is the next table.

# %%
from lib.display import reward_plot
from lib.grpo.stage import STAGE, grpo_log, reward_curves

curves = reward_curves(grpo_log(cfg))
display(reward_plot(curves, cfg.stage_dir(STAGE) / "rewards.png", f"{cfg.recipe.name}: GRPO rewards"))
display(table(curves[:: max(1, len(curves) // 10)], title="Every tenth logged step"))

# %% [markdown]
# ## Base → SFT → SFT+GRPO on the held-out problems
# 05's rows for the base model and the SFT files, then 06's files, judged on the same prompts with the same sampling:
# pass@1 with its 95 % interval, how often `</think>` was closed, the thinking length and the loop rate.

# %%
from lib.display import eval_rows
from lib.grpo.stage import side_by_side

display(table(eval_rows(side_by_side(cfg, facts)), empty="Nothing judged (dry-run: no file)."))

# %% [markdown]
# Did GRPO help? Two intervals that overlap cannot say: the SFT and SFT+GRPO files answered the same problems with
# the same seeds, so the question is the per-problem difference. SFT+GRPO minus SFT, in percentage points, with a
# 95 % interval from a paired bootstrap over problems (an interval that holds 0: no change this sample can show).

# %%
from lib.display import gain_rows

display(table(gain_rows(facts.get("gain_over_sft", [])), empty="Nothing judged (dry-run: no file)."))

# %% [markdown]
# ## In this notebook we
# - drew GRPO's prompts from 01's training rows and checked the rewards on 01's own traces,
# - trained 03's adapter further with GRPO (or planned one step's memory in a dry-run), with checkpoints to resume,
# - merged and exported the result through 04's code and judged it through 05's, beside the base and SFT files.
