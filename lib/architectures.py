"""Shapes of the decoder-only LLMs thinkdistill works with, read from bundled HF config subsets.

Each ``lib/model_configs/<name>.json`` holds a subset of the model's Hugging Face
``config.json``: the key names are kept verbatim, and a ``_source`` note says where each
number was confirmed. From these files the module works out exact parameter counts, the
LoRA parameter count, and the GGUF tensor list that llama.cpp's converter writes.
Nothing is downloaded.

Four block layouts are known (``model_type``): Llama and Mistral (no biases unless the Llama
config asks for them), Qwen2 (biases on q/k/v) and Qwen3 (an RMSNorm on each query and key
head). The differences are read from the config keys, never from the model's name.

    >>> parameter_count(load_architecture("llama-3.2-3b"))
    3212749824
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# The modules that PEFT can adapt on a Llama/Mistral block. Each value is the
# (in_features, out_features) of that Linear, named by its Architecture attributes.
LORA_MODULES: dict[str, tuple[str, str]] = {
    "q_proj": ("hidden_size", "q_dim"),
    "k_proj": ("hidden_size", "kv_dim"),
    "v_proj": ("hidden_size", "kv_dim"),
    "o_proj": ("q_dim", "hidden_size"),
    "gate_proj": ("hidden_size", "intermediate_size"),
    "up_proj": ("hidden_size", "intermediate_size"),
    "down_proj": ("intermediate_size", "hidden_size"),
}

# The tensor name llama.cpp's converter gives each of those Linears (gguf-py's tensor map: q_proj -> attn_q ...).
GGUF_NAMES: dict[str, str] = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}

KNOWN_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")



def _config_dir():
    """The bundled JSON folder; package data, so that it also works from an installed wheel."""
    # A path next to this file, not importlib.resources: llama-cpp-python's wheel installs a top-level
    # `lib/` folder (its .so files) into site-packages, which resources can resolve instead of this package.
    return Path(__file__).resolve().parent / "model_configs"


@dataclass(frozen=True)
class Architecture:
    """The hyperparameters that decide tensor shapes (and so memory and file sizes)."""

    name: str
    architectures: tuple[str, ...]
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    # Stored as sorted (key, value) pairs, not as a dict, so that the frozen dataclass stays hashable.
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    torch_dtype: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    # The Linears (LORA_MODULES names) that carry a bias vector, e.g. Qwen2's ("q_proj", "k_proj", "v_proj").
    bias_modules: tuple[str, ...] = ()
    # Qwen3: an RMSNorm of head_dim weights on every query and key head (q_norm, k_norm), before rope.
    qk_norm: bool = False

    @property
    def q_dim(self) -> int:
        """Output width of q_proj. It equals hidden_size only when head_dim * heads == hidden."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Output width of k_proj and v_proj under grouped-query attention."""
        return self.num_key_value_heads * self.head_dim

    @property
    def rope_type(self) -> str | None:
        """The rope_scaling type, e.g. "llama3"; None when the config has no scaling."""
        if not self.rope_scaling:
            return None
        scaling = dict(self.rope_scaling)
        return scaling.get("rope_type", scaling.get("type"))


def known_architectures() -> list[str]:
    """Names of the bundled configs (file stems under lib/model_configs)."""
    return sorted(p.name[: -len(".json")] for p in _config_dir().iterdir() if p.name.endswith(".json"))


@lru_cache(maxsize=None)
def _raw_config(name: str) -> dict[str, Any]:
    known = known_architectures()
    if name not in known:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(known)}")
    text = _config_dir().joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def hf_config_dict(name: str) -> dict[str, Any]:
    """The bundled config minus its "_" notes. Pop "model_type" and pass the rest to AutoConfig.for_model (see build_hf_config)."""
    return {k: v for k, v in _raw_config(name).items() if not k.startswith("_")}


def build_hf_config(name: str):
    """A transformers PretrainedConfig for the bundled config, ready for a meta-device model.

    For example ``with torch.device("meta"): AutoModelForCausalLM.from_config(build_hf_config(name))``.
    transformers is imported lazily, so the rest of this module works without it.
    """
    from transformers import AutoConfig  # local import: heavy, and only this helper needs it

    fields = hf_config_dict(name)
    model_type = fields.pop("model_type")  # for_model takes it positionally
    return AutoConfig.for_model(model_type, **fields)


def load_architecture(name: str) -> Architecture:
    """Build the Architecture for a bundled config name. An unknown name raises ValueError listing the known ones."""
    return architecture_from_config(name, hf_config_dict(name))


