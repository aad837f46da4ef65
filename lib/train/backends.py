"""LoRA SFT (or logit distillation) through PEFT + TRL, with the backend chosen from the hardware.

Usage: ``result = train_lora(recipe, model_path, dataset, max_length, out_dir, detect_backend(recipe))``

Backends: Unsloth's `FastLanguageModel` (+ bitsandbytes 4-bit) when CUDA and `unsloth` are present,
transformers + PEFT otherwise (`Backend`). On a CPU a recipe that asks for 4-bit is refused: bitsandbytes 0.50's
CPU 4-bit path silently corrupts LoRA gradients after any eval-mode/generate forward on AVX512-BF16 CPUs; a --tiny
run replaces it (and the other CUDA-only parts) with the recipe's dtype, and names each replacement.
Without a model source (dry-run) the recipe's architecture is built on the meta device: LoRA is injected for
real, so target-module names and trainable-parameter counts are checked exactly, with no weights at all.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lib.architectures import build_hf_config, load_architecture, parameter_count
from lib.masking.dataset import example_lengths
from lib.paths import atomic_write_text
from lib.plan.memory import TRANSFORMERS, UNSLOTH  # the backends' names: one place, the plan's
from lib.recipe import Recipe, holdout_eval_steps, targets_gpu
from lib.train import distill_trainer, resume
from lib.train.lora_dropout import use_fast_lora_dropout
from lib.train.packed_attention import register_packed_attention
from lib.train.progress import progress_callback
from lib.train.trained_positions_loss import largest_batch, trained_positions_loss

# PEFT 0.21's get_peft_model reads transformers 5's deprecated `is_gradient_checkpointing` (a FutureWarning in red
# under every 03 run): a matter between the two libraries, nothing a user of this project can change
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class BackendError(RuntimeError):
    """The recipe cannot run on this hardware; the message says why and what to change."""


@dataclass(frozen=True)
class Backend:
    """The training stack that really runs a recipe here, and what stood in for the parts that need CUDA.

    One value decides everything hardware-dependent in training: the loader (`load_for_training`), the trainer's
    arguments (`sft_kwargs`), the teacher's precision, and the memory plan's assumptions (`lib.plan`).
    """

    name: str  # UNSLOTH or TRANSFORMERS
    on_gpu: bool
    load_in_4bit: bool  # what is really loaded (a --tiny run on a CPU loads the recipe's dtype instead of NF4)
    teacher_load_in_4bit: bool
    optim: str
    # "unsloth": Unsloth's offloaded variant, set by its get_peft_model (and nowhere else); True: transformers'
    # own, set by the trainer's arguments (and nowhere else); False: none
    gradient_checkpointing: bool | str
    stand_ins: tuple[str, ...] = ()  # "recipe's part -> what ran instead (why)", for the run's report
    # padding-free micro-batches (recipe's padding_free) attended one example at a time (lib.train.packed_attention);
    # Unsloth brings its own padding-free attention
    packed_attention: bool = False
    fast_lora_dropout: bool = False  # lib.train.lora_dropout: CPU only, where PyTorch's dropout draws dominate
    # lib.train.trained_positions_loss instead of TRL's chunked loss, and the distillation trainer's positions_only:
    # CPU only (on a GPU the logits' memory counts)
    trained_positions_loss: bool = False
    # the dtype the weights load and compute in: the recipe's, but float16 for a bfloat16 recipe on a GPU without
    # bf16 (a T4, a V100: `fp16_fallback`); "" = the recipe's (callers use `compute_dtype`)
    torch_dtype: str = ""

    def as_dict(self) -> dict:
        return {"backend": self.name, "device": "cuda" if self.on_gpu else "cpu", "load_in_4bit": self.load_in_4bit,
                **({"torch_dtype": self.torch_dtype} if self.torch_dtype else {}),
                "optim": self.optim, "gradient_checkpointing": self.gradient_checkpointing,
                "packed_attention": self.packed_attention, "fast_lora_dropout": self.fast_lora_dropout,
                "trained_positions_loss": self.trained_positions_loss,
                "stand_ins": list(self.stand_ins)}


_CPU_4BIT = ("bitsandbytes' CPU 4-bit path silently corrupts LoRA gradients after any eval/generate forward (bnb "
             "0.50, AVX512-BF16 CPUs)")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def select_backend(recipe: Recipe, has_cuda: bool, has_unsloth: bool, stand_ins_allowed: bool = False,
                   bf16_supported: bool = True) -> Backend:
    """The backend that runs `recipe` here (pure, so every combination is testable).

    Without CUDA, what needs it (NF4 weights, 8-bit optimizers, Unsloth) is refused for a recipe that asks for
    4-bit, unless `stand_ins_allowed` (a --tiny run): then each is replaced and the replacement named in
    `stand_ins`. 8-bit optimizers become AdamW on any CPU run (named too). On a GPU without bf16
    (`bf16_supported` false), a bfloat16 recipe loads and trains in float16 instead (`fp16_fallback`, named too).
    """
    stand_ins: list[str] = []
    torch_dtype = fp16_fallback(recipe.torch_dtype, has_cuda, bf16_supported)
    if torch_dtype:
        stand_ins.append("bfloat16 -> float16 (this GPU has no bf16, as a T4 or V100: fp16 mixed precision with "
                         "loss scaling; the LoRA weights stay float32)")
    load_in_4bit, teacher_4bit = recipe.load_in_4bit, bool(recipe.teacher_model_name_or_path
                                                            and recipe.teacher_load_in_4bit)
    if not has_cuda and (load_in_4bit or teacher_4bit):
        which = "load_in_4bit" if load_in_4bit else "teacher_load_in_4bit"
        if not stand_ins_allowed:
            raise BackendError(f"recipe {recipe.name!r} sets {which}: true but no CUDA GPU is present. {_CPU_4BIT}, so "
                               f"this project refuses it: run on a GPU, or set {which}: false for a CPU run")
        if load_in_4bit:
            stand_ins.append(f"NF4 4-bit base (bitsandbytes) -> {recipe.torch_dtype} weights ({_CPU_4BIT})")
        if teacher_4bit:
            stand_ins.append(f"NF4 4-bit teacher (bitsandbytes) -> {recipe.torch_dtype} teacher ({_CPU_4BIT})")
        load_in_4bit = teacher_4bit = False
    optim = recipe.optim
    if not has_cuda and "8bit" in optim:
        optim = "adamw_torch"
        stand_ins.append(f"{recipe.optim} (bitsandbytes CUDA kernels) -> adamw_torch")
    if has_cuda and has_unsloth:
        name, checkpointing = UNSLOTH, "unsloth" if recipe.gradient_checkpointing else False
    else:
        name, checkpointing = TRANSFORMERS, recipe.gradient_checkpointing
        # on a CPU, a CPU recipe's real path is transformers + PEFT already: nothing stands in for it
        if stand_ins_allowed and not has_cuda and targets_gpu(recipe):
            stand_ins.append("Unsloth FastLanguageModel (needs a CUDA GPU) -> transformers + PEFT")
    # the CPU speed-ups (benchmarks/train_speed.py): measured on a CPU only; a GPU keeps TRL's, Unsloth's and
    # flash-attention's own paths (and distillation its full-logits loss)
    return Backend(name, has_cuda, load_in_4bit, teacher_4bit, optim, checkpointing, tuple(stand_ins),
                   packed_attention=recipe.padding_free and not has_cuda,
                   fast_lora_dropout=not has_cuda and recipe.lora_dropout > 0,
                   trained_positions_loss=not has_cuda, torch_dtype=torch_dtype)


def fp16_fallback(recipe_dtype: str, has_cuda: bool, bf16_supported: bool) -> str:
    """"float16" when a bfloat16 recipe runs on a CUDA GPU without bf16 (Turing and older: a Colab T4), else ""."""
    return "float16" if has_cuda and not bf16_supported and recipe_dtype == "bfloat16" else ""


def compute_dtype(recipe: Recipe, backend: Backend) -> str:
    """The dtype name the weights load and compute in on `backend` (the recipe's unless it fell back)."""
    return backend.torch_dtype or recipe.torch_dtype


def bf16_available() -> bool:
    """Whether this machine's GPU computes in bf16 (False without CUDA: nothing asks then)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def detect_backend(recipe: Recipe, stand_ins_allowed: bool = False) -> Backend:
    """The backend that will train `recipe` on this machine. Launched data-parallel (`torchrun`/`accelerate
    launch`: WORLD_SIZE > 1), transformers + PEFT even where Unsloth is installed: its open-source release trains
    on one GPU."""
    has_cuda = cuda_available()
    return select_backend(recipe, has_cuda, unsloth_installed() and world_size() == 1, stand_ins_allowed,
                          bf16_supported=not has_cuda or bf16_available())


def world_size() -> int:
    """Processes of this `torchrun` / `accelerate launch` job (1 without one)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def planned_backend(recipe: Recipe) -> tuple[Backend, str]:
    """The backend of a real run of `recipe` on its target hardware, and how that was decided: on a CUDA machine
    the one that will run here; for a recipe whose `hardware` is not a GPU (smollm2_135m: a CPU) the one that runs
    here; otherwise the one `pip install -e '.[gpu]' -c constraints-gpu.txt` gives the recipe's GPU (Unsloth)."""
    if cuda_available():
        return detect_backend(recipe), "detected on this machine"
    if not targets_gpu(recipe):
        return detect_backend(recipe), f"the recipe's hardware is {recipe.hardware!r}: the CPU backend of this machine"
    return (select_backend(recipe, has_cuda=True, has_unsloth=True),
            f"no CUDA GPU here: the recipe's {recipe.hardware} with the [gpu] extra (unsloth) installed")


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules=list(recipe.lora_target_modules), bias="none", task_type="CAUSAL_LM")


