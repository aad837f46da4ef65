"""Fold a LoRA adapter into the base weights and prove the merge changed nothing the model computes.

Usage: ``difference = merge_adapter(base_path, adapter_dir, out_dir, probe_texts, dtype="float32")``
"""
from __future__ import annotations

from pathlib import Path

MERGE_ATOL = 1e-3  # merged vs adapter logits; float32 merge error is ~1e-5 on this scale


class MergeMismatch(AssertionError):
    """The merged model's logits differ from the adapter model's by more than the tolerance."""


def merge_adapter(base_path: str, adapter_dir: Path, out_dir: Path, probe_texts: list[str],
                  dtype: str = "float32") -> float:
    """`merge_and_unload` the adapter into the base weights, save to `out_dir`, and return the largest
    absolute logit difference between the adapter model and the merged model on `probe_texts`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    batch = [tokenizer(text, return_tensors="pt", add_special_tokens=False) for text in probe_texts]
    with torch.no_grad():
        adapter_logits = [model(**inputs).logits for inputs in batch]
        merged = model.merge_and_unload().eval()
        merged_logits = [merged(**inputs).logits for inputs in batch]
    difference = max(float((a - m).abs().max()) for a, m in zip(adapter_logits, merged_logits))
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return difference


def merge_checked(base_path: str, adapter_dir: Path, out_dir: Path, probe_texts: list[str], dtype: str) -> dict:
    """Merge, then fail if the merged logits differ from the adapter's by more than `MERGE_ATOL`; the facts."""
    difference = merge_adapter(base_path, adapter_dir, out_dir, probe_texts, dtype=dtype)
    if difference > MERGE_ATOL:
        raise MergeMismatch(f"merged logits differ from adapter logits by {difference:.2e} > {MERGE_ATOL}")
    return {"mode": "exported", "max_logit_difference": difference, "merge_atol": MERGE_ATOL}
