"""The in-memory merge check (lib.export.merge): honest bf16 merges pass, wrong merges fail in bf16 and float32.

Real models, real PEFT merges: tiny Llama bases and adapters with trained-size B (tests/export/conftest.py).
A wrong merge is PEFT's own merge made wrong after the adapter model's logits were taken (wrong scale, or one
module's B zeroed), the same patch the calibration used.
"""
from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from lib.export.merge import (FLOAT32_ATOL, MAX_PROBE_TOKENS, RELATIVE_FACTOR, MergeMismatch, check_logits,
                              in_memory_merge_bytes, merge_checked, merge_strategy, merge_tolerance,
                              nf4_skip_reason, probe_logits_bytes)
from tests.export.calibrate_merge_tolerance import PROBES, wrong_merge

BF16_EPS = 2.0**-7


def test_honest_bf16_merge_fails_the_old_absolute_check_and_passes_the_dtype_rule(tiny, tmp_path):
    # positional, as the old merge_checked(base, adapter, out, probes, dtype) took them: under the old 1e-3 check
    # this call raises MergeMismatch
    base, adapter = tiny["bfloat16"]
    facts = merge_checked(str(base), adapter, tmp_path / "merged", PROBES, "bfloat16")
    assert facts["strategy"] == "in_memory" and facts["check"] == "logits"
    assert facts["max_logit_difference"] > 1e-3  # the old absolute bound would have failed this honest merge
    assert facts["max_logit_difference"] <= facts["tolerance"]
    assert facts["tolerance"] == pytest.approx(RELATIVE_FACTOR * math.sqrt(2) * BF16_EPS * facts["logit_scale"])
    assert facts["adapter_logit_effect"] > facts["tolerance"] and facts["check_can_see_the_adapter"]
    assert json.loads(json.dumps(facts)) == facts
    saved = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert saved["dtype"] == "bfloat16" and (tmp_path / "merged" / "tokenizer.json").is_file()


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("kind", ["scale x2", "scale x0.5", "skip model.layers.0.self_attn.v_proj"])
def test_wrong_merges_are_caught(tiny, tmp_path, dtype, kind):
    base, adapter = tiny[dtype]
    with wrong_merge(kind), pytest.raises(MergeMismatch, match="merged logits differ"):
        merge_checked(str(base), adapter, tmp_path / "merged", PROBES, dtype)
    assert not (tmp_path / "merged").exists()  # nothing left for the converter to take as a finished merge
    assert [p.name for p in tmp_path.iterdir()] == []  # nor a temporary folder


def test_a_failed_check_keeps_the_earlier_merge(tiny, tmp_path):
    base, adapter = tiny["bfloat16"]
    out = tmp_path / "merged"
    merge_checked(str(base), adapter, out, PROBES, "bfloat16")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with wrong_merge("scale x2"), pytest.raises(MergeMismatch, match=f"{out} was not written"):
        merge_checked(str(base), adapter, out, PROBES, "bfloat16")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_float32_merge_keeps_the_absolute_bound(tiny, tmp_path):
    base, adapter = tiny["float32"]
    facts = merge_checked(str(base), adapter, tmp_path / "merged", PROBES, "float32")
    assert facts["tolerance"] == FLOAT32_ATOL and facts["max_logit_difference"] < 1e-4


def test_a_rerun_replaces_the_previous_merge(tiny, tmp_path):
    base, adapter = tiny["float32"]
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.safetensors").write_text("an older merge")
    merge_checked(str(base), adapter, out, PROBES, "float32", strategy="in_memory")
    assert not (out / "stale.safetensors").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


CAN_MEASURE_NF4 = importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available()


