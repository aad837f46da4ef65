"""Estimate peak GPU memory for LoRA/QLoRA training from the model shapes alone, and check it against a budget.

Every number below is an explicit, commented assumption, so a plan can be read, argued
with and tuned. It is not a profiler. Where an assumption was calibrated, the comment
says against what (mainly Unsloth's published Llama-3.1-8B QLoRA context-length table).

    >>> from lib.architectures import load_architecture
    >>> plan_training_memory(load_architecture("llama-3.2-3b"), load_in_4bit=True, lora_r=16,
    ...     lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], optim="adamw_8bit",
    ...     max_length=4096, per_device_train_batch_size=1, gradient_checkpointing="unsloth",
    ...     budget_gib=8).fits
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lib.architectures import Architecture, LORA_MODULES, lora_parameter_count, parameter_count

GIB = 1024**3

# Unquantized tensors (embeddings, lm_head, norms, activations) are bf16/fp16: 2 bytes.
BYTES_16BIT = 2

# bitsandbytes NF4 (what transformers' BitsAndBytesConfig(load_in_4bit=True,
# bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True) and Unsloth's *-bnb-4bit
# checkpoints use). Each weight takes 4 bits. There is one absmax per 64-weight block;
# double quantization stores it as 1 byte plus one fp32 scale per 256 blocks:
# 0.5 + 1/64 + 4/(64*256) = 0.5159 bytes/param (4.127 bits).
NF4_BLOCK = 64
NF4_DQ_BLOCKS = 256
NF4_BYTES_PER_PARAM = 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_DQ_BLOCKS)

# PEFT upcasts adapter weights to fp32 (autocast_adapter_dtype=True), and gradients take
# their parameter's dtype.
LORA_WEIGHT_BYTES = 4
LORA_GRAD_BYTES = 4

# Optimizer state per trainable parameter. The LoRA weights are already fp32, so there is
# no separate master copy.
OPTIMIZER_STATE_BYTES: dict[str, float] = {
    "adamw_torch": 8,        # exp_avg + exp_avg_sq in fp32
    "adamw_torch_fused": 8,
    "adamw_hf": 8,
    "paged_adamw_32bit": 8,  # counted as resident; paging only helps under memory pressure
    "adamw_8bit": 2,         # bitsandbytes blockwise 8-bit: 1 byte per moment (its absmax per 2048 is negligible)
    "adamw_bnb_8bit": 2,
    "paged_adamw_8bit": 2,   # the same state, in pageable (unified) memory; counted as resident to stay safe
    "sgd": 0,
}

# The CUDA context (~0.5 GiB for torch + cuBLAS/cuDNN handles) plus cuBLAS workspaces,
# Triton kernels and caching-allocator fragmentation. One GiB is what the intercept of
# Unsloth's Llama-3.1-8B table asks for (about 7.9 GB fixed cost at r=32, all 7 modules).
CUDA_CONTEXT_BYTES = 1 * GIB

# Unsloth's fused, chunked cross-entropy never holds the whole (tokens x vocab) logits.
# We assume 256-token chunks, with fp32 logits plus their fp32 gradient live together
# (8 bytes per element; 263 MB for a 128k vocabulary). Unsloth sizes its chunks
# dynamically. 256 is the value at which our plan reproduces its published Llama-3.1-8B
# table (r=32, all 7 modules) within -13 %..-1 % for the 8..80 GiB rows; a larger chunk
# made the small-GPU rows (where this constant dominates) far too pessimistic.
UNSLOTH_CE_CHUNK_TOKENS = 256
UNSLOTH_CE_BYTES_PER_LOGIT = 4 + 4

# Plain transformers/TRL causal-LM loss: bf16 logits (2) are upcast to fp32 (4), the
# cross-entropy saves an fp32 log-softmax (4), and backward makes an fp32 gradient (4)
# and a bf16 gradient (2), giving 16 bytes per (token, vocab) element at the peak. With
# the activations this gives 2.59 MB per token for Llama-3-8B. The "Hugging Face + FA2"
# column of the same Unsloth table rises by 2.65 MB per token between its 40 and 80 GiB
# rows.
HF_LOGIT_BYTES_PER_ELEMENT = 2 + 4 + 4 + 4 + 2

# A distillation teacher's logits are produced under no_grad and held in bf16 for the KD
# loss at every student position.
TEACHER_LOGIT_BYTES = 2

CHECKPOINT_MODES = (False, True, "unsloth")


@dataclass
class MemoryPlan:
    """A peak-memory estimate broken into named parts (bytes), compared with a budget."""

    components: dict[str, int]
    total_bytes: int
    budget_bytes: int
    fits: bool
    assumptions: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, with GiB figures for people to read."""
        return {
            "components": dict(self.components),
            "components_gib": {k: round(v / GIB, 3) for k, v in self.components.items()},
            "total_bytes": self.total_bytes,
            "total_gib": round(self.total_bytes / GIB, 3),
            "budget_bytes": self.budget_bytes,
            "budget_gib": round(self.budget_bytes / GIB, 3),
            "fits": self.fits,
            "assumptions": dict(self.assumptions),
        }


