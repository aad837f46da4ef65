"""Each notebook as JupyterLab runs it (nbclient, not papermill). In the CPU environment only: the GPU-versions
environment runs the same notebooks through papermill's dry-run matrix."""
import pytest

from lib.paths import NOTEBOOKS_DIR
from lib.runner import STAGES


@pytest.mark.slow
def test_each_notebook_runs_top_to_bottom_in_a_fresh_kernel_with_nbclient(tmp_path):
    """As in JupyterLab, not through papermill: one fresh kernel per notebook, started in notebooks/, the parameters
    edited in their own cell (no injected cell); nothing carried between notebooks but the run folder. The recipe is
    the one with a grpo: section (06's default), so all six run for one recipe."""
    import nbclient
    import nbformat

    for stage in STAGES:
        notebook = nbformat.read(NOTEBOOKS_DIR / f"{stage}.ipynb", as_version=4)
        parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        parameters.source = (parameters.source.replace("dry_run = False", "dry_run = True")
                             .replace('model = "smollm2_135m"  #', 'model = "smollm2_135m_arithmetic"  #')
                             .replace('model = "smollm2_135m"\n', 'model = "smollm2_135m_arithmetic"\n')
                             .replace('run_dir = ""', f'run_dir = "{tmp_path}"'))
        assert "dry_run = True" in parameters.source and str(tmp_path) in parameters.source
        assert 'model = "smollm2_135m_arithmetic"' in parameters.source
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}).execute()
        errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert errors == [], stage
    assert (tmp_path / "05_eval_edge" / "manifest.json").is_file()
    assert (tmp_path / "06_grpo" / "manifest.json").is_file()
