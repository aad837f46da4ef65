"""Estimate peak memory for LoRA/QLoRA training from the model shapes alone, on the backend that runs it, and
check it against a budget.

Every number below is an explicit, commented assumption, so a plan can be read, argued
with and tuned. It is not a profiler. Where an assumption was calibrated, the comment
says against what (mainly Unsloth's published Llama-3.1-8B QLoRA context-length table);
where it was read from a library's source, the comment names the file and version.

Two stacks are planned (`lib.train.backends` decides which one runs): "unsloth"
(FastLanguageModel: Triton RMSNorm, offloaded checkpointing, its fused chunked
cross-entropy) and "transformers+peft" (plain transformers + PEFT under TRL's SFTTrainer:
transformers' own checkpointing, peft's k-bit preparation, TRL's chunked LM head). A
distillation run's loss needs the full student and teacher logits on either stack.

Usage:

    >>> from lib.architectures import load_architecture
    >>> plan_training_memory(load_architecture("llama-3.2-3b"), load_in_4bit=True, lora_r=16,
    ...     lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], optim="adamw_8bit",
    ...     max_length=4096, per_device_train_batch_size=1, gradient_checkpointing="unsloth",
    ...     budget_gib=8, backend="unsloth").fits
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lib.architectures import Architecture, LORA_MODULES, lora_parameter_count, parameter_count

GIB = 1024**3

# The two training stacks, named as lib.train.backends.Backend.name names them.
UNSLOTH, TRANSFORMERS = "unsloth", "transformers+peft"
BACKENDS = (UNSLOTH, TRANSFORMERS)

# Unquantized tensors (embeddings, lm_head, norms, activations) take the compute dtype: 2 bytes
# for bf16/fp16, the GPU recipes' choice (a float32 recipe passes dtype_bytes=4).
BYTES_16BIT = 2
FP32 = 4
DTYPE_BYTES = {"float32": FP32, "bfloat16": BYTES_16BIT, "float16": BYTES_16BIT}  # a recipe's torch_dtype

# bitsandbytes NF4 (what transformers' BitsAndBytesConfig(load_in_4bit=True,
# bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True) and Unsloth's *-bnb-4bit
# checkpoints use). Each weight takes 4 bits. There is one absmax per 64-weight block;
# double quantization stores it as 1 byte plus one fp32 scale per 256 blocks:
# 0.5 + 1/64 + 4/(64*256) = 0.5159 bytes/param (4.127 bits).
NF4_BLOCK = 64
NF4_DQ_BLOCKS = 256
NF4_BYTES_PER_PARAM = 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_DQ_BLOCKS)
# The distillation teacher is loaded without double quantization
# (lib.train.backends.nf4_config(double_quant=False) in _load_teacher): one fp32 absmax per
# 64-weight block, 0.5 + 4/64 = 0.5625 bytes/param (4.5 bits).
NF4_NO_DQ_BYTES_PER_PARAM = 0.5 + 4 / NF4_BLOCK

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
# A CPU run (on_gpu=False) has none of it.
CUDA_CONTEXT_BYTES = 1 * GIB

# --- The loss: how the (tokens x vocab) logits are held, one way per stack ------------------
# "unsloth_fused_ce": Unsloth's fused, chunked cross-entropy never holds the whole
# (tokens x vocab) logits. We assume 256-token chunks, with fp32 logits plus their fp32
# gradient live together (8 bytes per element; 263 MB for a 128k vocabulary). Unsloth sizes
# its chunks dynamically. 256 is the value at which our plan reproduces its published
# Llama-3.1-8B table (r=32, all 7 modules) within -13 %..-1 % for the 8..80 GiB rows; a
# larger chunk made the small-GPU rows (where this constant dominates) far too pessimistic.
# (Unsloth keeps SFTTrainer's loss_type "nll" so that this loss, inside its model forward,
# is the one that runs: unslothai/unsloth PR #8261.)
UNSLOTH_CE_CHUNK_TOKENS = 256
UNSLOTH_CE_BYTES_PER_LOGIT = 4 + 4

# "trl_chunked_lm_head": TRL's SFTTrainer (1.16.0 installed here; 1.15.0 on the GPU pins,
# constraints-gpu.txt) patches the model with add_fused_lm_head (trl/trainer/utils.py) and
# computes the loss from per-token log-probs of ChunkedLogProbFunction
# (trl/kernels/chunked_logprob.py): the full logits are never materialised. The LM head runs on
# tiles of TOKEN_CHUNK_SIZE = 4096 tokens x _CHUNKED_LOGPROB_CHUNK_SIZE = 32768 vocabulary
# entries held in one buffer of the compute dtype (mm_buf), reused for every tile, forward
# and backward (the backward recomputes each tile). Besides the tile it holds, per token,
# the hidden states it saved (a copy: hidden_states[mask] on CUDA, a reshape of a slice
# elsewhere; compute dtype), the fp32 gradient accumulator grad_hidden, and that gradient
# cast back to the compute dtype at the end.
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768
TRL_HIDDEN_COPIES = 2  # saved hidden + grad cast back, each in the compute dtype (plus grad_hidden in fp32)
# On CUDA a Triton kernel folds each tile in registers. Without Triton (any CPU run) the
# fold is torch code (_forward_tile / _backward_tile) whose fp32 temporaries per tile element
# peak in the backward: its locals y, z, log_p, p, grad (5 x 4 bytes), the bool is_target
# (1), and inside `grad += g * (is_target.float() - p)` two fp32 temporaries at a time (the
# float mask and the difference, then the difference and the product: 2 x 4): 29 bytes.
# Measured (peak RSS growth of ChunkedLogProbFunction forward + backward, 2048 x 32768 tile,
# torch 2.13 CPU): 33.0 bytes per tile element in float32 (4 + 29), 31.0 in bf16 (2 + 29).
TRL_CPU_TILE_TEMP_BYTES = 5 * FP32 + 1 + 2 * FP32

# "model_ce": the model's own loss (transformers' ForCausalLMLoss via Trainer.compute_loss, what
# an older stack runs; planned on request). bf16 logits (2) are
# upcast to fp32 (4), the cross-entropy saves an fp32 log-softmax (4), and backward makes an
# fp32 gradient (4) and a bf16 gradient (2), giving 16 bytes per (token, vocab) element at
# the peak. With the activations this gives 2.59 MB per token for Llama-3-8B. The "Hugging
# Face + FA2" column of the same Unsloth table, measured before TRL's chunked head, rises by
# 2.65 MB per token between its 40 and 80 GiB rows.
HF_LOGIT_BYTES_PER_ELEMENT = 2 + 4 + 4 + 4 + 2

# "distillation": lib.train.distill_trainer runs the student's ordinary forward (no labels,
# so neither stack's fused loss) and lib.train.distill_loss.distillation_loss_on_rows on the
# trained rows of the full logits. Per (token, vocab) element at its peak (when torch.where allocates inside
# _kl_teacher_student): the student's logits, which accelerate's ConvertOutputsToFp32 wrapper
# (bf16 mixed precision) hands back in fp32 (4); the selected fp32 copies of the student and
# teacher logits (4 + 4); log_p_student, log_p_teacher, p_teacher (3 x 4); the product
# p_teacher * (log_p_teacher - log_p_student) (4; the difference is already freed); zeros_like
# (4); the bool p_teacher > 0 (1); the result of where (4): 37 bytes. The backward holds less
# (the saved log-softmaxes, p_teacher and the bool, plus a few fp32 gradients). The worst
# case is assumed: every position trained. Measured (peak RSS growth of bf16 logits -> fp32
# -> hybrid_distillation_loss -> backward, 512 tokens x 32000 vocabulary, torch 2.13 CPU):
# 35.9 bytes per element.
DISTILL_STUDENT_BYTES_PER_LOGIT = 4 + 4 + 4 + 3 * FP32 + FP32 + FP32 + 1 + FP32
# The teacher is no accelerate-prepared model: its logits stay in the compute dtype (held by
# the trainer for the whole loss).

# "trained_positions_ce": the CPU trainer's loss (lib.train.trained_positions_loss): the model's
# own cross-entropy, but the LM head runs only at the trained positions, so the per-element
# bytes of "model_ce" count only trained tokens, plus the gathered hidden states (compute
# dtype) those positions are projected from.
# "trained_positions_distillation": the CPU distillation trainer (DistillationTrainer(positions_only=True)): the
# "distillation" loss's bytes per element, for the trained positions only, plus the gathered hidden states; the
# teacher's logits too are made at those positions only.
LOSSES = ("unsloth_fused_ce", "trl_chunked_lm_head", "model_ce", "trained_positions_ce", "distillation",
          "trained_positions_distillation")
# A CPU run's process before any weights: Python with torch, transformers, TRL, PEFT, datasets
# and pyarrow imported, the tokenizer loaded (what a GPU run's CUDA context is to its card).
# Measured 0.45-0.50 GiB: psutil RSS of a fresh interpreter after those imports and
# AutoTokenizer.from_pretrained of SmolLM2 (torch 2.13 CPU, transformers 5.23, TRL 1.16).
CPU_RUNTIME_BYTES = int(0.5 * GIB)
# With lora_dropout > 0 every LoRA module's A multiplies a new tensor, dropout(x): autograd keeps
# it for A's weight gradient (in_features, compute dtype), and the dropout keeps its mask until
# the backward (1 byte per element: nn.Dropout's bool mask, lib.train.lora_dropout's too). With
# LoRA on all 7 projections of SmolLM2 that is as much again as the layer's own saved tensors.
DROPOUT_MASK_BYTES = 1

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


def weight_bytes(arch: Architecture, load_in_4bit: bool, upcast_non_quantized: bool = False,
                 dtype_bytes: int = BYTES_16BIT, nf4_bytes_per_param: float = NF4_BYTES_PER_PARAM) -> dict[str, int]:
    """Frozen base-model memory, split into the quantizable part and the part that stays in the compute dtype.

    upcast_non_quantized models peft's prepare_model_for_kbit_training, which
    lib.train.backends.load_for_training calls for a 4-bit model on the transformers+peft
    stack. peft 0.21.2 (peft/utils/other.py) casts every fp16/bf16 parameter that is not a
    bitsandbytes Params4bit (embeddings, lm_head, norms, biases) to fp32. Unsloth skips this.
    """
    linear = _linear_params(arch)
    embeddings = _embedding_params(arch)
    norms = parameter_count(arch) - linear - embeddings  # the RMSNorm weights (and any biases)
    unquantized_bytes = FP32 if (load_in_4bit and upcast_non_quantized) else dtype_bytes
    if load_in_4bit:
        # transformers' bnb integration skips lm_head (get_keys_to_not_convert), and
        # nn.Embedding is not a Linear, so both stay unquantized, as do the norms.
        body = int(linear * nf4_bytes_per_param) + norms * unquantized_bytes
    else:
        body = (linear + norms) * dtype_bytes
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


def _hf_norm_upcast_bytes_per_token(arch: Architecture) -> int:
    """Extra saved tensors of transformers' LlamaRMSNorm: it upcasts to fp32, and autograd
    keeps the fp32 input and the fp32 normalized tensor, twice per layer: 4 fp32 tensors of
    width h (counted the same for a float32 model, where the upcast is a no-op but the fp32
    normalized tensors are still saved). Unsloth's Triton RMSNorm keeps only its input and a
    per-row rstd."""
    return 4 * arch.hidden_size * FP32


def _backward_transient_elems_per_token(arch: Architecture) -> int:
    """Gradients that are live while one layer is backpropagated: d(output) and d(input) of
    the layer (h each) plus the gradient of the widest intermediate tensor (i)."""
    return 2 * arch.hidden_size + arch.intermediate_size


def lora_dropout_bytes_per_token(arch: Architecture, lora_target_modules: list[str], dtype_bytes: int) -> int:
    """One layer's dropout(x) copies and masks kept for the backward, per token (see DROPOUT_MASK_BYTES)."""
    inputs = sum(getattr(arch, LORA_MODULES[m][0]) for m in lora_target_modules if m in LORA_MODULES)
    return inputs * (dtype_bytes + DROPOUT_MASK_BYTES)


