"""Stage 04: merge the adapter, prove the merge is exact, export GGUF files and compare sizes with estimates.

Usage: ``facts = run_export(cfg, probe_texts)``
"""
from __future__ import annotations

from lib.plan import export_quant_types, gguf_estimates
from lib.run_config import RunConfig, read_manifest, write_manifest

STAGE = "04_merge_export"
MERGE_ATOL = 1e-3  # merged vs adapter logits; float32 merge error is ~1e-5 on this scale


def gguf_name(recipe_name: str, quant: str) -> str:
    return f"{recipe_name}-{quant}.gguf"


def run_export(cfg: RunConfig, probe_texts: list[str]) -> dict:
    """Real run: merge, check, convert, quantize. Dry-run: the files that would be written and their sizes."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    estimates = gguf_estimates(recipe)
    if cfg.model_source is None:
        facts = {"mode": "dry-run (estimates only)",
                 "files": [{"quant": q, "file": gguf_name(recipe.name, q), "estimated_bytes": b}
                           for q, b in estimates.items()]}
        write_manifest(cfg, STAGE, {}, {}, facts)
        return facts
    from lib.base_model import resolve_base_model
    from lib.gguf_export import (convert_to_gguf, gguf_tensor_type_counts, merge_adapter, quantize_gguf,
                                 size_table)

    adapter_dir = read_manifest(cfg, "03_train")["facts"]["adapter_dir"]
    merged_dir = out / "merged"
    difference = merge_adapter(resolve_base_model(cfg.model_source), adapter_dir, merged_dir, probe_texts,
                               dtype=recipe.torch_dtype)
    if difference > MERGE_ATOL:
        raise AssertionError(f"merged logits differ from adapter logits by {difference:.2e} > {MERGE_ATOL}")
    gguf_dir = out / "gguf"
    gguf_dir.mkdir(exist_ok=True)
    files = {"F16": convert_to_gguf(merged_dir, gguf_dir / gguf_name(recipe.name, "F16"), "f16")}
    for quant in export_quant_types(recipe)[1:]:
        files[quant] = quantize_gguf(files["F16"], gguf_dir / gguf_name(recipe.name, quant), quant,
                                     recipe.eval_n_threads)
    facts = {"mode": "exported", "max_logit_difference": difference, "merge_atol": MERGE_ATOL,
             "sizes": size_table(files, estimates),
             "tensor_types": {q: gguf_tensor_type_counts(p) for q, p in files.items()},
             "files": {q: str(p) for q, p in files.items()}}
    write_manifest(cfg, STAGE, {"adapter_dir": adapter_dir}, {q: p for q, p in files.items()}, facts)
    return facts
