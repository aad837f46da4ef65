"""03_train imports unsloth before transformers, TRL and PEFT when unsloth will train (it patches them on import).

A stub package named `unsloth` on the path records what was already imported when it was; the child process
claims CUDA so that the Unsloth backend is the one chosen.
"""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from lib.paths import NOTEBOOKS_DIR, PROJECT_ROOT

PATCHED = ("transformers", "trl", "peft")


def _imports_of_first_code_cell(notebook: Path) -> str:
    """The import lines of 03's first code cells after the parameters, in order (what the notebook runs first):
    the Colab setup cell's (`import lib.colab`, which must not bring transformers either), then the first cell's."""
    cells = notebook.read_text().split("# %%")
    code = [c for c in cells if not c.lstrip().startswith(("[markdown]", 'tags=["parameters"]')) and c.strip()]
    setup, first = code[1], code[2]  # code[0] is the jupytext header
    assert "lib.colab.setup(" in setup, "03's first code cell after the parameters is the Colab setup cell"
    lines = [line.strip() for cell in (setup, first) for line in cell.splitlines()
             if line.strip().startswith(("import ", "from "))]
    return "\n".join(dict.fromkeys(lines))


def _run_with_stub(tmp_path: Path, imports: str, cuda: bool) -> dict:
    stub = tmp_path / "unsloth"
    stub.mkdir()
    record = tmp_path / "record.json"
    (stub / "__init__.py").write_text(textwrap.dedent(f"""
        import json, sys
        json.dump({{"already_imported": [m for m in {PATCHED!r} if m in sys.modules]}}, open({str(record)!r}, "w"))
    """))
    script = f"import torch\ntorch.cuda.is_available = lambda: {cuda}\n{imports}\n"
    env = {"PYTHONPATH": f"{tmp_path}:{PROJECT_ROOT}", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=NOTEBOOKS_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(record.read_text()) if record.is_file() else {}


def test_03_imports_unsloth_before_transformers_trl_and_peft(tmp_path):
    imports = _imports_of_first_code_cell(NOTEBOOKS_DIR / "03_train.py")
    assert "lib.train.stage" in imports and "import lib.colab" in imports  # the training code brings transformers
    seen = _run_with_stub(tmp_path, imports, cuda=True)
    assert seen == {"already_imported": []}, "unsloth was imported after (or not before) " + str(seen)


def test_without_cuda_unsloth_is_not_imported(tmp_path):
    imports = _imports_of_first_code_cell(NOTEBOOKS_DIR / "03_train.py")
    assert _run_with_stub(tmp_path, imports, cuda=False) == {}
