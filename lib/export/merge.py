"""Fold a LoRA adapter into the base weights and prove the merge changed nothing the model computes.

Usage: ``facts = merge_checked(base_path, adapter_dir, out_dir, probe_texts, "bfloat16", trained_in_4bit=True)``

Two ways to merge, one entry point. In memory (PEFT's `merge_and_unload`) when the model fits in RAM: the check runs
the adapter model and the merged model (its weights rounded to the dtype) on `probe_texts`, both in float32, and
compares their logits against a tolerance that follows from the dtype and depth (`merge_tolerance`). Shard by shard
(`lib.export.sharded_merge`) when it does not: the model is never loaded, so the check re-derives a sample of
merged tensors with PEFT's own arithmetic instead, and every LoRA pair must have been merged exactly once.
A QLoRA adapter (`trained_in_4bit`) was trained against NF4 weights but is merged into the bf16 ones the GGUF will
hold: the check compares with the adapter on those bf16 weights; the gap to the NF4 forward it was trained against
is measured too (CUDA + bitsandbytes only), reported and never failing.
"""
from __future__ import annotations

import importlib.util
import math
import shutil
from collections.abc import Callable
from pathlib import Path

from lib.plan.export_plan import MAX_PROBE_TOKENS, in_memory_merge_bytes, probe_logits_bytes
from lib.export.sharded_merge import (ADAPTER_WEIGHTS, check_merged_tensors, merge_sharded, replace_dir,
                                      weights_bytes)

FLOAT32_ATOL = 1e-3  # absolute floor: float32 merges of SmolLM2-135M differ by ~1.5e-4 (runs/smollm2_135m, 04)
# bf16/fp16 (merge_tolerance): the merged weight W + scale·B@A is rounded once to the dtype. Measured with
# tests/export/calibrate_merge_tolerance.py (bf16, float32 forwards, adapters with ||scale·B@A|| = 1-10 % of ||W||
# per module), max |merged - adapter| logits in units of sqrt(layers)·eps(bf16)·max|logits|:
#   honest merges: at most 0.66 over 54 tiny Llama/Mistral/Qwen3 models of 2-8 layers (5 seeds); 0.21-0.33 on
#   SmolLM2-135M (30 real layers, 3 seeds);
#   wrong merges, 3 % deltas: every scale x2 >= 3.1, x0.5 >= 1.5 (SmolLM2: 3.4, 1.9); one v_proj or o_proj of the
#   first layer skipped >= 1.1 in the tiny models.
# 1.0 lies between, 1.5x above the worst honest merge. What no tolerance can see is a wrong merge smaller than the
# dtype's own rounding: at 1 % deltas a x0.5 scale reaches only 0.6-1.3, one q_proj of SmolLM2's 210 modules
# skipped 0.2 (the facts' adapter_logit_effect says how far the adapter itself moves the logits).
# The --tiny runs of all eight recipes (trained adapters, not random ones) put honest bf16 merges higher: 0.75-1.66
# of the unit (mistral22b 1.00, r1_distill_qwen_1_5b 1.66 failed at 1.0). 3.0 keeps a 1.8x margin over those. The
# price: of the calibration's wrong merges at 3 % deltas only x2 (>= 3.1) is sure to be caught; x0.5 (>= 1.5) and a
# skipped module (>= 1.1) are caught only when the adapter moves the logits more (tests/export: 5 % deltas, all
# three caught in bf16). Partial wrong merges below 3 units pass unreported; only a wholly lost or negligible
# adapter is flagged: when the adapter's own logit effect is not above the tolerance, `warning` says so.
RELATIVE_FACTOR = 3.0
SAVE_SHARD_SIZE = "5GB"  # bounds what one safetensors write holds beyond the model (transformers 5 defaults to 50GB)


# the facts 04 shows of a merge (whichever check ran; absent keys are skipped)
MERGE_FACTS = ("mode", "strategy", "check", "max_logit_difference", "tolerance", "tolerance_rule",
               "adapter_logit_effect", "tensors_checked", "max_difference_over_bound", "nf4_max_logit_difference",
               "nf4_not_measured", "warning")


class MergeMismatch(AssertionError):
    """The merged model differs from the adapter model by more than the tolerance."""


