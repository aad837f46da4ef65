"""The tutorial site: the notebooks as executed by real runs, a page per recipe, built offline with MkDocs.

Usage:
    python tools/docs_site.py notebooks   # docs/notebooks/ <- runs/ (after `make demo` and the GPU dry-runs)
    python tools/docs_site.py build [--site-dir site]   # recipe pages, then `mkdocs build --strict`

`docs/notebooks/<run>/` holds executed copies of the five notebooks (the paired sources in notebooks/ stay
output-free), made readable for a static page by `clean_notebook`: no widget outputs (a progress bar's widget shows
nothing without a kernel; 03's progress lines say the same), no widget state, every picture a PNG of at most
`MAX_PICTURE_BYTES`, and an "Open in Colab" badge on top. Recipe pages (`docs/recipes/`, generated at each build,
not committed) render each params file with its comments.
"""
from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import yaml

from lib.paths import runs_root

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCS = PROJECT_ROOT / "docs"
# the runs whose executed notebooks the site shows: the CPU demo for real, two GPU recipes' dry-runs (the 3B and 22B
# memory plans, the Llama 3 and Mistral masks, the export sizes)
STAGES = ["01_data", "02_masking", "03_train", "04_merge_export", "05_eval_edge"]
# run -> its notebooks on the site (titles: mkdocs.yml's nav); the arithmetic recipe's run adds 06_grpo
SITE_RUNS = {"smollm2_135m": STAGES, "smollm2_135m_arithmetic": STAGES + ["06_grpo"],
             "llama32_3b-dry-run": STAGES, "mistral22b-dry-run": STAGES}
MAX_PICTURE_BYTES = 200_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class DocsError(RuntimeError):
    pass


def repository_url() -> str:
    """The repository's address: pyproject.toml's [project.urls] Repository (the one place it is written)."""
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def colab_url(notebook: str) -> str:
    """Colab opens a notebook straight from GitHub: .../github/OWNER/NAME/blob/main/notebooks/NOTEBOOK."""
    owner_name = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_name}/blob/main/notebooks/{notebook}"


def colab_badge(notebook: str, badge_path: str) -> str:
    """Markdown for the badge; the picture is the site's own copy (the site must work offline)."""
    return f"[![Open in Colab]({badge_path})]({colab_url(notebook)})"


def clean_notebook(notebook, name: str, badge_path: str = "../../assets/colab-badge.svg", root: Path = PROJECT_ROOT):
    """An executed notebook made fit for a static page (see the module's docstring); returns (notebook, counts).
    `badge_path`: from docs/notebooks/<run>/, which is also the page's folder on the site. The machine's own path to
    the project (`root`: run folders, the adapter) is written as a relative one in code and text outputs."""
    dropped = 0
    for cell in notebook.cells:
        cell.source = cell.source.replace(f"{root}/", "")
        outputs = []
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                dropped += 1
                continue
            picture = output.get("data", {}).get("image/png")
            if picture and len(base64.b64decode(picture)) > MAX_PICTURE_BYTES:
                raise DocsError(f"{name}: a picture of {len(base64.b64decode(picture)):,} bytes (at most "
                                f"{MAX_PICTURE_BYTES:,}): make the figure smaller in lib/display.py")
            outputs.append(_relative(output, f"{root}/"))
        if "outputs" in cell:
            cell.outputs = outputs
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)
    notebook.metadata.pop("papermill", None)
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell(colab_badge(name, badge_path)))
    return notebook, {"widget outputs dropped": dropped}


def _relative(output, prefix: str):
    """An output with `prefix` removed from its text (streams, plain text, HTML, Markdown; pictures untouched)."""
    if "text" in output:
        output.text = output.text.replace(prefix, "")
    for mime in ("text/plain", "text/html", "text/markdown"):
        if mime in output.get("data", {}):
            value = output.data[mime]
            output.data[mime] = value.replace(prefix, "") if isinstance(value, str) else [
                line.replace(prefix, "") for line in value]
    return output


