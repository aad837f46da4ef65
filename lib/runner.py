"""Run the notebooks for a recipe with papermill, keeping every executed notebook.

Usage: ``python -m lib run smollm2_135m [--dry-run] [--stages 01,03]``
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from lib.report import tiny_report
from lib.recipe import load_recipe, recipe_path
from lib.run_config import GRPO_STAGE, STAGES
from lib.paths import NOTEBOOKS_DIR, atomic_write_text, run_dir as default_run_dir


class StageFailed(RuntimeError):
    """A notebook cell failed; the executed notebook with the traceback is kept at `.notebook`."""

    def __init__(self, message: str, notebook: Path):
        super().__init__(message)
        self.notebook = notebook


def select_stages(spec: str | None, grpo: bool = True) -> list[str]:
    """`"01,03"` -> the matching stage names, in pipeline order; an unknown prefix lists the valid ones. No `spec`:
    every stage, 06_grpo only when the recipe has a `grpo:` section (`grpo`)."""
    if not spec:
        return [stage for stage in STAGES if grpo or stage != GRPO_STAGE]
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [w for w in wanted if not any(stage.startswith(w) for stage in STAGES)]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    return [stage for stage in STAGES if any(stage.startswith(w) for w in wanted)]


def run_recipe(recipe: str, dry_run: bool = False, stages: str | None = None, run_dir: str = "",
               log=print, tiny: bool = False, restart: bool = False, live: bool = False) -> dict:
    """Execute the selected notebooks in order into the run folder; returns per-stage wall times.

    `live` (`python -m lib run`): say which notebook and cell is running, and pass on what the cells print (03's
    progress lines, 05's files as they are judged) as it comes."""
    import nbformat
    import papermill

    if dry_run and tiny:
        raise ValueError("--dry-run and --tiny exclude each other")
    recipe_path(recipe)  # an unknown recipe fails here with the list of known ones
    has_grpo = bool(load_recipe(recipe).grpo)
    mode = "dry-run" if dry_run else "tiny" if tiny else "real"
    out_dir = Path(run_dir) if run_dir else default_run_dir(recipe, mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    for stage in select_stages(stages, has_grpo):
        source, target = NOTEBOOKS_DIR / f"{stage}.ipynb", out_dir / f"{stage}.ipynb"
        prefix = f"[{recipe}{'' if mode == 'real' else ' ' + mode}] {stage}"
        log(f"{prefix} -> {target}")
        started = time.time()
        handler = CellLog(prefix, nbformat.read(source, as_version=4).cells, log) if live else None
        writers = {"stdout_file": LineWriter(log), "stderr_file": LineWriter(log)} if live else {}
        papermill_log = logging.getLogger("papermill")
        level = papermill_log.level
        if handler:
            papermill_log.addHandler(handler)
            papermill_log.setLevel(logging.INFO)
        try:
            papermill.execute_notebook(str(source), str(target), cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                                       parameters={"model": recipe, "dry_run": dry_run, "tiny": tiny,
                                                   "run_dir": str(out_dir)}
                                       | ({"restart": restart} if stage in ("03_train", GRPO_STAGE) else {}),
                                       kernel_name="python3", log_output=live, **writers)
        except papermill.PapermillExecutionError as err:
            raise StageFailed(f"{stage} failed for {recipe}: {err.ename}: {err.evalue}\n"
                              f"executed notebook with the error: {target}", target) from None
        finally:
            for writer in writers.values():
                writer.close()
            if handler:
                papermill_log.removeHandler(handler)
                papermill_log.setLevel(level)
        timings[stage] = round(time.time() - started, 1)
        record_timing(out_dir / "timings.json", stage, timings[stage])
    if tiny:  # the run's own account of what stood in for what, and which files it wrote
        atomic_write_text(out_dir / "tiny_report.json", json.dumps(tiny_report(out_dir), indent=2))
    return timings


class CellLog(logging.Handler):
    """From papermill's log (`log_output`), one line per code cell started, naming its first line of code; the rest
    of that log (its banners, and the plain-text form of every display, "<IPython.core.display.HTML object>") is
    left out: what the cells print comes through `LineWriter`."""

    def __init__(self, prefix: str, cells: list, log=print):
        super().__init__(logging.INFO)
        self.prefix, self.log = prefix, log
        # papermill inserts its injected-parameters cell right after the cell tagged "parameters"
        tagged = [i for i, cell in enumerate(cells) if "parameters" in cell.metadata.get("tags", [])]
        at = tagged[0] + 1 if tagged else 0
        injected = {"cell_type": "code", "source": "# injected parameters"}
        self.cells = [*cells[:at], injected, *cells[at:]]

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        started = re.match(r"Executing Cell (\d+)", message)
        if started:
            index = int(started[1]) - 1
            cell = self.cells[index] if index < len(self.cells) else None
            if cell and cell["cell_type"] == "code":
                self.log(f"{self.prefix} · cell {index + 1}/{len(self.cells)}: {first_code_line(cell['source'])}")


class LineWriter:
    """A file-like sink for papermill's `stdout_file`/`stderr_file` handing `log` whole lines as they complete."""

    def __init__(self, log):
        self.log, self.pending = log, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.log(line.rstrip("\r"))
        return len(text)

    def flush(self) -> None:
        pass  # papermill flushes after every write, often mid-line: a line is handed on only when it ends

    def close(self) -> None:
        if self.pending:
            self.log(self.pending)
            self.pending = ""


def first_code_line(source: str) -> str:
    """The first line of a cell that is neither blank nor a comment (what a reader recognises the cell by)."""
    lines = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return (lines[0][:100] if lines else source.splitlines()[0][:100] if source.strip() else "")


def record_timing(path: Path, stage: str, seconds: float) -> dict:
    """Update one stage's wall time in `timings.json`, keeping the other stages' (a rerun of 05 keeps 01-04's)."""
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = seconds
    timings = {s: timings[s] for s in STAGES if s in timings}  # pipeline order
    path.write_text(json.dumps(timings, indent=2))
    return timings