def merge_tolerance(dtype: str, logit_scale: float, num_layers: int) -> tuple[float, str]:
    """(tolerance on max |merged - adapter| logits, the rule's name) for a merge rounded to `dtype`.

    max(1e-3, RELATIVE_FACTOR·sqrt(layers)·eps(dtype)·max|logits|): every merged weight is rounded once to the
    dtype, each layer adds that rounding's independent error to the residual stream (a random walk: sqrt(layers)),
    and the logits carry it in proportion to their size. float32 keeps the tight absolute bound (its relative term
    is ~1e-5); bfloat16 (eps 2^-7) and float16 (2^-10) get the relative one.
    """
    import torch

    eps = torch.finfo(getattr(torch, dtype)).eps
    rule = f"max({FLOAT32_ATOL:g}, {RELATIVE_FACTOR:g}·sqrt(layers)·eps({dtype})·max|logits|)"
    return max(FLOAT32_ATOL, RELATIVE_FACTOR * math.sqrt(num_layers) * eps * logit_scale), rule


def check_logits(difference: float, logit_scale: float, dtype: str, num_layers: int) -> dict:
    """The logit check's facts; raises `MergeMismatch` when `difference` exceeds `merge_tolerance`."""
    tolerance, rule = merge_tolerance(dtype, logit_scale, num_layers)
    if not difference <= tolerance:  # `not <=`: a NaN difference fails too
        raise MergeMismatch(f"merged logits differ from the adapter model's by {difference:.3g} > {tolerance:.3g} "
                            f"({rule}, max|logits| = {logit_scale:.3g}, {num_layers} layers): the merge is wrong "
                            "(scale, a module skipped, another base?); do not export it")
    return {"max_logit_difference": difference, "logit_scale": logit_scale, "num_layers": num_layers,
            "tolerance": tolerance, "tolerance_rule": rule}


def merge_strategy(needed_bytes: int, available_bytes: int) -> str:
    """"in_memory" when the in-memory merge fits in the available RAM, else "sharded"."""
    return "in_memory" if needed_bytes <= available_bytes else "sharded"


def nf4_skip_reason(has_bitsandbytes: bool, has_cuda: bool) -> str | None:
    """Why the adapter's NF4 forward cannot be measured here, or None when it can."""
    reasons = [why for missing, why in ((not has_bitsandbytes, "bitsandbytes not installed"),
                                        (not has_cuda, "needs a CUDA GPU")) if missing]
    return "; ".join(reasons) or None


def merge_checked(base_path: str, adapter_dir: Path, out_dir: Path, probe_texts: list[str], dtype: str,
                  trained_in_4bit: bool = False, strategy: str | None = None) -> dict:
    """Merge `adapter_dir` into `base_path`, write it to `out_dir` atomically, check it; JSON-ready facts.

    `strategy`: "in_memory", "sharded", or None to choose by RAM (`merge_strategy`). Raises `MergeMismatch` when
    the check fails; the check runs before `out_dir` is written, so a failed merge is never there.
    """
    import psutil

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if strategy not in (None, "in_memory", "sharded"):
        raise ValueError(f"strategy {strategy!r}: use 'in_memory', 'sharded' or None (chosen by RAM)")
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{adapter_dir / ADAPTER_WEIGHTS} not found: adapter_dir must be the folder 03_train "
                                "saved the adapter to (model.save_pretrained writes it)")
    base_dir = Path(base_path)
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"{base_dir / 'config.json'} not found: base_path must be a model folder, the one "
                                "lib.models.resolve_base_model returns (a hub id resolves to its snapshot folder)")
    available = psutil.virtual_memory().available
    try:
        needed = _in_memory_needs(base_dir, adapter_dir, len(probe_texts), dtype)
        chosen, chosen_by = strategy or merge_strategy(needed, available), "caller" if strategy else "RAM"
    except FileNotFoundError:  # no safetensors (pytorch_model.bin): nothing to size or shard; transformers loads it
        needed, chosen = None, strategy or "in_memory"
        chosen_by = "caller" if strategy else "no safetensors to size or shard"
    facts = {"mode": "exported", "strategy": chosen, "strategy_chosen_by": chosen_by,
             "in_memory_needs_gib": needed and round(needed / 2**30, 2),
             "ram_available_gib": round(available / 2**30, 2), "dtype": dtype, "trained_in_4bit": trained_in_4bit}
    if chosen == "in_memory":
        return facts | _merge_in_memory_checked(str(base_dir), adapter_dir, out_dir, probe_texts, dtype,
                                                trained_in_4bit)
    return facts | _merge_sharded_checked(base_dir, adapter_dir, out_dir, dtype, trained_in_4bit)


