"""Where things live: the project's folders and the user-level cache.

Usage: ``from lib.paths import run_dir; run_dir("smollm2_135m")``
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# recipes: params/ of the project, or a folder of the user's own (THINKDISTILL_PARAMS), read by every stage
PARAMS_DIR = Path(os.environ.get("THINKDISTILL_PARAMS") or PROJECT_ROOT / "params")
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
FIXTURES_DIR = PROJECT_ROOT / "fixtures"
DATA_DIR = PROJECT_ROOT / "data"


def runs_root() -> Path:
    """Where run folders live: `runs/` of the project, or THINKDISTILL_RUNS (read at each call: on Colab the setup
    cell points it at Google Drive after lib is imported, so a disconnected session resumes from Drive)."""
    return Path(os.environ.get("THINKDISTILL_RUNS") or PROJECT_ROOT / "runs")


def cache_dir() -> Path:
    """User-level cache (llama.cpp sources, decompressed tokenizers, converted base models).

    Outside the repo so a fresh clone on the same machine reuses what an earlier one built.
    """
    path = Path(os.environ.get("THINKDISTILL_CACHE", Path.home() / ".cache" / "thinkdistill"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(recipe: str, mode: str = "real") -> Path:
    """`runs/<recipe>/` (or `runs/<recipe>-dry-run/`, `runs/<recipe>-tiny/`): everything one recipe's stages read
    and write in that mode."""
    return runs_root() / (recipe if mode == "real" else f"{recipe}-{mode}")


def merged_model_dir(run: Path) -> Path:
    """Where 04 writes a run's merged Hugging Face model (`run`: a `run_dir`). Another recipe names it
    ``run:RECIPE`` (e.g. a distillation teacher: `lib.models.resolve_base_model`)."""
    return run / "04_merge_export" / "merged"


def gguf_dir(run: Path) -> Path:
    """Where 04 writes a run's GGUF files and their model card: what `python -m lib serve` serves from and `python -m
    lib push` uploads."""
    return run / "04_merge_export" / "gguf"


RUN_MODEL_PREFIX = "run:"


def project_path(path: str | Path) -> Path:
    """A params path made absolute: relative paths are relative to the project root."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


def publish_dir(target: Path, fill: Callable[[Path], None], marker: str) -> Path:
    """Create cache folder `target` atomically: `fill` writes into a private temporary folder beside it, which is
    then renamed. Processes racing for the same folder (the dry-run matrix runs recipes side by side) each build
    their own copy; the first rename wins and the others drop theirs. `marker` is a file only a complete folder has.
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        tmp.rename(target)
    except OSError:
        if not (target / marker).is_file():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A path beside `path`, not yet created, to write to; renamed onto `path` when the block ends without error,
    removed when it raises: a killed or failed write never leaves a file under the final name for a later run to
    take as finished (manifests, JSONL, Parquet, GGUF all go through here)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically (`atomic_path`)."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (`atomic_path`)."""
    with atomic_path(path) as partial:
        partial.write_bytes(data)
    return path
