"""Writes restructure_before.json: run with the code BEFORE the lib/ restructure (commit 8935653), e.g.

    git worktree add /tmp/before 8935653
    cd /tmp/before && PYTHONPATH=/tmp/before HF_HUB_OFFLINE=1 /path/to/.venv/bin/python \
        /path/to/tests/golden/make_restructure_before.py /path/to/tests/golden/restructure_before.json

It imports that commit's flat modules (lib.run_config, lib.stage_data, …), so it does not run on today's layout;
tests/test_golden_restructure.py computes the same numbers with today's code and compares.
"""
import hashlib, json, sys, tempfile
from pathlib import Path
from lib.run_config import make_run_config
from lib.stage_data import build_splits
from lib.stage_masking import mask_rows, tokenizer_for
from lib.params import list_recipes
from lib.data_pipeline import DataPolicy, run_pipeline
from lib.data_schemas import convert_rows
from lib.data_sources import iter_records
from lib.reasoning_data import source_id_prefix

def digest(examples, ids):
    """One short sha256 per masked example: (id, input_ids, labels)."""
    return [hashlib.sha256(json.dumps([i, e.input_ids, e.labels]).encode()).hexdigest()[:16] for i, e in zip(ids, examples)]

out = {"masked": {}, "data_check": {}}
for recipe in list_recipes():
    for dry in (True, False) if recipe == "smollm2_135m" else (True,):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = make_run_config(recipe, dry, tmp)
            splits = build_splits(cfg)
            masked = mask_rows(cfg, splits.train, tokenizer_for(cfg))
            key = f"{recipe}{' dry-run' if dry else ''}"
            out["masked"][key] = {"rows": len(masked.ids), "max_length": cfg.recipe.max_length if splits.max_length is None else splits.max_length,
                                  "sha256": digest(masked.examples, masked.ids), "heldout_ids": [r["id"] for r in splits.heldout]}
            print(key, out["masked"][key]["rows"], flush=True)
for path in sorted(Path("tests/fixtures/data").iterdir()):
    if path.suffix == ".py":
        continue
    policy = DataPolicy()
    converted = convert_rows(iter_records(str(path)), "auto", {}, source_id_prefix(path))
    result = run_pipeline(converted, policy, None, [], keep_rows=True, apply_length_policy=False, source=str(path))
    out["data_check"][path.name] = {"kept_ids": [r["id"] for r in result.kept],
                                    "rejected_per_reason": dict(result.report.rejected.most_common()),
                                    "rows_read": result.report.rows_read}
Path(sys.argv[1]).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
