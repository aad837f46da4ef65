"""GRPO on 03's adapter with TRL's GRPOTrainer: prompts, arguments, the policy (and its reference), resume, log.

Usage: ``result = train_grpo(recipe, settings, model_path, prompts, out_dir, backend, sft_adapter)``

The policy continues 03's LoRA adapter (`start_from: sft`) on the same base weights, so 06's adapter is a drop-in
for 03's: 04's merge, its check and its GGUF conversion take it unchanged. With beta > 0 the KL term needs the
starting model: TRL's GRPOTrainer copies the loaded adapter into a frozen PEFT adapter "ref" when it starts (before
a checkpoint is loaded: after a resume the reference is still 03's adapter) and switches to it for the reference
log-probabilities — one copy of the base weights in memory, not two. 06 removes "ref" before saving.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import time
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

from lib.conversation import generation_prompt_opens_think, plain_prompt, prompt_messages
from lib.grpo.rewards import REWARD_NAMES, reward_functions
from lib.grpo.settings import GrpoSettings, GrpoSettingsError
from lib.paths import atomic_write_text
from lib.progress import live_bar
from lib.recipe import Recipe
from lib.run_config import fingerprint
from lib.train import resume
from lib.train.backends import (TRANSFORMERS, UNSLOTH, Backend, checkpointing_argument, compute_dtype, is_main_process, lora_config,
                                nf4_config, publish_adapter)
from lib.train.release_memory import release_memory_callback

REFERENCE_ADAPTER = "ref"  # the adapter TRL's GRPOTrainer adds for the reference model (beta > 0, a PEFT model)
# GRPO keys that cannot change the adapter: a resume after changing them is allowed (as 03's _NOT_TRAINING)
NOT_TRAINING = frozenset({"logging_steps", "save_steps"})


@dataclass(frozen=True)
class GrpoResult:
    adapter_dir: Path
    log_history: list[dict]
    seconds: float
    steps: int
    resumed_from: str


def prompt_rows(train_rows: list[dict], count: int, seed: int, system_prompt: str = "",
                plain_format: str = "") -> list[dict]:
    """GRPO's prompts: the user turn of 01's training rows (decontaminated there; the held-out split is never
    read), each with its reference answer; `count` drawn with `seed` (0 = all, in file order). As chat messages for
    a template, or as the text before `<think>` of `plain_format` for a base model (what 02 trained and 05 asks)."""
    rows = answerable(train_rows)
    if count and count < len(rows):
        rows = random.Random(seed).sample(rows, count)

    def prompt(row: dict):  # as 05 asks: everything before the last assistant turn (the last user turn, plain)
        if plain_format:
            return plain_prompt(plain_format, [m for m in row["messages"] if m["role"] == "user"][-1]["content"])
        return prompt_messages(row, system_prompt)
    return [{"id": row["id"], "answer": str(row["answer"]), "prompt": prompt(row)} for row in rows]


def answerable(rows: list[dict]) -> list[dict]:
    """The rows with a reference answer: the others cannot be rewarded for being right."""
    return [row for row in rows if row.get("answer") not in (None, "")]


def prompt_opens_think(tokenizer, prompt, template_kwargs: dict | None = None) -> bool:
    """Whether the generation prompt writes `<think>` itself (R1-Distill's template): completions then start inside
    the thought, and the rewards must read them so (a plain prompt stops before `<think>`)."""
    return not isinstance(prompt, str) and generation_prompt_opens_think(tokenizer, prompt, template_kwargs)


def prompts_sha(prompts: list[dict]) -> str:
    return hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()[:16]


def grpo_args(recipe: Recipe, settings: GrpoSettings, output_dir: Path, backend: Backend) -> dict:
    """`GRPOConfig` arguments: the recipe's `grpo:` keys under TRL's names, the hardware settings as 03 sets them.

    TRL counts completions in per_device_train_batch_size: one step is `prompts_per_step` prompts x
    `num_generations` completions, generated together (TRL's generation batch: one per optimizer step, as
    steps_per_generation defaults to the accumulation steps) and trained on `num_iterations` times —
    `num_generations` rows per forward and backward (a shuffled slice of the step's completions), accumulated over
    `prompts_per_step` passes, so memory grows with the group size, not the step. Advantages are computed within
    each group before the shuffle, and DAPO's loss is normalised by the tokens of the whole step."""
    dtype = compute_dtype(recipe, backend)
    return dict(
        output_dir=str(output_dir), max_steps=settings.max_steps, per_device_train_batch_size=settings.num_generations,
        gradient_accumulation_steps=settings.prompts_per_step, num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length, temperature=settings.temperature,
        top_p=settings.top_p, beta=settings.beta, learning_rate=settings.learning_rate, loss_type=settings.loss_type,
        epsilon=settings.epsilon, epsilon_high=settings.epsilon_high, scale_rewards=settings.scale_rewards,
        num_iterations=settings.num_iterations,
        mask_truncated_completions=settings.mask_truncated_completions, reward_weights=settings.weights,
        use_vllm=settings.use_vllm, **({"vllm_mode": "colocate"} if settings.use_vllm else {}),
        chat_template_kwargs=dict(recipe.chat_template_kwargs) or None,
        # dropout off: the old and new log-probabilities of a completion must differ only by the update
        disable_dropout=True, lr_scheduler_type="constant", warmup_steps=0, optim=backend.optim,
        **{checkpointing_argument(): backend.gradient_checkpointing is True},
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_total_limit=2, seed=recipe.seed,
        bf16=dtype == "bfloat16", fp16=backend.on_gpu and dtype == "float16", use_cpu=not backend.on_gpu,
        report_to=[], dataloader_num_workers=0, disable_tqdm=True, log_completions=False)


def grpo_backend(backend: Backend, recipe: Recipe) -> Backend:
    """The backend GRPO trains on: the one 03 uses, but transformers + PEFT where 03 uses Unsloth (06 loads 03's
    adapter with PEFT and lets TRL generate), with transformers' gradient checkpointing as the recipe asks."""
    if backend.name != UNSLOTH:
        return backend
    return dataclasses.replace(backend, name=TRANSFORMERS, gradient_checkpointing=recipe.gradient_checkpointing,
                               stand_ins=backend.stand_ins + ("Unsloth (03) -> transformers + PEFT for GRPO",))


def load_policy(recipe: Recipe, model_path: str, backend: Backend, sft_adapter: Path | None, beta: float):
    """(PEFT model whose "default" adapter trains, tokenizer): 03's adapter continued, or a fresh LoRA when
    `sft_adapter` is None (TRL adds the frozen reference copy itself when beta > 0)."""
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, compute_dtype(recipe, backend))
    kwargs = {"dtype": dtype, "trust_remote_code": recipe.trust_remote_code}
    if backend.load_in_4bit:
        kwargs["quantization_config"] = nf4_config(dtype, double_quant=True)
    if backend.on_gpu:
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if backend.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=recipe.trust_remote_code)
    torch.manual_seed(recipe.seed)
    if sft_adapter is None:
        model = get_peft_model(model, lora_config(recipe))
    else:
        model = PeftModel.from_pretrained(model, str(sft_adapter), is_trainable=True)
    return model, tokenizer


