"""Stage 04: merge the adapter, prove the merge is exact, export GGUF files and compare sizes with estimates.

Usage: ``facts = run_export(cfg, probe_texts)``

In a dry-run the mode merges and converts nothing: the sizes table then holds the estimates alone.
"""
from __future__ import annotations

from pathlib import Path

from lib.export.gguf import gguf_tensor_type_counts, size_table
from lib.plan.recipe_plan import gguf_estimates
from lib.run_config import RunConfig, read_manifest, write_manifest

STAGE = "04_merge_export"


def run_export(cfg: RunConfig, probe_texts: list[str]) -> dict:
    """Merge (checked), convert, quantize through the run's mode; sizes against the architecture's estimates."""
    recipe, out = cfg.recipe, cfg.stage_dir(STAGE)
    adapter_dir = read_manifest(cfg, "03_train")["facts"].get("adapter_dir")
    facts = cfg.mode.merge(recipe, Path(adapter_dir) if adapter_dir else None, out / "merged", probe_texts)
    files = cfg.mode.convert(recipe, out / "merged", out / "gguf")
    facts |= {"sizes": size_table(files, gguf_estimates(recipe)),
              "tensor_types": {q: gguf_tensor_type_counts(p) for q, p in files.items()},
              "files": {q: str(p) for q, p in files.items()}}
    write_manifest(cfg, STAGE, {"adapter_dir": adapter_dir or "none (dry-run)"}, files, facts)
    return facts
