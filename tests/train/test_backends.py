"""Backend choice, the CPU 4-bit refusal, TRL config mapping, and exact LoRA counts on the meta device."""
import pytest

from lib.architectures import load_architecture, lora_parameter_count
from lib.recipe import load_recipe, with_overrides
from lib.train.backends import (TRANSFORMERS, UNSLOTH, BackendError, checkpointing_argument, meta_lora_model,
                                select_backend, sft_config, sft_kwargs, sft_trainer_class)


def test_backend_matrix():
    cpu_recipe = load_recipe("smollm2_135m")
    gpu_recipe = load_recipe("llama32_3b")
    assert select_backend(cpu_recipe, has_cuda=False, has_unsloth=False).name == TRANSFORMERS
    assert select_backend(cpu_recipe, has_cuda=True, has_unsloth=True).name == UNSLOTH
    assert select_backend(gpu_recipe, has_cuda=True, has_unsloth=False).name == TRANSFORMERS
    unsloth = select_backend(gpu_recipe, has_cuda=True, has_unsloth=True)
    assert unsloth.name == UNSLOTH and unsloth.load_in_4bit and unsloth.optim == "adamw_8bit"
    assert unsloth.stand_ins == () and unsloth.gradient_checkpointing == "unsloth"


def test_4bit_on_cpu_is_refused_with_the_reason():
    with pytest.raises(BackendError, match="corrupts LoRA gradients"):
        select_backend(load_recipe("llama32_3b"), has_cuda=False, has_unsloth=True)
    with pytest.raises(BackendError, match="teacher_load_in_4bit"):
        select_backend(load_recipe("llama32_1b_kd"), has_cuda=False, has_unsloth=False)


def test_a_tiny_run_replaces_each_cuda_only_part_and_names_it():
    backend = select_backend(load_recipe("llama32_3b"), has_cuda=False, has_unsloth=False, stand_ins_allowed=True)
    assert (backend.name, backend.load_in_4bit, backend.optim) == (TRANSFORMERS, False, "adamw_torch")
    assert backend.gradient_checkpointing is True  # transformers' own, as the recipe asks
    assert [s.split(" ->")[0] for s in backend.stand_ins] == [
        "NF4 4-bit base (bitsandbytes)", "adamw_8bit (bitsandbytes CUDA kernels)",
        "Unsloth FastLanguageModel (needs a CUDA GPU)"]
    kd = select_backend(load_recipe("llama32_1b_kd"), has_cuda=False, has_unsloth=False, stand_ins_allowed=True)
    assert not kd.teacher_load_in_4bit and any(s.startswith("NF4 4-bit teacher") for s in kd.stand_ins)
    # the CPU recipe's real path is transformers + PEFT already: nothing stands in for it
    assert select_backend(load_recipe("smollm2_135m"), has_cuda=False, has_unsloth=False,
                          stand_ins_allowed=True).stand_ins == ()


def test_checkpointing_is_switched_on_once(tmp_path):
    """Unsloth's variant is set by its get_peft_model: the trainer must not checkpoint a second time."""
    recipe = load_recipe("llama32_3b")
    unsloth = sft_kwargs(recipe, tmp_path, select_backend(recipe, has_cuda=True, has_unsloth=True))
    peft = sft_kwargs(recipe, tmp_path, select_backend(recipe, has_cuda=True, has_unsloth=False))
    assert unsloth[checkpointing_argument()] is False and peft[checkpointing_argument()] is True


def test_sft_kwargs_feed_trl_names_and_cpu_fallbacks(tmp_path):
    recipe = load_recipe("llama32_3b")
    gpu = sft_kwargs(recipe, tmp_path, select_backend(recipe, has_cuda=True, has_unsloth=False))
    cpu = sft_kwargs(recipe, tmp_path, select_backend(recipe, has_cuda=False, has_unsloth=False,
                                                      stand_ins_allowed=True))
    assert gpu["optim"] == "adamw_8bit" and gpu["bf16"] and not gpu["use_cpu"]
    assert cpu["optim"] == "adamw_torch" and cpu["bf16"] and cpu["use_cpu"]  # bf16 stays bf16 on a CPU
    assert gpu["max_length"] == 4096  # TRL's default of 1024 would cut reasoning traces
    assert gpu["warmup_steps"] == 0.03  # a ratio below 1
    smollm2 = load_recipe("smollm2_135m")
    assert not sft_kwargs(smollm2, tmp_path, select_backend(smollm2, has_cuda=False, has_unsloth=False))["bf16"]
    config = sft_config(recipe, tmp_path, select_backend(recipe, has_cuda=False, has_unsloth=False,
                                                         stand_ins_allowed=True))
    assert config.max_length == 4096 and config.num_train_epochs == 3