def refresh_notebooks(runs: Path, docs: Path = DOCS) -> list[Path]:
    """Copy the executed notebooks of `SITE_RUNS` from `runs` into docs/notebooks/, cleaned; every one must exist."""
    missing = [str(runs / run / f"{stage}.ipynb") for run, stages in SITE_RUNS.items() for stage in stages
               if not (runs / run / f"{stage}.ipynb").is_file()]
    if missing:
        raise DocsError(f"no executed notebook at {missing[0]} (and {len(missing) - 1} more): run `make demo` and "
                        f"`python -m lib run smollm2_135m_arithmetic`, `python -m lib run llama32_3b --dry-run`, "
                        "`python -m lib run mistral22b --dry-run` first")
    written = []
    for run, stages in SITE_RUNS.items():
        for stage in stages:
            notebook, counts = clean_notebook(nbformat.read(runs / run / f"{stage}.ipynb", as_version=4),
                                              f"{stage}.ipynb")
            errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
            if errors:
                raise DocsError(f"{runs / run / stage}.ipynb has an error output: {errors[0]['ename']}")
            target = docs / "notebooks" / run / f"{stage}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            nbformat.write(notebook, tmp)
            tmp.replace(target)
            written.append(target)
            print(f"{target.relative_to(docs.parent)}: {counts['widget outputs dropped']} widget output(s) dropped")
    return written


def recipe_page(name: str, params_dir: Path = PROJECT_ROOT / "params") -> str:
    """A recipe's page: what it is, its hardware, the commands, and its params file as written (comments kept)."""
    text = (params_dir / f"{name}.yaml").read_text()
    recipe = yaml.safe_load(text)
    return "\n".join([
        f"# {name}", "", recipe["description"], "",
        f"**Hardware:** {recipe['hardware']} (the plan's budget: {recipe['vram_budget_gib']} GiB)", "",
        "## Run it", "", "```bash",
        f"python -m lib run {name}              # every notebook (06 with a grpo: section), into runs/{name}/",
        f"python -m lib run {name} --dry-run    # anywhere: no GPU, no download",
        f"python -m lib run {name} --tiny       # the real code path with a tiny model of the family, on a CPU",
        f"python -m lib plan {name}             # backend, memory plan, GGUF sizes",
        f"papermill notebooks/03_train.ipynb out.ipynb -p model {name}",
        "```", "",
        f"In Colab: {colab_badge('01_data.ipynb', '../assets/colab-badge.svg')} then set `model = \"{name}\"` in "
        "the parameters cell of each notebook.", "",
        f"## `params/{name}.yaml`", "", "```yaml", text.rstrip(), "```", ""])


def write_recipe_pages(docs: Path = DOCS, params_dir: Path = PROJECT_ROOT / "params") -> list[str]:
    pages = docs / "recipes"
    shutil.rmtree(pages, ignore_errors=True)
    pages.mkdir(parents=True)
    names = sorted(p.stem for p in params_dir.glob("*.yaml"))
    for name in names:
        (pages / f"{name}.md").write_text(recipe_page(name, params_dir))
    (pages / "index.md").write_text("# Recipes\n\nOne params file per recipe; each page shows it with its comments.\n\n"
                                    + "\n".join(f"- [{n}]({n}.md): {yaml.safe_load((params_dir / f'{n}.yaml').read_text())['description']}"
                                                for n in names) + "\n")
    return names


def nav_pages() -> list[str]:
    """Every page mkdocs.yml's nav names (a page is a nav entry's value, or the entry itself)."""
    def pages(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    config = yaml.safe_load((PROJECT_ROOT / "mkdocs.yml").read_text())
    return list(pages(config["nav"]))


def build(site_dir: Path) -> Path:
    """Recipe pages, then MkDocs (strict: a broken link or a missing page fails the build)."""
    write_recipe_pages()
    missing = [page for page in nav_pages() if not (DOCS / page).is_file()]
    if missing:  # MkDocs only logs a nav entry without its file, even in strict mode
        raise DocsError(f"the site's nav names docs/{missing[0]} (and {len(missing) - 1} more), which does not exist: "
                        f"`make docs-notebooks` after `make demo` writes the notebooks")
    # NO_MKDOCS_2_WARNING: Material's banner about its successor, nothing to act on in a build
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                    str(PROJECT_ROOT / "mkdocs.yml"), "-d", str(site_dir)], check=True, cwd=PROJECT_ROOT,
                   env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    return site_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("notebooks", help="refresh docs/notebooks/ from runs/")
    b = sub.add_parser("build", help="build the site")
    b.add_argument("--site-dir", default=str(PROJECT_ROOT / "site"))
    args = parser.parse_args(argv)
    try:
        if args.command == "notebooks":
            refresh_notebooks(runs_root())
        else:
            print(f"site: {build(Path(args.site_dir)) / 'index.html'}")
    except DocsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
