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

from lib.display import facts_table, note, table
from lib.export.stage import export_conversations, merge_probe_texts, run_export
from lib.jsonl import read_jsonl
from lib.export.merge import MERGE_FACTS
from lib.modes import make_run_config
from lib.run_config import stage_file

cfg = make_run_config(model, dry_run, run_dir, tiny=tiny)
train = read_jsonl(stage_file(cfg, "01_data", "train"))
# probe texts for the merge check: real training conversations, question and reasoning included
probe_texts = merge_probe_texts(train)
# conversations for the template round trip: real ones again, in every shape a chat takes
conversations = export_conversations(cfg, train)

# %% [markdown]
# ## Merge, check, convert, quantize
# The merge runs in memory when the machine has the RAM (merged and checked in float32, saved in the recipe's
# dtype), else shard by shard. The check compares the merged model's logits with the adapter model's, against a
# tolerance that follows from the dtype (bf16 rounds each merged weight once); a sharded merge re-derives merged
# tensors instead. For a QLoRA adapter the gap to the NF4 forward it was trained against is shown too.

# %%
facts = run_export(cfg, probe_texts, conversations)
display(facts_table({k: v for k, v in facts.items() if k in MERGE_FACTS}))

# %% [markdown]
# ## Does the file chat as training did?
# The template embedded in the F16 file, rendered and tokenised as llama.cpp runs it, against the Hugging Face
# tokenizer and template that 02 masked and 03 trained on: conversations with and without a system prompt, with a
# think block in the history, ending on the generation prompt or on the reply. Then `<think>`/`</think>` through
# both vocabularies, the end-of-turn token (it must end generation in llama.cpp), and greedy continuations of the
# merged model against the F16 file. A missing or failing template, think tags that tokenise otherwise or an end of
# turn llama.cpp does not stop at failed the export above, with its reason. Token differences are printed per
# conversation and flagged — on Mistral v3 llama.cpp's SentencePiece tokenizer adds a space after each special
# token (`[INST] x` → `▁`, `▁x`), a difference in how llama.cpp reads any such file, not in this one — and greedy
# agreement below 95 % is flagged (F16 rounding turns near ties; a random `--tiny` model is all near ties).

# %%
trip = facts.get("round_trip")
if trip:
    display(table(trip["conversations"], title="Token ids per conversation (difference: None = identical)"))
    for line in trip["template_differences"]:  # flagged, printed in full: where llama.cpp will read another prompt
        print("FLAG", line)
    display(table(trip["think_tags"], title="Think tags: ids through the HF tokenizer and the GGUF vocabulary"))
    display(table(trip["end_of_turn"], title="End of turn"))
    display(table(trip.get("greedy", []), title=f"Greedy continuations: {trip.get('greedy_agreement')} agree",
                  empty="Greedy comparison off (round_trip_greedy: false)."))
else:
    display(note("No round trip: no file in a dry-run, or a plain prompt format (no template in training)."))

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
# - proved the F16 file renders and tokenises every conversation as training did, and stops where it did,
# - wrote the LoRA adapter alone as a GGUF, an Ollama Modelfile beside each file and the model card (`README.md`),
# - compared every real file size with the architecture-based estimate.
#
# Next: **05_eval_edge** runs each file with llama.cpp and measures whether the model thinks and stops.
