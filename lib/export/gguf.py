"""Convert a merged model to GGUF with llama.cpp's own converter, quantize it, and compare sizes with estimates.

Usage: ``f16 = convert_to_gguf(merged_dir, out / "model-F16.gguf"); quantize_gguf(f16, out / "model-Q8_0.gguf", "Q8_0")``

The converter is `convert_hf_to_gguf.py` from the llama.cpp that `llama-cpp-python` vendors: it is taken from
that package's sdist (kept in the user cache, downloaded from PyPI once if missing), never copied into this
repo, and run with the sdist's own `gguf-py` so converter and quantizer come from the same llama.cpp.
Quantization goes through `llama_cpp.llama_model_quantize`, the library call behind `llama-quantize`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

from lib.export.gguf_layout import read_gguf_layout
from lib.native_output import log_tail, native_stderr_to
from lib.paths import atomic_path, cache_dir, publish_dir

_CONVERTER_MEMBERS = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/convert_lora_to_gguf.py",
                      "vendor/llama.cpp/conversion/", "vendor/llama.cpp/gguf-py/")


class ExportError(RuntimeError):
    """Conversion or quantization failed; the message carries the tool's own error."""


def llama_cpp_version() -> str:
    return metadata.version("llama-cpp-python")


def special_texts(llm) -> tuple[str, str]:
    """(BOS, EOS) as text, of a llama-cpp-python `Llama` (vocab_only is enough): what a chat template writes."""
    text = lambda token: llm._model.token_get_text(token) if token != -1 else ""  # noqa: E731
    return text(llm.token_bos()), text(llm.token_eos())


def render_chat(template: str, messages: list[dict], bos: str, eos: str, add_generation_prompt: bool = True,
                template_kwargs: dict | None = None) -> str:
    """A GGUF's chat template rendered as llama-cpp-python renders it (jinja2, the file's BOS/EOS text): the one
    place 05, `serve`, 04's round trip and the Modelfile check render a GGUF's chat."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    render = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                 add_generation_prompt=add_generation_prompt)
    return render(messages=messages, **(template_kwargs or {})).prompt


def gpu_offload() -> bool:
    """Whether this llama-cpp-python was built with a GPU backend (CUDA, Metal, Vulkan): then 04's round trip, 05 and
    `serve` put every layer on the GPU; a CPU build keeps them all on the CPU."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def llama_cpp_sources(version: str | None = None) -> Path:
    """Folder holding `convert_hf_to_gguf.py`, `convert_lora_to_gguf.py`, `conversion/` and `gguf-py/` of the
    installed llama-cpp-python (a folder of its own per set of members: an older cache lacks the LoRA converter)."""
    version = version or llama_cpp_version()
    target = cache_dir() / f"llama.cpp-{version}-converters"
    if (target / "convert_lora_to_gguf.py").is_file():
        return target
    sdist = cache_dir() / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        _download_sdist(version, sdist.parent)

    def fill(folder: Path) -> None:
        with tarfile.open(sdist) as archive:
            prefix = f"llama_cpp_python-{version}/"
            members = [m for m in archive.getmembers()
                       if any(m.name.startswith(prefix + want) for want in _CONVERTER_MEMBERS)]
            for member in members:
                member.name = member.name[len(prefix + "vendor/llama.cpp/"):]
            archive.extractall(folder, members=members, filter="data")

    publish_dir(target, fill, "convert_lora_to_gguf.py")
    return target