def bias_modules(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The Linears that transformers builds with a bias for this HF config dict, in LORA_MODULES order.

    Read from the keys as each modeling file reads them: Qwen2 always biases q/k/v (its config has no
    switch); Llama and Qwen3 bias all four attention projections when `attention_bias` is true, and
    Llama its MLP when `mlp_bias` is; Mistral has no bias at all.

    Usage: ``bias_modules({"model_type": "qwen2"})  # -> ("q_proj", "k_proj", "v_proj")``
    """
    model_type = cfg["model_type"]
    if model_type not in KNOWN_MODEL_TYPES:
        # a new family may add tensors this module cannot see: refuse rather than miscount them
        raise ValueError(f"unknown model_type {model_type!r}; known: {', '.join(KNOWN_MODEL_TYPES)}")
    if model_type == "qwen2":
        return _ATTENTION[:3]
    biased = _ATTENTION if model_type in ("llama", "qwen3") and cfg.get("attention_bias") else ()
    return biased + (_MLP if model_type == "llama" and cfg.get("mlp_bias") else ())


def architecture_from_config(name: str, cfg: dict[str, Any]) -> Architecture:
    """The Architecture of an HF config dict (a bundled one, or one shrunk by `lib.tiny` for a --tiny run)."""
    heads = cfg["num_attention_heads"]
    # transformers derives head_dim this way when the config lacks it (older Llama files do).
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    scaling = cfg.get("rope_scaling")
    eos = cfg.get("eos_token_id")
    return Architecture(
        name=name,
        architectures=tuple(cfg.get("architectures", ())),
        model_type=cfg["model_type"],
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        # Configs without the key are plain multi-head attention (transformers' default).
        num_key_value_heads=cfg.get("num_key_value_heads", heads),
        head_dim=head_dim,
        # The transformers default is True, but all bundled files spell it out anyway.
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        max_position_embeddings=cfg["max_position_embeddings"],
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_scaling=tuple(sorted(scaling.items())) if scaling else None,
        torch_dtype=cfg.get("torch_dtype"),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        bias_modules=bias_modules(cfg),
        qk_norm=cfg["model_type"] == "qwen3",  # Qwen3Attention always builds q_norm/k_norm; no config switch
    )


def _layer_linear_shapes(arch: Architecture) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every adaptable Linear in one decoder block."""
    return {mod: (getattr(arch, i), getattr(arch, o)) for mod, (i, o) in LORA_MODULES.items()}


def _block_tensors(arch: Architecture) -> list[tuple[str, tuple[int, ...]]]:
    """One decoder block's tensors as (llama.cpp name without the blk.N. prefix, GGUF shape), in HF module order."""
    h, lin = arch.hidden_size, _layer_linear_shapes(arch)

    def linear(module: str) -> list[tuple[str, tuple[int, ...]]]:
        weight = [(f"{GGUF_NAMES[module]}.weight", lin[module])]
        # a bias has one value per output feature; the converter keeps it 1-D (F32)
        return weight + ([(f"{GGUF_NAMES[module]}.bias", (lin[module][1],))] if module in arch.bias_modules else [])

    attention = [t for module in _ATTENTION for t in linear(module)]
    if arch.qk_norm:
        attention += [("attn_q_norm.weight", (arch.head_dim,)), ("attn_k_norm.weight", (arch.head_dim,))]
    return [("attn_norm.weight", (h,)), *attention, ("ffn_norm.weight", (h,)), *(t for m in _MLP for t in linear(m))]


def gguf_tensor_shapes(arch: Architecture) -> list[tuple[str, tuple[int, ...]]]:
    """Tensors that llama.cpp's convert_hf_to_gguf writes for a model of a known family (KNOWN_MODEL_TYPES).

    The shapes are in GGUF order, where ne0 (the first number) is the row length, i.e. the
    Linear's in_features. That is the reverse of PyTorch's (out, in) weight shape. Biases and
    Qwen3's per-head norms are 1-D.
    """
    h, block = arch.hidden_size, _block_tensors(arch)
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (h, arch.vocab_size))]
    for i in range(arch.num_hidden_layers):
        shapes += [(f"blk.{i}.{n}", s) for n, s in block]
    shapes.append(("output_norm.weight", (h,)))
    if not arch.tie_word_embeddings:
        # With tied embeddings there is no output.weight: llama.cpp reuses token_embd.
        shapes.append(("output.weight", (h, arch.vocab_size)))
    if arch.rope_type == "llama3":
        # The converter precomputes Llama-3.1-style frequency factors into a small F32
        # tensor (head_dim/2 values). It is not a trainable HF parameter.
        shapes.append(("rope_freqs.weight", (arch.head_dim // 2,)))
    return shapes


def parameter_count(arch: Architecture) -> int:
    """Exact number of trainable HF parameters (tied embeddings are counted once)."""
    # every block tensor is an HF parameter: Linears, their biases, the two RMSNorms, Qwen3's q/k norms
    per_layer = sum(math.prod(shape) for _, shape in _block_tensors(arch))
    embeddings = arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    return arch.num_hidden_layers * per_layer + embeddings + arch.hidden_size  # + the final norm


def lora_parameter_count(arch: Architecture, r: int, target_modules: list[str] | tuple[str, ...]) -> int:
    """Parameters that PEFT LoRA adds: r * (in + out) for each adapted Linear in each layer.

    A bias adds nothing: PEFT's A and B matrices carry none, and the base layer's bias stays frozen
    (bias="none", PEFT's default). An unknown module name raises ValueError naming it, so that a
    typo does not silently count as zero.
    """
    if r <= 0:
        raise ValueError(f"LoRA rank must be positive, got {r}")
    unknown = [m for m in target_modules if m not in LORA_MODULES]
    if unknown:
        raise ValueError(f"unknown LoRA target module(s) {unknown}; expected some of {sorted(LORA_MODULES)}")
    shapes = _layer_linear_shapes(arch)
    # A set, because PEFT adapts each module once however often it is listed.
    per_layer = sum(r * (shapes[m][0] + shapes[m][1]) for m in set(target_modules))
    return per_layer * arch.num_hidden_layers