@pytest.mark.parametrize("recipe_name", ["llama32_3b", "mistral22b", "llama32_1b_kd"])
def test_meta_device_lora_counts_equal_the_architecture_formula(recipe_name):
    recipe = load_recipe(recipe_name)
    _, trainable, total = meta_lora_model(recipe)
    arch = load_architecture(recipe.architecture)
    assert trainable == lora_parameter_count(arch, recipe.lora_r, recipe.lora_target_modules)


def test_meta_device_rejects_a_target_module_the_model_lacks():
    recipe = with_overrides(load_recipe("llama32_1b_kd"), lora_target_modules=["q_proj", "qkv_proj"])
    with pytest.raises(ValueError):
        meta_lora_model(recipe)


def test_on_a_cpu_sft_trains_with_the_trained_positions_loss(tmp_path):
    """On a CPU the project's trainer computes SFT's loss at the trained positions only (`trained_positions_loss`):
    the same losses as TRL 1.16's own on the same steps (the CPU pins; TRL 1.15's, the GPU pins', is Triton only,
    so there the CPU trainer is the only one that runs)."""
    import trl
    from packaging.version import Version
    from trl import SFTTrainer

    from tests.train.test_distill_trainer import _args, _dataset, _lora, _tiny_llama, _tokenizer

    def losses(trainer_class) -> list[float]:
        trainer = trainer_class(model=_tiny_llama(seed=0), args=_args(tmp_path), train_dataset=_dataset(),
                                processing_class=_tokenizer(), peft_config=_lora())
        trainer.train()
        return [row["loss"] for row in trainer.state.log_history if "loss" in row]

    assert select_backend(load_recipe("smollm2_135m"), has_cuda=False, has_unsloth=False).trained_positions_loss
    assert not select_backend(load_recipe("smollm2_135m"), has_cuda=True, has_unsloth=False).trained_positions_loss
    # distillation too: on a CPU its trainer projects both models at the trained positions only (positions_only)
    assert select_backend(load_recipe("smollm2_135m_kd"), has_cuda=False, has_unsloth=False).trained_positions_loss
    assert not select_backend(load_recipe("llama32_1b_kd"), has_cuda=True, has_unsloth=True).trained_positions_loss
    cpu_trainer = sft_trainer_class(positions_only=True)
    assert cpu_trainer is not SFTTrainer and issubclass(cpu_trainer, SFTTrainer)
    assert sft_trainer_class(positions_only=False) is SFTTrainer  # a GPU runs TRL's own loss
    ours = losses(cpu_trainer)
    assert len(ours) == 2
    if Version(trl.__version__) >= Version("1.16.0"):  # TRL 1.15's loss cannot run on a CPU (Triton only)
        assert ours == pytest.approx(losses(SFTTrainer), rel=1e-4)


def test_the_cpu_teacher_attends_packed_rows_like_the_student_and_is_frozen(tmp_path):
    from lib.train.backends import _load_teacher
    from lib.train.packed_attention import PACKED_ATTENTION
    from tests.train.test_distill_trainer import _tiny_llama

    _tiny_llama(seed=1).save_pretrained(tmp_path)
    recipe = load_recipe("smollm2_135m_kd")
    teacher = _load_teacher(recipe, str(tmp_path), select_backend(recipe, has_cuda=False, has_unsloth=False))
    assert teacher.config._attn_implementation == PACKED_ATTENTION  # fast on padding-free rows, as the student
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_a_bf16_recipe_trains_in_fp16_on_a_gpu_without_bf16_and_says_so():
    recipe = load_recipe("llama32_3b")
    assert recipe.torch_dtype == "bfloat16"
    t4 = select_backend(recipe, has_cuda=True, has_unsloth=True, bf16_supported=False)
    assert t4.torch_dtype == "float16" and t4.stand_ins[0].startswith("bfloat16 -> float16")
    kwargs = sft_kwargs(recipe, "out", t4)
    assert (kwargs["bf16"], kwargs["fp16"]) == (False, True)
    a100 = select_backend(recipe, has_cuda=True, has_unsloth=True, bf16_supported=True)
    assert a100.torch_dtype == "" and a100.stand_ins == ()
    assert (sft_kwargs(recipe, "out", a100)["bf16"], sft_kwargs(recipe, "out", a100)["fp16"]) == (True, False)
    # the fallback is part of the run's identity: a run resumed on another card type is not the same run
    assert t4.as_dict()["torch_dtype"] == "float16" and "torch_dtype" not in a100.as_dict()
    # a CPU has no bf16 question to ask: a float32 recipe stays float32, nothing stands in
    cpu = select_backend(load_recipe("smollm2_135m"), has_cuda=False, has_unsloth=False, bf16_supported=False)
    assert cpu.torch_dtype == "" and cpu.stand_ins == ()
