"""Progress a reader can watch: in Jupyter a live bar (tqdm's widget: one output updated in place), and everywhere a
line per finished item (what papermill's log and a terminal show; a text bar's carriage returns would leave
hundreds of lines in a rendered notebook).

Usage::

    progress = Progress(len(jobs), "05 judging", unit="file")
    for job in jobs:
        ...
        progress.advance(f"{label} on {benchmark}")   # -> "05 judging: base on heldout (1/6, 42 s)"
    with Progress(3, "04 export").step("merge"): ...   # -> "04 export: merge in 12.3 s (1/3, 12 s)"
"""
from __future__ import annotations

import contextlib
import time


def in_jupyter_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (JupyterLab, Colab, papermill) rather than a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def live_bar(total: int, initial: int = 0, desc: str = "", unit: str = "it"):
    """tqdm's notebook bar in a Jupyter kernel, else None (a terminal or a log gets the lines)."""
    if not in_jupyter_kernel():
        return None
    from tqdm.notebook import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit)


class Progress:
    """`total` items of work named `desc`: a bar in Jupyter and a printed line as each item finishes."""

    def __init__(self, total: int, desc: str, unit: str = "step", print_fn=print, bar=live_bar):
        self.total, self.desc, self.done, self.print_fn = total, desc, 0, print_fn
        self.start = time.time()
        self.bar = bar(total, 0, desc, unit) if total else None

    def advance(self, what: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(what, refresh=False)
            if self.done >= self.total:
                self.bar.close()
        self.print_fn(f"{self.desc}: {what} ({self.done}/{self.total}, {time.time() - self.start:.0f} s)", flush=True)

    @contextlib.contextmanager
    def step(self, what: str):
        started = time.time()
        yield
        self.advance(f"{what} in {time.time() - started:.1f} s")
