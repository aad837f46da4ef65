"""lib.progress: a line per finished item everywhere, a bar moved along with them where a notebook shows one."""
import io

from tqdm import tqdm

from lib.progress import Progress, in_jupyter_kernel


def test_lines_and_bar_follow_each_finished_item():
    lines, out, bars = [], io.StringIO(), []

    def bar(total, initial, desc, unit):
        bars.append(tqdm(total=total, initial=initial, desc=desc, unit=unit, file=out, mininterval=0))
        return bars[-1]

    progress = Progress(3, "05 evaluation", unit="run", print_fn=lambda line, flush=False: lines.append(line),
                        bar=bar)
    progress.advance("base on heldout decoded")
    with progress.step("distilled-Q8_0 timed alone"):
        pass
    progress.advance("distilled-Q4_K_M on heldout decoded")
    assert [line.split(" (")[0] for line in lines] == [
        "05 evaluation: base on heldout decoded", "05 evaluation: distilled-Q8_0 timed alone in 0.0 s",
        "05 evaluation: distilled-Q4_K_M on heldout decoded"]
    assert lines[-1].endswith(" s)") and "(3/3, " in lines[-1]
    assert bars[0].n == 3 and "05 evaluation" in out.getvalue() and "3/3" in out.getvalue()


def test_outside_a_kernel_there_is_no_bar():
    assert not in_jupyter_kernel()
    assert Progress(2, "04 export", print_fn=lambda *a, **k: None).bar is None
