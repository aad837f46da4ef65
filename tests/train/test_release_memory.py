import subprocess
import sys

import pytest
import torch

from lib.train.release_memory import _malloc_trim

pytestmark = pytest.mark.skipif(_malloc_trim() is None, reason="no malloc_trim in this C library (not glibc)")

# a fresh process: half of 2,000 blocks of 100 KiB freed leave ~100 MB of holes in malloc's heap that free() keeps
FRAGMENTED_HEAP = """
import gc, psutil
from lib.train.release_memory import trim_heap
rss = lambda: psutil.Process().memory_info().rss
blocks = [bytearray(100 * 1024) for _ in range(2000)]
del blocks[::2]; gc.collect()
before = rss(); released = trim_heap(); after = rss()
print(released, (before - after) / 2**20)
"""


def test_trim_heap_returns_the_holes_a_freed_pass_leaves_to_the_os():
    out = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True).stdout
    released, freed_mib = out.split()
    assert released == "True" and float(freed_mib) > 50  # ~96 MiB measured; freed blocks alone give back nothing


class _Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, x, y):
        return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y)}


def test_a_real_trainer_trims_once_after_every_pass_of_an_accumulated_step(monkeypatch, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from lib.train.release_memory import release_memory_callback

    trims, passes = [], []
    monkeypatch.setattr("lib.train.release_memory.trim_heap", lambda: trims.append(len(passes)) or True)
    rows = Dataset.from_list([{"x": [float(i), 1.0], "y": float(i)} for i in range(7)])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1, gradient_accumulation_steps=3,
                             num_train_epochs=1, report_to=[], save_strategy="no", use_cpu=True, logging_steps=100)
    trainer = Trainer(model=_Regression(), args=args, train_dataset=rows, callbacks=[release_memory_callback()])
    step = trainer.training_step
    monkeypatch.setattr(trainer, "training_step", lambda *a, **k: passes.append(1) or step(*a, **k))
    trainer.train()
    # 7 passes (3 steps: 3 + 3 + 1), each followed by exactly one trim before the next pass
    assert len(passes) == 7 and trims == list(range(1, 8))