def _in_memory_needs(base_dir: Path, adapter_dir: Path, probe_count: int, dtype: str) -> int:
    import json

    config = json.loads((base_dir / "config.json").read_text())
    vocab = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size", 0)
    cast = 0 if dtype == "float32" else weights_bytes(base_dir, dtype)
    return in_memory_merge_bytes(weights_bytes(base_dir, "float32"), cast,
                                 (adapter_dir / ADAPTER_WEIGHTS).stat().st_size, probe_logits_bytes(probe_count, vocab))


def _merge_sharded_checked(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str,
                           trained_in_4bit: bool) -> dict:
    check: dict = {}

    def check_before_publishing(folder: Path) -> None:
        check.update(check_merged_tensors(base_dir, adapter_dir, folder))
        if not check["check_passed"]:
            raise MergeMismatch(f"sharded merge of {adapter_dir} into {base_dir} failed its per-tensor check: "
                                f"{check}; nothing was written to {out_dir}")

    merged = merge_sharded(base_dir, adapter_dir, out_dir, dtype, check_before_publishing)
    facts = merged | check | {
        "check_is": "per-tensor: a sample of merged tensors read back from disk against W + PEFT's own delta, "
                    "within one rounding to their dtype (the model was never loaded, so no logits)"}
    if trained_in_4bit:
        facts |= {"nf4_max_logit_difference": None,
                  "nf4_not_measured": "the sharded merge never loads the model, so there are no merged logits"}
    return facts


def _merge_in_memory_checked(base_path: str, adapter_dir: Path, out_dir: Path, probe_texts: list[str], dtype: str,
                             trained_in_4bit: bool) -> dict:
    def check(measured: dict) -> None:  # before saving: a merge that fails is never written to out_dir
        try:
            check_logits(measured["max_logit_difference"], measured["logit_scale"], dtype, measured["num_layers"])
        except MergeMismatch as error:
            raise MergeMismatch(f"{adapter_dir} merged into {base_path}: {error}. Was the adapter trained on this "
                                f"base (its adapter_config.json: base_model_name_or_path)? {out_dir} was not "
                                "written") from error

    measured = merge_in_memory(base_path, adapter_dir, out_dir, probe_texts, dtype, keep_merged_logits=trained_in_4bit,
                               check=check)
    facts = check_logits(measured["max_logit_difference"], measured["logit_scale"], dtype, measured["num_layers"])
    tolerance = facts["tolerance"]
    facts |= {"check": "logits", "adapter_logit_effect": measured["adapter_logit_effect"],
              "max_logit_difference_is": f"merged vs the adapter on the {dtype} base (what the GGUF holds): the check",
              "check_can_see_the_adapter": measured["adapter_logit_effect"] > tolerance}
    if not facts["check_can_see_the_adapter"]:
        facts["warning"] = (f"the adapter moves the logits by {measured['adapter_logit_effect']:.3g}, no more than the "
                            f"tolerance {tolerance:.3g}: this check could not tell a lost adapter from a merged one")
    if trained_in_4bit:
        facts |= _nf4_facts(base_path, adapter_dir, probe_texts, dtype, measured["merged_logits"])
    return facts


def _nf4_facts(base_path: str, adapter_dir: Path, probe_texts: list[str], dtype: str, merged_logits) -> dict:
    import torch

    reason = nf4_skip_reason(importlib.util.find_spec("bitsandbytes") is not None, torch.cuda.is_available())
    if reason:
        return {"nf4_max_logit_difference": None, "nf4_not_measured": reason}
    try:
        difference = nf4_logit_difference(base_path, adapter_dir, probe_texts, dtype, merged_logits)
    except Exception as error:  # reported, never failing: the merge itself was checked and saved already
        return {"nf4_max_logit_difference": None, "nf4_not_measured": f"{type(error).__name__}: {error}"}
    return {"nf4_max_logit_difference": difference,
            "nf4_max_logit_difference_is": "merged vs the adapter on the NF4 base it was trained against: the "
                                           "quantisation gap QLoRA leaves, reported, never failing"}


def _probe_inputs(tokenizer, probe_texts: list[str]) -> list[dict]:
    if not probe_texts:
        raise ValueError("no probe_texts: the merge check needs at least one text to run both models on")
    return [tokenizer(text, return_tensors="pt", add_special_tokens=False, truncation=True,
                      max_length=MAX_PROBE_TOKENS) for text in probe_texts]


