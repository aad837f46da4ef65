"""The small pieces of 03's training path: the largest micro-batch the examples can make (the budget's plan), the
data fingerprint (what a resume compares), the progress line, the data-parallel switches and launcher refusals."""
import pytest
from datasets import Dataset

from lib.recipe import load_recipe, with_overrides
from lib.train.backends import select_backend
from lib.masking.dataset import example_lengths
from lib.train.progress import progress_line
from lib.train.resume import data_fingerprint, fingerprint_differences, training_fingerprint
from lib.train.stage import largest_micro_batch


def examples():
    ids = [[1] * n for n in (5, 9, 3, 7)]
    labels = [[-100] * 2 + [1] * 3, [-100] * 8 + [1], [1] * 3, [-100] * 3 + [1] * 4]
    return Dataset.from_dict({"input_ids": ids, "labels": labels})


def test_largest_micro_batch_takes_the_longest_and_the_most_trained():
    data = examples()
    assert largest_micro_batch(data, 2) == (9 + 7, 4 + 3)
    assert largest_micro_batch(data, 10) == (24, 3 + 1 + 3 + 4)
    assert largest_micro_batch(data.select([0, 2]), 2) == (8, 6)  # after a select: only those rows


def test_data_fingerprint_follows_content_and_order_and_selection():
    data = examples()
    assert data_fingerprint(data) == data_fingerprint(examples())
    assert data_fingerprint(data.select([1, 0, 2, 3])) != data_fingerprint(data)
    assert data_fingerprint(data.select([0, 1])) == data_fingerprint(Dataset.from_dict(data[:2]))
    moved = Dataset.from_dict({"input_ids": data["input_ids"], "labels": [[-100] + row[1:] for row in data["labels"]]})
    assert data_fingerprint(moved) != data_fingerprint(data)  # a label that moves: other training


def test_fingerprint_differences_name_the_key():
    recipe = load_recipe("smollm2_135m")
    backend = select_backend(recipe, has_cuda=False, has_unsloth=False).as_dict()
    old = training_fingerprint(recipe, examples(), backend)
    new = training_fingerprint(with_overrides(recipe, learning_rate=5e-4), examples(), backend, processes=2)
    assert fingerprint_differences(old, new) == ["learning_rate: 0.001 -> 0.0005",
                                                 "data-parallel processes: 1 -> 2"]
    assert fingerprint_differences(old, old) == []
    assert fingerprint_differences(old, training_fingerprint(with_overrides(recipe, eval_rows=3), examples(),
                                                             backend)) == []


def test_progress_line():
    assert progress_line(40, 160, 0.9463, 213.2, 150, 450) == \
        "step 40/160 (25 %) · loss 0.946 · 213 tok/s · 2.5 min elapsed, ~7.5 min left"
    assert progress_line(1, 4, None, None, 6, None) == "step 1/4 (25 %) · 0.1 min elapsed"
    lengths, trained = example_lengths(examples())
    assert lengths.tolist() == [5, 9, 3, 7] and trained.tolist() == [3, 1, 3, 4] and lengths.mean() == 6.0


def test_cpu_speedups_are_for_cpu_runs_only():
    recipe = load_recipe("smollm2_135m")
    cpu = select_backend(recipe, has_cuda=False, has_unsloth=False)
    gpu = select_backend(recipe, has_cuda=True, has_unsloth=False)
    assert cpu.packed_attention and cpu.fast_lora_dropout and cpu.trained_positions_loss
    assert not (gpu.packed_attention or gpu.fast_lora_dropout or gpu.trained_positions_loss)
    # distillation on a CPU projects student and teacher at the trained positions too; on a GPU, full logits
    kd = load_recipe("llama32_1b_kd")
    assert select_backend(kd, has_cuda=False, has_unsloth=False, stand_ins_allowed=True).trained_positions_loss
    assert not select_backend(kd, has_cuda=True, has_unsloth=True).trained_positions_loss


def test_a_data_parallel_launch_trains_with_transformers_even_where_unsloth_is(monkeypatch):
    import lib.train.backends as backends

    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "unsloth_installed", lambda: True)
    recipe = load_recipe("llama32_3b")
    assert backends.detect_backend(recipe).name == backends.UNSLOTH
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert backends.detect_backend(recipe).name == backends.TRANSFORMERS


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_the_launcher_refuses_sharded_configs(monkeypatch, capsys, variable):
    from lib.train_launch import main

    monkeypatch.setenv(variable, "true")
    assert main(["smollm2_135m"]) == 2
    assert "accelerate/ddp.yaml" in capsys.readouterr().err


def test_the_launcher_names_the_missing_stage(tmp_path, capsys):
    from lib.train_launch import main

    assert main(["smollm2_135m", "--run-dir", str(tmp_path)]) == 2
    assert "run notebook 02_masking" in capsys.readouterr().err


def test_budget_advice_for_lora_dropout():
    from lib.plan.budget import term_advice
    from lib.plan.recipe_plan import memory_plan

    recipe = load_recipe("smollm2_135m")
    plan = memory_plan(recipe, backend=select_backend(recipe, has_cuda=False, has_unsloth=False))
    assert term_advice("lora_dropout", recipe, plan).startswith("lora_dropout: 0")


def test_progress_moves_a_bar_every_step_and_prints_a_line_every_share():
    """The callback on a stand-in of the Trainer's state: the bar (a real tqdm writing to a buffer) reaches every
    step with the loss and tokens/s beside it, the lines come every 25 % and at the end; a resumed run starts the bar
    at its step."""
    import io
    from types import SimpleNamespace

    from tqdm import tqdm

    from lib.train.progress import progress_callback

    lines, bars, out = [], [], io.StringIO()

    def bar(total, initial, desc, unit):
        bars.append(tqdm(total=total, initial=initial, file=out, mininterval=0))
        return bars[-1]

    callback = progress_callback(100.0, every_share=0.25, print_fn=lambda line, flush=False: lines.append(line),
                                 bar=bar)
    args = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=1, world_size=1)
    state = SimpleNamespace(global_step=2, max_steps=8, is_world_process_zero=True)
    callback.on_train_begin(args, state, None)
    assert bars[0].n == 2 and lines == ["resumed at step 2/8"]
    for step in range(3, 9):
        state.global_step = step
        callback.on_log(args, state, None, logs={"loss": 1.0 / step})
        callback.on_step_end(args, state, None)
    callback.on_train_end(args, state, None)
    assert bars[0].n == 8 and "loss 0.125" in out.getvalue() and "tok/s" in out.getvalue()
    assert [line.split(" ·")[0] for line in lines[1:]] == ["step 4/8 (50 %)", "step 6/8 (75 %)", "step 8/8 (100 %)"]