def check_target_modules(model, target_modules) -> None:
    """Every LoRA target must name a Linear in the model: PEFT only fails when *none* match, so a typo among
    several names would silently train fewer layers."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in target_modules if t not in present]
    if missing:
        raise ValueError(f"lora_target_modules {missing} not found in {type(model).__name__}; its projection names "
                         f"include {sorted(n for n in present if n.endswith('_proj'))}")


def sft_config(recipe: Recipe, output_dir: Path, backend: Backend, max_length: int | None = None):
    """TRL `SFTConfig` from the recipe (validated by TRL/transformers on construction)."""
    from trl import SFTConfig

    return SFTConfig(**sft_kwargs(recipe, output_dir, backend, max_length))


@functools.cache
def checkpointing_argument() -> str:
    """The `TrainingArguments` name of the gradient-checkpointing switch in the installed transformers.

    transformers 5.23.0 (the CPU pins, requirements.txt) calls it `activation_checkpointing` and keeps
    `gradient_checkpointing` as a deprecated alias (a FutureWarning on every config, removed in v6); 5.17.0 (the GPU
    pins, constraints-gpu.txt: unsloth 2026.10.9 requires transformers<=5.17.0) knows only `gradient_checkpointing`
    and refuses the new name. The one place this project branches on that difference.
    """
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def sft_kwargs(recipe: Recipe, output_dir: Path, backend: Backend, max_length: int | None = None) -> dict:
    """The `SFTConfig` arguments for `recipe` on `backend`; every training key is passed under its own name (pure
    but for the name of the checkpointing switch, read from the installed transformers: `checkpointing_argument`).

    `max_length`: the one 02_masking chose (the recipe's unless `overlong_policy: fit`); every example fits it.
    Gradient checkpointing is switched on here only for transformers' own: Unsloth's variant is set by its
    `get_peft_model`, and setting both would checkpoint twice.
    """
    return dict(
        # padding-free: TRL refuses a max_length it would not enforce without packing; 02 made every example fit
        output_dir=str(output_dir), max_length=None if recipe.padding_free else max_length or recipe.max_length,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps, per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps, learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=int(recipe.warmup_steps) if recipe.warmup_steps >= 1 else recipe.warmup_steps,
        weight_decay=recipe.weight_decay, optim=backend.optim,
        **{checkpointing_argument(): backend.gradient_checkpointing is True},
        # 2, not 1: the Trainer rotates before lib.train.resume marks the new checkpoint complete, so the previous
        # (marked) one must survive the rotation
        logging_steps=recipe.logging_steps, save_steps=recipe.save_steps, save_total_limit=2, seed=recipe.seed,
        # bf16 autocast also on a CPU (AVX512-BF16 here): a bf16 recipe computes in bf16 wherever it runs
        bf16=compute_dtype(recipe, backend) == "bfloat16",
        fp16=backend.on_gpu and compute_dtype(recipe, backend) == "float16",
        use_cpu=not backend.on_gpu, report_to=[], dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=True, padding_free=recipe.padding_free,
        # data-parallel: every LoRA weight gets a gradient each step, so DDP need not search for unused ones
        ddp_find_unused_parameters=False,
        # an evaluation (the held-out loss) keeps the loss only: no logits, which the CPU trainers make at the
        # trained positions only and so would not line up with the labels
        prediction_loss_only=True,
        **holdout_kwargs(recipe),
    )


def holdout_kwargs(recipe: Recipe) -> dict:
    """The Trainer's evaluation arguments for the recipe's held-out loss (none without holdout_rows)."""
    if not recipe.holdout_rows:
        return {}
    return {"eval_strategy": "steps", "eval_steps": holdout_eval_steps(recipe),
            "per_device_eval_batch_size": recipe.per_device_train_batch_size,
            "load_best_model_at_end": recipe.keep_best_checkpoint,
            **({"metric_for_best_model": "eval_loss", "greater_is_better": False}
               if recipe.keep_best_checkpoint else {})}


def split_holdout(dataset, rows: int, seed: int):
    """(training examples, `rows` held-out ones): a seeded draw, the training ones in their original order."""
    if not rows:
        return dataset, None
    if rows >= len(dataset):
        raise ValueError(f"holdout_rows ({rows}) must be smaller than the {len(dataset)} masked examples")
    import numpy as np

    held = set(np.random.default_rng(seed).choice(len(dataset), size=rows, replace=False).tolist())
    return (dataset.select([i for i in range(len(dataset)) if i not in held]),
            dataset.select(sorted(held)))


def meta_lora_model(recipe: Recipe, architecture: str | None = None):
    """The recipe's architecture on the meta device with its LoRA adapters injected (no weights allocated).

    Returns (peft_model, trainable_params, total_params). Raises if a target module does not exist.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    config = build_hf_config(architecture or recipe.architecture)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    check_target_modules(model, recipe.lora_target_modules)
    peft_model = get_peft_model(model, lora_config(recipe))
    trainable, total = peft_model.get_nb_trainable_parameters()
    return peft_model, trainable, total


def validate_on_meta_device(recipe: Recipe, max_length: int, out: Path) -> dict:
    """The dry-run of training: the architecture on the meta device with LoRA injected for real (target names and
    trainable counts exact, no weights) and the TRL config built and validated; returns the facts."""
    _, trainable, total = meta_lora_model(recipe)
    sft_config(recipe, out / "checkpoints", select_backend(recipe, has_cuda=False, has_unsloth=False,
                                                           stand_ins_allowed=True),
               max_length=max_length)  # TRL validates what it can here
    gpu = select_backend(recipe, has_cuda=True, has_unsloth=True)
    facts = {"mode": "dry-run (meta device, no weights)", "trainable_params": trainable, "total_params": total,
             "backend_with_cuda_and_unsloth": gpu.name,
             "gpu_sft_config": {k: v for k, v in sft_kwargs(recipe, out, gpu, max_length=max_length).items()
                                if k != "output_dir"}}
    if recipe.teacher_architecture:
        facts["teacher_params"] = parameter_count(load_architecture(recipe.teacher_architecture))
    return facts


def load_for_training(recipe: Recipe, model_path: str, backend: Backend, max_length: int | None = None):
    """(model with LoRA adapters, tokenizer) for `backend`."""
    import torch

    dtype = getattr(torch, compute_dtype(recipe, backend))
    if backend.name == UNSLOTH:  # GPU only: never reached on a CPU machine
        from unsloth import FastLanguageModel  # imported first by lib.train.unsloth_first (03's first import)

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=model_path, max_seq_length=max_length or recipe.max_length, dtype=dtype,
            load_in_4bit=backend.load_in_4bit)
        model = FastLanguageModel.get_peft_model(
            model, r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
            target_modules=list(recipe.lora_target_modules), bias="none",
            use_gradient_checkpointing=backend.gradient_checkpointing, random_state=recipe.seed)
        return model, tokenizer
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": dtype, "trust_remote_code": recipe.trust_remote_code}
    if backend.packed_attention:
        kwargs["attn_implementation"] = register_packed_attention()
    if backend.load_in_4bit:
        kwargs["quantization_config"] = nf4_config(dtype, double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if backend.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # checkpointing is the trainer's to switch on (sft_kwargs), once
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=recipe.trust_remote_code)
    check_target_modules(model, recipe.lora_target_modules)
    # LoRA's A matrices are drawn from torch's generator: seed it here so they depend on the recipe's seed alone,
    # not on what ran before in this process (Unsloth's get_peft_model takes random_state for the same reason)
    torch.manual_seed(recipe.seed)
    model = get_peft_model(model, lora_config(recipe))
    if backend.fast_lora_dropout and not use_fast_lora_dropout(model):
        import peft

        raise BackendError(f"no LoRA dropout module found to replace in this PEFT ({peft.__version__}): "
                           "lib.train.lora_dropout expects LoRA layers with a `lora_dropout` ModuleDict")
    return model, tokenizer


