"""llama.cpp's C code writes its logs straight to file descriptor 2, and llama-cpp-python's log callback to Python's
`sys.stderr`: in a notebook they land as hundreds of red lines (the quantizer logs every tensor).
`native_stderr_to(path)` sends both to a file for the duration instead.

Usage: ``with native_stderr_to(out / "logs" / "quantize-Q8_0.log"): llama_cpp.llama_model_quantize(...)``
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def native_stderr_to(path: Path) -> Iterator[Path]:
    """Point fd 2 and `sys.stderr` at `path` (appended; parents created) while the block runs, then back. Python's
    own stderr is flushed first, so nothing written before is lost or reordered. Both belong to the whole process:
    call it from the main thread, around work that runs there (every caller does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log, open(path, "a", buffering=1) as text:
            os.dup2(log.fileno(), 2)
            try:
                with contextlib.redirect_stderr(text):
                    yield path
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@contextlib.contextmanager
def llama_log_on_error(path: Path) -> Iterator[None]:
    """A llama.cpp load that fails says only "Failed to load model": re-raise it with the end of its log (`path`),
    where llama.cpp wrote why."""
    try:
        yield
    except (ValueError, RuntimeError) as error:
        raise type(error)(f"{error}; llama.cpp's log ({path}) ends:\n{log_tail(path)}") from error


@contextlib.contextmanager
def llama_cpp_logged_to(path: Path) -> Iterator[Path]:
    """Both at once, for a llama.cpp load: its output to `path`, and a failure quoting that log's end."""
    with native_stderr_to(path), llama_log_on_error(path):
        yield path


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a native log, for an error message."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""