def activation_bytes(arch: Architecture, tokens: int, gradient_checkpointing: bool | str,
                     backend: str = UNSLOTH, dtype_bytes: int = BYTES_16BIT) -> int:
    """Activation memory for `tokens` = batch * max_length, by checkpointing mode and stack.

    - False: every layer keeps its saved tensors until backward.
    - True (transformers' checkpointing, or Unsloth's use_gradient_checkpointing=True): each
      layer keeps only its input (h per token) on the GPU, and one layer at a time is
      recomputed in full during backward.
    - "unsloth": the same recomputation, but Unsloth copies the layer inputs to CPU RAM
      asynchronously. Only a double buffer of two layer inputs stays on the GPU.

    On the transformers+peft stack every layer also saves its RMSNorms' fp32 copies
    (`_hf_norm_upcast_bytes_per_token`).

    The per-layer terms, added to the 16 KB/token double buffer, give ~229 KB/token for
    Llama-3-8B. That matches the ~228 KB/token slope of Unsloth's 24->80 GiB rows.
    """
    if gradient_checkpointing not in CHECKPOINT_MODES:
        raise ValueError(f"gradient_checkpointing must be one of {CHECKPOINT_MODES}, got {gradient_checkpointing!r}")
    if gradient_checkpointing == "unsloth" and backend != UNSLOTH:
        raise ValueError("gradient_checkpointing='unsloth' is Unsloth's own offloaded variant: plan it with "
                         f"backend={UNSLOTH!r}")
    layer = _layer_activation_elems_per_token(arch) * dtype_bytes
    if backend == TRANSFORMERS:
        layer += _hf_norm_upcast_bytes_per_token(arch)
    transient = _backward_transient_elems_per_token(arch) * dtype_bytes
    boundary = arch.hidden_size * dtype_bytes  # one layer input, kept per checkpoint
    n = arch.num_hidden_layers
    if gradient_checkpointing is False:
        per_token = n * layer + transient
    elif gradient_checkpointing is True:
        per_token = n * boundary + layer + transient
    else:
        per_token = 2 * boundary + layer + transient
    return tokens * per_token


