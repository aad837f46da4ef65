"""Import unsloth before transformers, TRL and PEFT when it is the backend that will train.

Usage: the first import of 03_train: ``import lib.train.unsloth_first  # noqa: F401 (before transformers)``

Unsloth patches transformers, TRL and PEFT when it is imported, and warns ("Unsloth should be imported before
transformers …") and leaves parts unpatched when it comes second. It trains only with CUDA and only when installed
(the `[gpu]` extra), so on any other machine this module imports nothing but torch. Importing this module must not
import transformers: it sits above every other import of 03 (`tests/train/test_unsloth_first.py`).
"""
from __future__ import annotations

import importlib.util
import os


def import_unsloth_if_it_will_train() -> bool:
    """Import unsloth when it is installed, a CUDA GPU is present and this is not one process of a data-parallel
    launch (WORLD_SIZE > 1: transformers + PEFT trains, `lib.train.backends.detect_backend`); whether it was."""
    if importlib.util.find_spec("unsloth") is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    import unsloth  # noqa: F401  (the import patches transformers/TRL/PEFT)

    return True


UNSLOTH_IMPORTED = import_unsloth_if_it_will_train()
