"""Tiny Llama bases and LoRA adapters as training leaves them (B non-zero), built once per session.

The builders are the calibration script's (tests/export/calibrate_merge_tolerance.py), so the tests check the
tolerance on the same kind of model and adapter it was calibrated on.
"""
from __future__ import annotations

import pytest

from tests.export.calibrate_merge_tolerance import save_adapter, save_base, tiny_llama

RELATIVE_DELTA = 0.05  # ||scale·B@A|| / ||W|| per module: trained LoRA deltas are ~1-10 % of W (LoRA paper, 7.3)
LOGIT_STD = 3.0  # a trained model's logits spread over units, not the ~0.2 of a random one
SHARD_SIZE = "100KB"  # the 64-wide layers' weights split over several shards; the 49152x64 embedding alone in one


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """{"bfloat16"|"float32": (base folder, adapter folder)}: an untied bf16 checkpoint (as GPU bases are stored)
    and a tied float32 one (as SmolLM2 and Llama 3.2 tie their head), both in several safetensors shards."""
    root = tmp_path_factory.mktemp("tiny")
    built = {}
    for seed, (dtype, tied) in enumerate((("bfloat16", False), ("float32", True))):
        base = save_base(tiny_llama(tied=tied), root / f"base-{dtype}", seed, LOGIT_STD, dtype, SHARD_SIZE)
        built[dtype] = (base, save_adapter(base, root / f"adapter-{dtype}", seed, RELATIVE_DELTA))
    return built