def end_token_ids(tokenizer, model) -> set[int]:
    """The tokens that end a completion (the tokenizer's end of sequence and padding, the generation config's end
    of sequence — TRL's own test for a clipped completion): a completion not ending on one was cut at
    max_completion_length."""
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def training_fingerprint(recipe: Recipe, settings: GrpoSettings, prompts: list[dict], sft_adapter: Path | None,
                         backend: Backend) -> dict:
    """What a GRPO checkpoint must come from to be continued (lib.train.resume's shape): the recipe's training keys
    and its grpo section, the prompts and the SFT adapter's weights, the backend."""
    keys = resume.training_keys(recipe) | {f"grpo.{k}": v for k, v in asdict(settings).items()
                                           if k not in NOT_TRAINING}
    start = fingerprint(sft_adapter / "adapter_model.safetensors") if sft_adapter else "base"
    backend_facts = {k: v for k, v in backend.as_dict().items() if k != "stand_ins"}
    return {"recipe": recipe.name, "recipe_keys": json.loads(json.dumps(keys, default=str)),
            "data_sha": f"{prompts_sha(prompts)}:{start}", "backend": backend_facts, "processes": 1}


def progress_printer(max_steps: int, print_fn=print, bar=live_bar):
    """A TrainerCallback printing one line per logged step (the weighted reward, each reward's mean, completion
    length, the share cut at the limit), with a bar moving beside them in Jupyter."""
    from transformers import TrainerCallback

    class GrpoProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.bar = time.time(), bar(max_steps, state.global_step, "GRPO", "step")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:
                return
            rewards = " · ".join(f"{name} {logs.get(f'rewards/{name}/mean', 0):.2f}" for name in REWARD_NAMES)
            line = (f"step {state.global_step}/{max_steps} · reward {logs['reward']:.2f} · {rewards} · "
                    f"length {logs.get('completions/mean_length', 0):.0f} · clipped "
                    f"{logs.get('completions/clipped_ratio', 0):.0%} · {(time.time() - self.start) / 60:.1f} min")
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
            print_fn(line, flush=True)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return GrpoProgress()