def _model_ce_bytes_per_logit(dtype_bytes: int) -> int:
    """ForCausalLMLoss per (token, vocab) element: the logits, their fp32 upcast, the saved
    fp32 log-softmax, the fp32 gradient and its cast back. In a float32 model the upcast and
    the cast back are no-ops, so those two copies are not made."""
    casts = 0 if dtype_bytes == FP32 else FP32 + dtype_bytes
    return dtype_bytes + casts + FP32 + FP32


def logits_bytes(arch: Architecture, batch: int, max_length: int, loss: str, dtype_bytes: int = BYTES_16BIT,
                 on_gpu: bool = True, lm_head_fp32: bool = False, trained_tokens: int | None = None) -> int:
    """Memory taken by the LM-head logits and the loss, by the way `loss` computes them (see the constants).

    trained_tokens: how many of the batch's tokens are trained (the loss "trained_positions_ce" projects only
    those); None: all of them, the worst case.

    lm_head_fp32: peft's k-bit preparation left the LM head in fp32, so TRL's chunked head
    casts each 32768-row slice of it to the compute dtype (one slice copy at a time).
    """
    tokens = batch * max_length
    vocab, hidden = arch.vocab_size, arch.hidden_size
    if loss == "unsloth_fused_ce":
        return min(tokens, UNSLOTH_CE_CHUNK_TOKENS) * vocab * UNSLOTH_CE_BYTES_PER_LOGIT
    if loss == "trl_chunked_lm_head":
        tile = min(tokens, TRL_TOKEN_CHUNK) * min(vocab, TRL_VOCAB_CHUNK)
        tile_bytes = tile * (dtype_bytes + (0 if on_gpu else TRL_CPU_TILE_TEMP_BYTES))
        per_token = hidden * (TRL_HIDDEN_COPIES * dtype_bytes + FP32)
        head_slice = min(vocab, TRL_VOCAB_CHUNK) * hidden * dtype_bytes if lm_head_fp32 and dtype_bytes != FP32 else 0
        return tile_bytes + tokens * per_token + head_slice
    if loss == "model_ce":
        return tokens * vocab * _model_ce_bytes_per_logit(dtype_bytes)
    if loss == "trained_positions_ce":
        trained = tokens if trained_tokens is None else trained_tokens
        return trained * (vocab * _model_ce_bytes_per_logit(dtype_bytes) + hidden * dtype_bytes)
    if loss == "distillation":
        return tokens * vocab * DISTILL_STUDENT_BYTES_PER_LOGIT
    if loss == "trained_positions_distillation":
        trained = tokens if trained_tokens is None else trained_tokens
        return trained * (vocab * DISTILL_STUDENT_BYTES_PER_LOGIT + hidden * dtype_bytes)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def default_loss(backend: str, distillation: bool, on_gpu: bool = True) -> str:
    """The loss each stack runs: distillation's own (on full logits on a GPU, at the trained positions on a CPU),
    else Unsloth's fused CE, TRL's chunked head on a GPU, or the CPU trainer's trained-positions CE
    (lib.train.backends.sft_trainer_class)."""
    if distillation:
        return "distillation" if on_gpu else "trained_positions_distillation"
    if backend == UNSLOTH:
        return "unsloth_fused_ce"
    return "trl_chunked_lm_head" if on_gpu else "trained_positions_ce"