def _embedding_params(arch: Architecture) -> int:
    """embed_tokens plus lm_head (counted once when they are tied)."""
    return arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)


def _linear_params(arch: Architecture) -> int:
    """The parameters bitsandbytes quantizes: every nn.Linear inside the decoder blocks."""
    per_layer = sum(getattr(arch, i) * getattr(arch, o) for i, o in LORA_MODULES.values())
    return per_layer * arch.num_hidden_layers


def weight_bytes(arch: Architecture, load_in_4bit: bool, upcast_non_quantized: bool = False) -> dict[str, int]:
    """Frozen base-model memory, split into the quantizable part and the part that stays 16-bit.

    upcast_non_quantized models peft's prepare_model_for_kbit_training, which TRL's
    SFTTrainer calls for a k-bit model. It casts every remaining fp16/bf16 parameter
    (embeddings, lm_head, norms) to fp32. Unsloth skips this.
    """
    linear = _linear_params(arch)
    embeddings = _embedding_params(arch)
    norms = parameter_count(arch) - linear - embeddings  # the RMSNorm weights
    unquantized_bytes = 4 if (load_in_4bit and upcast_non_quantized) else BYTES_16BIT
    if load_in_4bit:
        # transformers' bnb integration skips lm_head (get_keys_to_not_convert), and
        # nn.Embedding is not a Linear, so both stay unquantized, as do the norms.
        body = int(linear * NF4_BYTES_PER_PARAM) + norms * unquantized_bytes
    else:
        body = (linear + norms) * BYTES_16BIT
    return {"base_weights": body, "embeddings_lm_head": embeddings * unquantized_bytes}


def _layer_activation_elems_per_token(arch: Architecture) -> int:
    """Elements that one decoder layer saves for backward, per token (flash/SDPA attention, so no s x s matrix).

    These are the layer input x, the normed x (the LoRA A input), q and the attention
    output (hidden-sized each), k and v after RoPE (kv_dim each), the second residual and
    its normed copy, and gate, up, silu(gate) and silu(gate)*up (intermediate-sized each).
    The r-wide LoRA intermediates are negligible.
    """
    h, i = arch.hidden_size, arch.intermediate_size
    return 6 * h + 2 * arch.kv_dim + 4 * i


def _hf_norm_upcast_elems_per_token(arch: Architecture) -> int:
    """Extra saved tensors of transformers' LlamaRMSNorm: it upcasts to fp32, and autograd
    keeps the fp32 input and the fp32 normalized tensor, twice per layer. That is 4 fp32
    tensors = 8 bf16-sized elements of width h. Unsloth's Triton RMSNorm keeps only its
    input and a per-row rstd."""
    return 8 * arch.hidden_size


def _backward_transient_elems_per_token(arch: Architecture) -> int:
    """Gradients that are live while one layer is backpropagated: d(output) and d(input) of
    the layer (h each) plus the gradient of the widest intermediate tensor (i)."""
    return 2 * arch.hidden_size + arch.intermediate_size


def activation_bytes(arch: Architecture, tokens: int, gradient_checkpointing: bool | str) -> int:
    """Activation memory for `tokens` = batch * max_length, by checkpointing mode.

    - False: every layer keeps its saved tensors until backward.
    - True (torch/HF checkpointing): each layer keeps only its input (h per token) on the
      GPU, and one layer at a time is recomputed in full during backward.
    - "unsloth": the same recomputation, but Unsloth copies the layer inputs to CPU RAM
      asynchronously. Only a double buffer of two layer inputs stays on the GPU.

    The per-layer terms, added to the 16 KB/token double buffer, give ~229 KB/token for
    Llama-3-8B. That matches the ~228 KB/token slope of Unsloth's 24->80 GiB rows.
    """
    if gradient_checkpointing not in CHECKPOINT_MODES:
        raise ValueError(f"gradient_checkpointing must be one of {CHECKPOINT_MODES}, got {gradient_checkpointing!r}")
    layer = _layer_activation_elems_per_token(arch)
    if gradient_checkpointing != "unsloth":
        layer += _hf_norm_upcast_elems_per_token(arch)
    transient = _backward_transient_elems_per_token(arch)
    h, n = arch.hidden_size, arch.num_hidden_layers
    if gradient_checkpointing is False:
        per_token = n * layer + transient
    elif gradient_checkpointing is True:
        per_token = n * h + layer + transient
    else:
        per_token = 2 * h + layer + transient
    return tokens * per_token * BYTES_16BIT