def trl_log_probs_available() -> bool:
    """Whether the installed TRL can compute GRPO's log-probabilities here. TRL 1.15 (what the gpu extra resolves to)
    does it with its Triton kernels only: with a CPU build of torch (no Triton) its trainer fails at the first step
    (`'NoneType' object has no attribute 'apply'`). A CUDA install of torch brings Triton, TRL 1.16 (the CPU
    install) a fallback."""
    import trl.trainer.utils as trl_utils

    return getattr(trl_utils, "_ChunkedLogProbFunction", True) is not None


def check_trl_log_probs() -> None:
    """`trl_log_probs_available`, said before anything loads."""
    import trl

    if not trl_log_probs_available():
        raise RuntimeError(f"TRL {trl.__version__} computes GRPO's log-probabilities with Triton kernels, and Triton is "
                           "not installed (a CPU build of torch): run 06 on a CUDA GPU (torch's CUDA wheels bring "
                           "Triton), or with the CPU install's TRL (pip install -c constraints.txt trl)")


def train_grpo(recipe: Recipe, settings: GrpoSettings, model_path: str, prompts: list[dict], out_dir: Path,
               backend: Backend, sft_adapter: Path | None, restart: bool = False, progress: bool = True,
               callbacks: tuple = ()) -> GrpoResult:
    """Train, checkpointing every save_steps; a killed run continues from its last complete checkpoint when the
    recipe, prompts, SFT adapter and backend are the same (`lib.train.resume`, as 03). Writes `out_dir/adapter`
    and `out_dir/grpo_log.json`. `callbacks`: more TrainerCallbacks, called after the checkpoint marker's."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    if settings.use_vllm and not (backend.on_gpu and importlib.util.find_spec("vllm")):
        raise GrpoSettingsError("grpo.use_vllm is true, but " + ("vllm is not installed: pip install vllm" if
                                backend.on_gpu else "there is no CUDA GPU here") + ", or set use_vllm: false "
                                "(transformers generates the groups)")
    check_trl_log_probs()
    checkpoints = out_dir / "checkpoints"
    marker = training_fingerprint(recipe, settings, prompts, sft_adapter, backend)
    start_from, notes = resume.resume_point(checkpoints, marker, restart, may_delete=is_main_process(), stage="06")
    for line in notes:
        print(f"[06] {line}")
    args = GRPOConfig(**grpo_args(recipe, settings, checkpoints, backend))
    model, tokenizer = load_policy(recipe, model_path, backend, sft_adapter, settings.beta)
    ends = end_token_ids(tokenizer, model)
    rewards = reward_functions(settings.max_completion_length, settings.overlong_buffer, ends,
                               prompt_opens_think(tokenizer, prompts[0]["prompt"], recipe.chat_template_kwargs),
                               decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=False))
    dataset = Dataset.from_list([{"prompt": p["prompt"], "answer": p["answer"]} for p in prompts])
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.add_callback(resume.checkpoint_marker_callback(marker))
    if not backend.on_gpu:  # the CPU's budget is resident memory: give back what each pass freed
        trainer.add_callback(release_memory_callback())
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(progress_printer(settings.max_steps))
    for callback in callbacks:
        trainer.add_callback(callback)
    started = time.time()
    output = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
    seconds = time.time() - started
    adapter_dir = out_dir / "adapter"
    if REFERENCE_ADAPTER in model.peft_config:  # the frozen reference is not part of what 06 exports
        model.delete_adapter(REFERENCE_ADAPTER)
    publish_adapter(model, tokenizer, adapter_dir)
    atomic_write_text(out_dir / "grpo_log.json", json.dumps(trainer.state.log_history, indent=1))
    resume.mark_finished(checkpoints, marker)
    return GrpoResult(adapter_dir, trainer.state.log_history, seconds, output.global_step,
                      start_from.name if start_from else "")
