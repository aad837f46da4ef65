"""lib.run_config: manifests, the files a stage produced, and stale inputs refused (data flows 01 -> 05 only)."""
import os

import pytest

from lib.data.stage import build_splits, save_splits
from lib.masking.stage import mask_rows, read_rows, save_masked
from lib.modes import make_run_config
from lib.run_config import StaleStage, read_manifest, stage_file
from lib.train.stage import read_masked_examples


def test_03_refuses_masks_made_from_an_01_that_has_run_again(tmp_path):
    cfg = make_run_config("smollm2_135m", dry_run=True, run_dir=str(tmp_path))
    save_splits(cfg, build_splits(cfg))
    save_masked(cfg, mask_rows(cfg.recipe, read_rows(cfg), cfg.mode.tokenizer()))
    dataset, max_length = read_masked_examples(cfg)
    assert len(dataset) == 16 and max_length == 512
    manifest = read_manifest(cfg, "02_masking")
    assert manifest["consumed"] == {"train": "01_data/train.jsonl"} and list(manifest["consumed_fingerprints"]) == ["train"]
    train = tmp_path / "01_data" / "train.jsonl"
    stat = train.stat()
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # 01 wrote it anew (same bytes or not)
    with pytest.raises(StaleStage, match=r"02_masking was computed from .*01_data/train.jsonl, which has been written "
                                         r"anew .*: run 02_masking again \(python -m lib run smollm2_135m --dry-run "
                                         r"--stages 02\)"):
        read_masked_examples(cfg)


def test_a_file_a_stage_did_not_produce_is_a_clear_error(tmp_path):
    cfg = make_run_config("smollm2_135m", dry_run=True, run_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"01_data/manifest.json not found: run notebook 01_data"):
        stage_file(cfg, "01_data", "train")
    save_splits(cfg, build_splits(cfg))
    with pytest.raises(FileNotFoundError, match=r"its manifest lists no 'adapter' \(it has \['heldout', 'rejects', "
                                                r"'train'\]\)"):
        stage_file(cfg, "01_data", "adapter")