@pytest.mark.skipif(CAN_MEASURE_NF4, reason="CUDA and bitsandbytes are here: the NF4 gap is measured")
def test_qlora_on_a_cpu_reports_the_nf4_gap_as_not_measured(tiny, tmp_path):
    base, adapter = tiny["bfloat16"]
    facts = merge_checked(str(base), adapter, tmp_path / "merged", PROBES, "bfloat16", trained_in_4bit=True)
    assert facts["trained_in_4bit"] is True
    assert "bfloat16 base" in facts["max_logit_difference_is"] and "the check" in facts["max_logit_difference_is"]
    assert facts["nf4_max_logit_difference"] is None
    has_bitsandbytes = importlib.util.find_spec("bitsandbytes") is not None
    assert facts["nf4_not_measured"] == nf4_skip_reason(has_bitsandbytes, torch.cuda.is_available())


def test_nf4_skip_reason_names_what_is_missing():
    assert nf4_skip_reason(True, True) is None
    assert nf4_skip_reason(False, True) == "bitsandbytes not installed"
    assert nf4_skip_reason(True, False) == "needs a CUDA GPU"
    assert nf4_skip_reason(False, False) == "bitsandbytes not installed; needs a CUDA GPU"


def test_tolerance_follows_the_dtype_and_the_depth():
    assert merge_tolerance("float32", 30.0, 30)[0] == FLOAT32_ATOL  # its relative term, ~2e-5, is below the floor
    bf16 = merge_tolerance("bfloat16", 30.0, 16)[0]
    assert bf16 == pytest.approx(RELATIVE_FACTOR * 4 * 2.0**-7 * 30.0)
    assert merge_tolerance("float16", 30.0, 16)[0] == pytest.approx(bf16 / 8)  # 3 more mantissa bits
    assert merge_tolerance("bfloat16", 30.0, 64)[0] == pytest.approx(2 * bf16)  # 4x the layers: 2x the noise
    assert merge_tolerance("bfloat16", 0.01, 2)[0] == FLOAT32_ATOL  # tiny logits: never tighter than float32's
    assert "eps(bfloat16)" in merge_tolerance("bfloat16", 1.0, 2)[1]


def test_check_logits_fails_above_the_tolerance_and_on_nan():
    tolerance = merge_tolerance("bfloat16", 20.0, 28)[0]
    assert check_logits(tolerance, 20.0, "bfloat16", 28)["tolerance"] == tolerance
    for bad in (tolerance * 1.01, float("nan")):
        with pytest.raises(MergeMismatch, match="28 layers"):
            check_logits(bad, 20.0, "bfloat16", 28)


def test_merge_strategy_and_the_bytes_it_compares():
    gib = 2**30
    assert merge_strategy(10 * gib, 10 * gib) == "in_memory"
    assert merge_strategy(10 * gib + 1, 10 * gib) == "sharded"
    # Mistral-Small 22B merged to bf16: checked in float32 (88 GB) and cast to bf16 (44 GB) for saving
    needed = in_memory_merge_bytes(88 * 10**9, 44 * 10**9, 10**9, probe_logits_bytes(3, 32768))
    assert needed > 133 * 10**9 and merge_strategy(needed, 64 * gib) == "sharded"
    assert merge_strategy(in_memory_merge_bytes(10**6, 0, 0, 0), 2 * gib) == "in_memory"
    assert probe_logits_bytes(3, 128256) == 2 * 3 * MAX_PROBE_TOKENS * 128256 * 4


def test_merge_checked_goes_shard_by_shard_when_ram_is_short(tiny, tmp_path, monkeypatch):
    import psutil

    class Short:
        available = 2**20

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Short())
    base, adapter = tiny["bfloat16"]
    facts = merge_checked(str(base), adapter, tmp_path / "merged", PROBES, "bfloat16", trained_in_4bit=True)
    assert facts["strategy"] == "sharded" and facts["strategy_chosen_by"] == "RAM"
    assert facts["check"] == "per_tensor" and facts["check_passed"]
    assert facts["nf4_max_logit_difference"] is None and "never loads the model" in facts["nf4_not_measured"]


def test_unknown_strategy_is_refused(tiny, tmp_path):
    base, adapter = tiny["float32"]
    with pytest.raises(ValueError, match="strategy 'disk'"):
        merge_checked(str(base), adapter, tmp_path / "merged", PROBES, "float32", strategy="disk")