def _largest_linear(arch: Architecture) -> int:
    return max(getattr(arch, i) * getattr(arch, o) for i, o in LORA_MODULES.values())


def _dequant_workspace_bytes(arch: Architecture, load_in_4bit: bool, teacher: Architecture | None,
                             teacher_load_in_4bit: bool, dtype_bytes: int = BYTES_16BIT) -> int:
    """For every multi-token matmul (each training forward and backward, and the 4-bit
    teacher's forward), bitsandbytes dequantizes the 4-bit weight to a temporary copy in the
    compute dtype, so the largest 4-bit Linear must also fit once in that dtype. One matmul
    runs at a time: the student's and the teacher's workspaces are never live together."""
    largest = [_largest_linear(arch)] if load_in_4bit else []
    if teacher is not None and teacher_load_in_4bit:
        largest.append(_largest_linear(teacher))
    return max(largest, default=0) * dtype_bytes


def _check_stack(backend: str, on_gpu: bool, load_in_4bit: bool, teacher_4bit: bool) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not on_gpu and (backend == UNSLOTH or load_in_4bit or teacher_4bit):
        raise ValueError("Unsloth and bitsandbytes 4-bit need a CUDA GPU (lib.train.backends refuses them on a "
                         "CPU): plan a CPU run with backend='transformers+peft' and no 4-bit")


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
    backend: str = UNSLOTH,
    on_gpu: bool = True,
    dtype_bytes: int = BYTES_16BIT,
    loss: str | None = None,
    trained_tokens: int | None = None,
    lora_dropout: float = 0.0,
) -> MemoryPlan:
    """Peak memory for one training step of a LoRA/QLoRA student, with an optional teacher, on `backend`.

    backend: "unsloth" (the default: a GPU with the [gpu] extra) or "transformers+peft".
    gradient_checkpointing: False, True (non-offloaded) or "unsloth" (offloaded; Unsloth only).
    on_gpu=False plans a CPU run: no CUDA context, TRL's torch fallback for its chunked head.
    dtype_bytes: the compute dtype's size (2 for bf16/fp16, 4 for float32).
    loss: None picks what the stack runs (`default_loss`); "model_ce" plans the model's own
    full-logits cross-entropy instead (TRL < 1.16 on a CPU, or an older stack).
    """
    if optim not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"unknown optim {optim!r}; known: {', '.join(OPTIMIZER_STATE_BYTES)}")
    if max_length <= 0 or per_device_train_batch_size <= 0:
        raise ValueError("max_length and per_device_train_batch_size must be positive")
    _check_stack(backend, on_gpu, load_in_4bit, teacher is not None and teacher_load_in_4bit)
    loss = loss or default_loss(backend, teacher is not None, on_gpu)
    lora = lora_parameter_count(arch, lora_r, lora_target_modules)
    tokens = per_device_train_batch_size * max_length
    peft_prepared = backend == TRANSFORMERS and load_in_4bit  # prepare_model_for_kbit_training runs
    components: dict[str, int] = dict(weight_bytes(arch, load_in_4bit, peft_prepared, dtype_bytes))
    components["lora_weights"] = lora * LORA_WEIGHT_BYTES
    components["lora_grads"] = lora * LORA_GRAD_BYTES
    components["optimizer_state"] = int(lora * OPTIMIZER_STATE_BYTES[optim])
    components["activations"] = activation_bytes(arch, tokens, gradient_checkpointing, backend, dtype_bytes)
    if lora_dropout > 0:  # kept per layer like the activations: every layer without checkpointing, else one
        layers = arch.num_hidden_layers if gradient_checkpointing is False else 1
        components["lora_dropout"] = tokens * layers * lora_dropout_bytes_per_token(arch, lora_target_modules,
                                                                                     dtype_bytes)
    components["logits"] = logits_bytes(arch, per_device_train_batch_size, max_length, loss, dtype_bytes, on_gpu,
                                        lm_head_fp32=peft_prepared, trained_tokens=trained_tokens)
    components["dequant_workspace"] = _dequant_workspace_bytes(arch, load_in_4bit, teacher, teacher_load_in_4bit,
                                                               dtype_bytes)
    if teacher is not None:
        # Loaded by plain transformers on either stack, never prepared by peft: 16-bit
        # embeddings and norms.
        t = weight_bytes(teacher, teacher_load_in_4bit, dtype_bytes=dtype_bytes,
                         nf4_bytes_per_param=NF4_NO_DQ_BYTES_PER_PARAM)
        components["teacher_weights"] = t["base_weights"] + t["embeddings_lm_head"]
        # The teacher's forward runs under no_grad after the student's, so it frees each
        # layer's transients as it goes (less than the loss's working set that follows).
        # Its logits persist through the loss, in the compute dtype.
        teacher_rows = (trained_tokens if loss == "trained_positions_distillation" and trained_tokens is not None
                        else tokens)
        components["teacher_logits"] = teacher_rows * teacher.vocab_size * dtype_bytes
    if on_gpu:
        components["cuda_context"] = CUDA_CONTEXT_BYTES
    else:
        components["cpu_runtime"] = CPU_RUNTIME_BYTES
    total = sum(components.values())
    budget = int(budget_gib * GIB)
    assumptions = {
        "backend": backend,
        "device": "cuda" if on_gpu else "cpu",
        "student": arch.name,
        "teacher": teacher.name if teacher is not None else None,
        "load_in_4bit": load_in_4bit,
        "nf4_bytes_per_param": round(NF4_BYTES_PER_PARAM, 6),
        "dtype_bytes": dtype_bytes,
        "lora_params": lora,
        "lora_dropout": lora_dropout,
        "optim": optim,
        "max_length": max_length,
        "per_device_train_batch_size": per_device_train_batch_size,
        "tokens_per_step": tokens,
        "gradient_checkpointing": gradient_checkpointing,
        "loss": loss,
        "logits": _LOSS_NOTES[loss],
    }
    return MemoryPlan(components, total, budget, total <= budget, assumptions)


_LOSS_NOTES = {
    "unsloth_fused_ce": f"Unsloth's fused CE ({UNSLOTH_CE_CHUNK_TOKENS}-token chunks, fp32 + fp32 grad)",
    "trl_chunked_lm_head": f"TRL's chunked LM head ({TRL_TOKEN_CHUNK} x {TRL_VOCAB_CHUNK} tiles), no full logits",
    "model_ce": f"the model's own CE on full logits, {HF_LOGIT_BYTES_PER_ELEMENT} B per (token, vocab) element (bf16)",
    "trained_positions_ce": "the model's own CE at the trained positions only (the CPU trainer)",
    "distillation": f"full student logits + KD loss, {DISTILL_STUDENT_BYTES_PER_LOGIT} B per (token, vocab) element",
    "trained_positions_distillation": "student and teacher logits + KD loss at the trained positions only "
                                      f"(the CPU trainer), {DISTILL_STUDENT_BYTES_PER_LOGIT} B per (token, vocab) element",
}
