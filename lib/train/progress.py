"""What a reader of 03 sees while training runs: a line every ~5 % of the steps, instead of the Trainer's raw log
dictionaries, and in Jupyter a live progress bar above them (a widget: one output updated in place, where a text
bar's carriage returns would leave hundreds of lines in a rendered notebook and in papermill's log).

Usage: ``trainer.remove_callback(PrinterCallback); trainer.add_callback(progress_callback(tokens_per_step))``

A line: ``step 40/160 (25 %) · loss 1.02 · 152 tok/s · 3.4 min elapsed, ~10.1 min left``. Tokens/s counts the
examples' tokens (no padding) from the steps trained in this process (a resumed run starts its clock anew).
"""
from __future__ import annotations

import time

from lib.progress import live_bar


def progress_line(step: int, max_steps: int, loss: float | None, tokens_per_s: float | None, elapsed: float,
                  remaining: float | None) -> str:
    """One progress line; the loss and tokens/s are left out until known."""
    parts = [f"step {step}/{max_steps} ({100 * step / max_steps:.0f} %)"]
    if loss is not None:
        parts.append(f"loss {loss:.3f}")
    if tokens_per_s:
        parts.append(f"{tokens_per_s:.0f} tok/s")
    timing = f"{elapsed / 60:.1f} min elapsed"
    if remaining is not None:
        timing += f", ~{remaining / 60:.1f} min left"
    return " · ".join([*parts, timing])


def progress_callback(tokens_per_example: float, every_share: float = 0.05, print_fn=print, bar=live_bar):
    """A `TrainerCallback` printing `progress_line` every `every_share` of the steps (and at the last one), and
    moving `bar(total, initial)` (loss and tokens/s beside it) at every step.
    `tokens_per_example`: the mean example length, for tokens/s (examples per step come from the Trainer)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.first_step, self.loss = time.time(), state.global_step, None
            self.every = max(1, round(state.max_steps * every_share))
            self.examples_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                                      * args.world_size)
            self.bar = (bar(state.max_steps, state.global_step, "training", "step")
                        if state.is_world_process_zero else None)
            if state.global_step and state.is_world_process_zero:
                print_fn(f"resumed at step {state.global_step}/{state.max_steps}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if not state.is_world_process_zero:
                return control
            elapsed, done = time.time() - self.start, step - self.first_step
            rate = done / elapsed if elapsed > 0 else 0.0
            tokens_per_s = rate * self.examples_per_step * tokens_per_example if done else None
            if self.bar is not None:
                self.bar.update(step - self.bar.n)
                self.bar.set_postfix_str(" · ".join(
                    ([f"loss {self.loss:.3f}"] if self.loss is not None else [])
                    + ([f"{tokens_per_s:.0f} tok/s"] if tokens_per_s else [])), refresh=False)
            if step % self.every and step != state.max_steps:
                return control
            remaining = (state.max_steps - step) / rate if rate else None
            print_fn(progress_line(step, state.max_steps, self.loss, tokens_per_s, elapsed, remaining), flush=True)
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if getattr(self, "bar", None) is not None:
                self.bar.close()

    return Progress()