def merge_in_memory(base_path: str, adapter_dir: Path, out_dir: Path, probe_texts: list[str], dtype: str,
                    keep_merged_logits: bool = False, check: Callable[[dict], None] | None = None) -> dict:
    """Merge in float32, round the merged weights once to `dtype`, save them to `out_dir` atomically; the
    measurements, every forward run in float32.

    Both forwards run in float32 on the weights as stored (a bf16 checkpoint upcasts exactly), so the only thing
    between the adapter model and the merged one is the merge itself and its one rounding to `dtype`: bf16's own
    forward noise (every activation rounded, ~eps·|logits| per forward) would otherwise swamp a wrong merge.
    The merge is PEFT's `merge_and_unload` (W + (B@A)·scale in float32), the rounding the `to(dtype)` of saving.

    max_logit_difference: max |merged - adapter| logits; logit_scale: max |adapter logits|; adapter_logit_effect:
    max |adapter - base| logits (how far the adapter moves the model: a check whose tolerance is larger could not
    see a merge that lost it). `check` gets these before anything is saved; it raises to keep the merge unsaved.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stored = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    inputs = _probe_inputs(tokenizer, probe_texts)
    with torch.no_grad():
        adapter_logits = [model(**batch).logits for batch in inputs]
        with model.disable_adapter():
            effect = _worst(_max_abs_difference(model(**batch).logits, a) for batch, a in zip(inputs, adapter_logits))
        merged = model.merge_and_unload().eval()
        for parameter in merged.parameters():  # what saving in `dtype` keeps, in place: still float32, no copy
            parameter.data.copy_(parameter.data.to(stored))
        merged_logits = [merged(**batch).logits for batch in inputs]
    difference = _worst(_max_abs_difference(a, m) for a, m in zip(adapter_logits, merged_logits))
    scale = _worst(float(a.abs().max()) for a in adapter_logits)
    measured = {"max_logit_difference": difference, "logit_scale": scale, "adapter_logit_effect": effect,
                "num_layers": merged.config.get_text_config().num_hidden_layers,
                "merged_logits": merged_logits if keep_merged_logits else None}
    if check:
        check(measured)
    merged.to(stored)

    def save(folder: Path) -> None:
        merged.save_pretrained(folder, max_shard_size=SAVE_SHARD_SIZE)
        tokenizer.save_pretrained(folder)
        # a SentencePiece model file (Mistral's tokenizer.model) the fast tokenizer does not write back: without it
        # llama.cpp's converter rebuilds the vocabulary from tokenizer.json and splits words differently from the
        # trained tokenizer (measured on Mistral v3: "clips" -> "clip"+"s" against "cl"+"ips"); the sharded path
        # copies it with the other small files
        for path in Path(base_path).glob("*.model") if Path(base_path).is_dir() else []:
            if not (folder / path.name).exists():
                shutil.copyfile(path, folder / path.name)

    replace_dir(out_dir, save)
    return measured


def _max_abs_difference(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def _worst(values) -> float:
    """The largest of `values`, NaN if any is NaN (Python's max drops a NaN that is not first)."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def nf4_logit_difference(base_path: str, adapter_dir: Path, probe_texts: list[str], dtype: str,
                         merged_logits) -> float:
    """max |merged - adapter on the NF4 base| logits: the base loaded as 03 trained it (NF4, double quant, compute
    in `dtype`, lib.train.backends), on the first CUDA GPU. Needs bitsandbytes and CUDA."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    compute = getattr(torch, dtype)
    quantized = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=compute)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=compute, quantization_config=quantized,
                                                device_map={"": 0})
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    inputs = _probe_inputs(AutoTokenizer.from_pretrained(adapter_dir), probe_texts)
    with torch.no_grad():
        nf4 = [model(**{k: v.to(0) for k, v in batch.items()}).logits.cpu() for batch in inputs]
    del model, base
    torch.cuda.empty_cache()
    return _worst(_max_abs_difference(n, m) for n, m in zip(nf4, merged_logits))


def merge_adapter(base_path: str, adapter_dir: Path, out_dir: Path, probe_texts: list[str],
                  dtype: str = "float32") -> float:
    """In-memory merge to `out_dir`; the largest absolute logit difference between adapter and merged model
    (unchecked: `merge_checked` is the stage's entry point)."""
    return merge_in_memory(base_path, adapter_dir, out_dir, probe_texts, dtype)["max_logit_difference"]