def nf4_config(compute_dtype, double_quant: bool):
    """bitsandbytes NF4 weights computing in `compute_dtype` (the student with double quant; the teacher without)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype)


def sft_trainer_class(positions_only: bool):
    """TRL's `SFTTrainer`; on a CPU (`positions_only`: `Backend.trained_positions_loss`) one whose loss runs the LM
    head at the trained positions only, once (`lib.train.trained_positions_loss`: TRL's chunked loss measured 35 %
    of a SmolLM2 step there).

    That also covers TRL 1.15.0 (the GPU pins, constraints-gpu.txt: unsloth 2026.10.9 requires trl<=1.15.0), whose
    own loss runs only as a Triton kernel (`trl.kernels` imports triton: CUDA/XPU) and fails on a CPU at the first
    step (`'NoneType' object has no attribute 'apply'`). GPU runs keep TRL's loss and its token-accuracy/entropy
    metrics; the CPU trainer logs the loss, gradient norm and learning rate only.
    """
    from trl import SFTTrainer

    if not positions_only:
        return SFTTrainer

    class TrainedPositionsSFTTrainer(SFTTrainer):
        largest_batch = None  # (tokens, trained tokens) of the largest training micro-batch, for the memory check

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.largest_batch = largest_batch(self.largest_batch, inputs)
            scale_up = self.args.average_tokens_across_devices and num_items_in_batch is not None
            loss = trained_positions_loss(model, inputs, num_items_in_batch,
                                          self.accelerator.num_processes if scale_up else 1)
            # TRL's prediction_step asks for outputs only without prediction_loss_only, which 03 always sets
            return (loss, None) if return_outputs else loss

    return TrainedPositionsSFTTrainer


@dataclass
class TrainResult:
    adapter_dir: Path
    log_history: list = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    trainable_params: int = 0
    total_params: int = 0
    resumed_from: str = ""  # the checkpoint this process continued, "" when it trained from step 0
    processes: int = 1  # data-parallel processes that trained together
    largest_batch: tuple[int, int] | None = None  # (tokens, trained tokens) of the largest micro-batch (CPU trainers)
    best_checkpoint: str = ""  # keep_best_checkpoint: the checkpoint with the lowest held-out loss, now loaded
    teacher: dict | None = None  # distillation: the teacher's folder and weight files (`resume.teacher_identity`)

    def holdout_losses(self) -> list[tuple[int, float]]:
        return [(row["step"], row["eval_loss"]) for row in self.log_history if "eval_loss" in row]

    def losses(self) -> list[tuple[int, float]]:
        return [(row["step"], row["loss"]) for row in self.log_history if "loss" in row]


def train_lora(recipe: Recipe, model_path: str, dataset, max_length: int, out_dir: Path, backend: Backend,
               teacher_path: str = "", restart: bool = False, progress: bool = True) -> TrainResult:
    """Train LoRA adapters on the masked examples of 02 (a `datasets.Dataset` of input_ids/labels, TRL uses it as
    is: no re-tokenising); save the adapter + tokenizer to `out_dir/adapter` and the log to `train_log.json`.

    A run killed before the end continues from its last complete checkpoint in `out_dir/checkpoints` when it was
    made from the same recipe, backend and examples (`lib.train.resume`; `restart` deletes them and starts over)."""
    from transformers.trainer_callback import PrinterCallback

    dataset = dataset.select_columns(["input_ids", "labels"])  # the id column is for people, not the collator
    dataset, holdout = split_holdout(dataset, recipe.holdout_rows, recipe.seed)
    checkpoints = out_dir / "checkpoints"
    teacher = resume.teacher_identity(teacher_path) if teacher_path else None
    fingerprint = resume.training_fingerprint(recipe, dataset, backend.as_dict(), world_size(), teacher)
    start_from, resume_notes = resume.resume_point(checkpoints, fingerprint, restart, may_delete=is_main_process())
    for note in resume_notes if is_main_process() else []:
        print(f"[03] {note}")
    # the config first: building it sets up the process group of a data-parallel launch and each process's device,
    # which loading (4-bit weights onto this rank's GPU) needs
    args = sft_config(recipe, checkpoints, backend, max_length=max_length)
    model, tokenizer = load_for_training(recipe, model_path, backend, max_length)
    if teacher_path:
        trainer = distill_trainer.DistillationTrainer(
            model=model, args=args, train_dataset=dataset, eval_dataset=holdout, processing_class=tokenizer,
            teacher_model=_load_teacher(recipe, teacher_path, backend), alpha=recipe.distill_alpha, temperature=recipe.distill_temperature,
            positions_only=backend.trained_positions_loss)
    else:
        trainer = sft_trainer_class(backend.trained_positions_loss)(
            model=model, args=args, train_dataset=dataset, eval_dataset=holdout, processing_class=tokenizer)
    trainer.add_callback(resume.checkpoint_marker_callback(fingerprint))
    trainer.remove_callback(PrinterCallback)  # the raw log dictionaries: train_log.json keeps them
    if progress:
        trainer.add_callback(progress_callback(float(example_lengths(dataset)[0].mean()) if len(dataset) else 0.0))
    start = time.time()
    output = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
    seconds = time.time() - start
    adapter_dir = out_dir / "adapter"
    if trainer.is_world_process_zero():  # data-parallel: every process holds the same adapter; one writes it
        publish_adapter(model, tokenizer, adapter_dir)
        atomic_write_text(out_dir / "train_log.json", json.dumps(trainer.state.log_history, indent=1))
        resume.mark_finished(checkpoints, fingerprint)  # 03 run again trains anew
    trainable, total = model.get_nb_trainable_parameters()
    return TrainResult(adapter_dir, trainer.state.log_history, seconds, output.global_step, trainable, total,
                       resumed_from=start_from.name if start_from else "",
                       processes=trainer.args.world_size, largest_batch=getattr(trainer, "largest_batch", None),
                       best_checkpoint=Path(trainer.state.best_model_checkpoint).name
                       if trainer.state.best_model_checkpoint else "", teacher=teacher)


def is_main_process() -> bool:
    """Rank 0 of a `torchrun` / `accelerate launch` job, or a single process (read before the Trainer sets the
    process group up)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def publish_adapter(model, tokenizer, adapter_dir: Path) -> None:
    """Save the adapter and tokenizer into a folder beside `adapter_dir`, then swap it in: a kill while saving
    leaves the previous adapter (or none), never a half-written one."""
    import shutil
    import tempfile

    adapter_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{adapter_dir.name}.", dir=adapter_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        old = adapter_dir.with_name(f".{adapter_dir.name}.old")
        if adapter_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            adapter_dir.rename(old)
        tmp.rename(adapter_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def training_facts(result: TrainResult, backend: Backend) -> dict:
    """What the manifest keeps of a finished training run."""
    losses = result.losses()
    return {"mode": "trained", **backend.as_dict(), "adapter_dir": str(result.adapter_dir),
            "trainable_params": result.trainable_params, "total_params": result.total_params,
            "steps": result.steps, "train_seconds": round(result.seconds, 1),
            "resumed_from": result.resumed_from or None, "data_parallel_processes": result.processes,
            **({"teacher": result.teacher} if result.teacher else {}),
            **({"holdout_losses": result.holdout_losses(), "best_checkpoint": result.best_checkpoint or None}
               if result.holdout_losses() else {}),
            "first_loss": losses[0][1] if losses else None, "last_loss": losses[-1][1] if losses else None}


def _load_teacher(recipe: Recipe, teacher_path: str, backend: Backend):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": getattr(torch, compute_dtype(recipe, backend)), "trust_remote_code": recipe.trust_remote_code}
    if backend.packed_attention:  # it sees the student's padding-free rows
        kwargs["attn_implementation"] = register_packed_attention()
    if backend.teacher_load_in_4bit:
        kwargs["quantization_config"] = nf4_config(kwargs["dtype"], double_quant=False)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, **kwargs)
    return teacher.eval().requires_grad_(False)