def _download_sdist(version: str, folder: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={version}", "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportError(f"could not fetch the llama-cpp-python {version} sdist (it carries convert_hf_to_gguf.py): "
                          f"{done.stderr.strip()[-500:]}. Put llama_cpp_python-{version}.tar.gz into {folder}.")


def convert_to_gguf(hf_dir: Path, out_path: Path, outtype: str = "f16") -> Path:
    """Run llama.cpp's converter on a merged HF folder; the chat template travels into the GGUF metadata."""
    sources = llama_cpp_sources()
    env = {**os.environ, "PYTHONPATH": str(sources / "gguf-py") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with atomic_path(out_path) as partial:
        command = [sys.executable, str(sources / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", outtype,
                   "--outfile", str(partial)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not partial.is_file():
            raise ExportError(f"convert_hf_to_gguf.py failed on {hf_dir}:\n{done.stderr.strip()[-2000:]}")
    return out_path


def convert_lora_to_gguf(adapter_dir: Path, base_dir: Path, out_path: Path, outtype: str = "f16") -> Path:
    """The PEFT adapter as a GGUF LoRA adapter (llama.cpp's own `convert_lora_to_gguf.py`): one base GGUF, many
    adapters (`llama-server -m base.gguf --lora adapter.gguf`). `base_dir`: the base model's HF folder (its config
    is all the converter reads)."""
    sources = llama_cpp_sources()
    env = {**os.environ, "PYTHONPATH": str(sources / "gguf-py") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1"}  # the base is local: never let the converter fall back on the hub
    with atomic_path(out_path) as partial:
        command = [sys.executable, str(sources / "convert_lora_to_gguf.py"), str(adapter_dir), "--base",
                   str(base_dir), "--outtype", outtype, "--outfile", str(partial)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not partial.is_file():
            raise ExportError(f"convert_lora_to_gguf.py failed on {adapter_dir}:\n{done.stderr.strip()[-2000:]}")
    return out_path


def lora_gguf_name(recipe_name: str) -> str:
    return f"{recipe_name}-LoRA-F16.gguf"


def quantize_gguf(source: Path, target: Path, quant_type: str, n_threads: int = 2) -> Path:
    """Quantize `source` (a 16-bit GGUF) to `quant_type` (e.g. Q8_0, Q4_K_M) with llama.cpp's quantizer. Its log
    (a line per tensor, with the fallback types) goes to `logs/<target>.log` beside the file, not the notebook."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant_type}", None)
    if ftype is None:
        known = sorted(n.removeprefix("LLAMA_FTYPE_MOSTLY_") for n in dir(llama_cpp)
                       if n.startswith("LLAMA_FTYPE_MOSTLY_"))
        raise ExportError(f"unknown quant type {quant_type!r}; llama.cpp knows: {', '.join(known)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, n_threads
    log = target.parent / "logs" / f"{target.name}.log"
    log.unlink(missing_ok=True)
    with atomic_path(target) as partial:
        with native_stderr_to(log):
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        if status != 0 or not partial.is_file():
            raise ExportError(f"llama_model_quantize({source.name} -> {quant_type}) returned {status}; its log "
                              f"({log}) ends:\n{log_tail(log)}")
    return target


def gguf_tensor_type_counts(path: Path) -> dict[str, int]:
    """How many tensors of each ggml type a GGUF holds (shows llama.cpp's fallbacks, e.g. in Q4_K_M)."""
    return read_gguf_layout(path).type_counts()


def size_table(files: dict[str, Path], estimates: dict[str, int], names: dict[str, str]) -> list[dict]:
    """One row per planned file (`names`: quant -> file name): estimated bytes and, for a file written, its real
    bytes and the estimate's relative error (pure, for the notebook table)."""
    rows = []
    for quant, estimate in estimates.items():
        row = {"quant": quant, "file": names[quant], "estimated_bytes": estimate, "real_bytes": None,
               "error_pct": None}
        if quant in files:
            real = files[quant].stat().st_size
            row.update(real_bytes=real, error_pct=round(100 * (estimate - real) / real, 2))
        rows.append(row)
    return rows


def weights_bytes(path: Path) -> int:
    """What loading a model reads: a GGUF file's size, or the safetensors of a Hugging Face model folder."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) if path.is_dir() else path.stat().st_size


def gguf_name(recipe_name: str, quant: str) -> str:
    return f"{recipe_name}-{quant}.gguf"


def export_ggufs(recipe_name: str, merged_dir: Path, gguf_dir: Path, quant_types: list[str], n_threads: int
                 ) -> dict[str, Path]:
    """F16 from the merged folder, then each quant type from it: {quant: path}."""
    gguf_dir.mkdir(parents=True, exist_ok=True)
    files = {"F16": convert_to_gguf(merged_dir, gguf_dir / gguf_name(recipe_name, "F16"), "f16")}
    for quant in quant_types:
        if quant != "F16":
            files[quant] = quantize_gguf(files["F16"], gguf_dir / gguf_name(recipe_name, quant), quant, n_threads)
    return files
