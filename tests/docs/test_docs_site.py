"""The site's sources: executed notebooks cleaned for static pages, recipe pages, Colab links (fast, no browser)."""
import base64
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from lib.paths import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("docs_site", PROJECT_ROOT / "tools" / "docs_site.py")
docs_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_site)

PNG_1PX = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                                         "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"))


def executed(*outputs):
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = list(outputs)
    notebook = nbformat.v4.new_notebook(cells=[cell])
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return notebook


def test_cleaning_drops_widgets_keeps_the_rest_and_puts_a_colab_badge_on_top():
    bar = nbformat.v4.new_output("display_data", data={docs_site.WIDGET_VIEW: {"model_id": "1"},
                                                       "text/plain": "training:   0%|"})
    line = nbformat.v4.new_output("stream", name="stdout", text="adapter in /home/me/thinkdistill/runs/x/03_train\n")
    picture = nbformat.v4.new_output("display_data", data={"image/png": PNG_1PX.decode()})
    table = nbformat.v4.new_output("display_data", data={"text/markdown": "| run | /home/me/thinkdistill/runs/x |"})
    notebook = executed(bar, line, picture, table)
    notebook.cells[0].source = 'run_dir = "/home/me/thinkdistill/runs/x"'
    notebook, counts = docs_site.clean_notebook(notebook, "03_train.ipynb", root=Path("/home/me/thinkdistill"))
    assert counts == {"widget outputs dropped": 1} and "widgets" not in notebook.metadata
    code = notebook.cells[1]
    assert [o.output_type for o in code.outputs] == ["stream", "display_data", "display_data"]
    # the build machine's path to the project is not on the page: relative paths instead
    assert code.source == 'run_dir = "runs/x"' and code.outputs[0].text == "adapter in runs/x/03_train\n"
    assert code.outputs[2].data["text/markdown"] == "| run | runs/x |"
    assert code.outputs[1].data["image/png"] == PNG_1PX.decode()
    assert notebook.cells[0].source == f"[![Open in Colab](../../assets/colab-badge.svg)]({docs_site.colab_url('03_train.ipynb')})"
    assert docs_site.colab_url("03_train.ipynb") == ("https://colab.research.google.com/github/thinkdistill/thinkdistill"
                                                     "/blob/main/notebooks/03_train.ipynb")


def test_a_picture_over_the_limit_is_refused_with_its_size():
    big = base64.b64encode(b"\x89PNG" + bytes(docs_site.MAX_PICTURE_BYTES)).decode()
    with pytest.raises(docs_site.DocsError, match=r"02_masking.ipynb: a picture of 200,004 bytes"):
        docs_site.clean_notebook(executed(nbformat.v4.new_output("display_data", data={"image/png": big})),
                                 "02_masking.ipynb")


def test_a_missing_run_names_the_notebook_and_the_command(tmp_path):
    with pytest.raises(docs_site.DocsError, match=r"smollm2_135m/01_data.ipynb .*make demo"):
        docs_site.refresh_notebooks(tmp_path, tmp_path / "docs")


def test_a_recipe_page_shows_its_params_file_with_its_comments():
    page = docs_site.recipe_page("llama32_1b_t4")
    text = (PROJECT_ROOT / "params" / "llama32_1b_t4.yaml").read_text()
    assert page.startswith("# llama32_1b_t4\n") and text.rstrip() in page and "python -m lib run llama32_1b_t4" in page
    assert "# a T4 has no bf16" in page  # the comments survive


def test_the_landing_page_and_readme_open_colab_on_this_repository():
    url = docs_site.colab_url("01_data.ipynb")
    assert url in (PROJECT_ROOT / "docs" / "index.md").read_text()
    assert url in (PROJECT_ROOT / "README.md").read_text()


@pytest.mark.parametrize("run", sorted(docs_site.SITE_RUNS))
def test_the_committed_site_notebooks_are_clean_executed_runs(run):
    """docs/notebooks/ (make docs-notebooks): every stage executed, no error or widget output, pictures ≤ 200 KB."""
    for stage in docs_site.SITE_RUNS[run]:
        path = PROJECT_ROOT / "docs" / "notebooks" / run / f"{stage}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
        assert outputs, f"{path} has no outputs: not an executed notebook"
        assert not [o for o in outputs if o.output_type == "error"], path
        assert not [o for o in outputs if docs_site.WIDGET_VIEW in o.get("data", {})], path
        assert "widgets" not in notebook.metadata, path
        pictures = [len(base64.b64decode(o.data["image/png"])) for o in outputs if "image/png" in o.get("data", {})]
        assert all(size <= docs_site.MAX_PICTURE_BYTES for size in pictures), (path, pictures)
        assert re.search(r"colab\.research\.google\.com/github/.*/notebooks/" + stage, notebook.cells[0].source)


def test_the_nav_names_the_landing_page_the_runs_and_the_recipes():
    pages = docs_site.nav_pages()
    assert pages[0] == "index.md" and pages[-1] == "recipes/index.md"
    assert sorted(pages[1:-1]) == sorted(f"notebooks/{run}/{stage}.ipynb" for run, stages in docs_site.SITE_RUNS.items()
                                         for stage in stages)