def logits_bytes(arch: Architecture, batch: int, max_length: int, gradient_checkpointing: bool | str) -> int:
    """Memory taken by the LM-head logits and the loss, which is chunked only in the Unsloth path (see the constants)."""
    tokens = batch * max_length
    if gradient_checkpointing == "unsloth":
        return min(tokens, UNSLOTH_CE_CHUNK_TOKENS) * arch.vocab_size * UNSLOTH_CE_BYTES_PER_LOGIT
    return tokens * arch.vocab_size * HF_LOGIT_BYTES_PER_ELEMENT


def _dequant_workspace_bytes(arch: Architecture, load_in_4bit: bool) -> int:
    """For every multi-token matmul (each training forward and backward), bitsandbytes
    dequantizes the 4-bit weight to a temporary 16-bit copy, so the largest Linear must also
    fit once in 16-bit."""
    if not load_in_4bit:
        return 0
    largest = max(getattr(arch, i) * getattr(arch, o) for i, o in LORA_MODULES.values())
    return largest * BYTES_16BIT


def plan_training_memory(
    arch: Architecture,
    *,
    load_in_4bit: bool,
    lora_r: int,
    lora_target_modules: list[str],
    optim: str,
    max_length: int,
    per_device_train_batch_size: int,
    gradient_checkpointing: bool | str,
    budget_gib: float,
    teacher: Architecture | None = None,
    teacher_load_in_4bit: bool = True,
) -> MemoryPlan:
    """Peak GPU memory for one training step of a LoRA/QLoRA student, with an optional teacher.

    gradient_checkpointing="unsloth" means Unsloth's stack: layer checkpoints offloaded to
    CPU RAM and a fused, chunked cross-entropy. True or False means plain transformers/TRL.
    """
    if optim not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"unknown optim {optim!r}; known: {', '.join(OPTIMIZER_STATE_BYTES)}")
    if max_length <= 0 or per_device_train_batch_size <= 0:
        raise ValueError("max_length and per_device_train_batch_size must be positive")
    lora = lora_parameter_count(arch, lora_r, lora_target_modules)
    tokens = per_device_train_batch_size * max_length
    # Only the plain transformers/TRL path runs prepare_model_for_kbit_training.
    components: dict[str, int] = dict(weight_bytes(arch, load_in_4bit, gradient_checkpointing != "unsloth"))
    components["lora_weights"] = lora * LORA_WEIGHT_BYTES
    components["lora_grads"] = lora * LORA_GRAD_BYTES
    components["optimizer_state"] = int(lora * OPTIMIZER_STATE_BYTES[optim])
    components["activations"] = activation_bytes(arch, tokens, gradient_checkpointing)
    components["logits"] = logits_bytes(arch, per_device_train_batch_size, max_length, gradient_checkpointing)
    components["dequant_workspace"] = _dequant_workspace_bytes(arch, load_in_4bit)
    if teacher is not None:
        t = weight_bytes(teacher, teacher_load_in_4bit)
        components["teacher_weights"] = t["base_weights"] + t["embeddings_lm_head"]
        # The teacher's forward runs under no_grad before the student's, so its transient
        # activations are freed before the student's peak. Only its logits persist.
        components["teacher_logits"] = tokens * teacher.vocab_size * TEACHER_LOGIT_BYTES
    components["cuda_context"] = CUDA_CONTEXT_BYTES
    total = sum(components.values())
    budget = int(budget_gib * GIB)
    assumptions = {
        "student": arch.name,
        "teacher": teacher.name if teacher is not None else None,
        "load_in_4bit": load_in_4bit,
        "nf4_bytes_per_param": round(NF4_BYTES_PER_PARAM, 6),
        "lora_params": lora,
        "optim": optim,
        "tokens_per_step": tokens,
        "gradient_checkpointing": gradient_checkpointing,
        "logits": f"chunked fused CE ({UNSLOTH_CE_CHUNK_TOKENS}-token chunks, fp32 + fp32 grad)"
        if gradient_checkpointing == "unsloth"
        else "full logits, 16 B per (token, vocab) element",
    }
    return MemoryPlan(components, total, budget, total <= budget, assumptions)
