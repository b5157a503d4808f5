"""What a person sees and does while a run trains: the progress bar, and asking it to stop.

The bar counts seconds of the budget for a budgeted run, else steps, and always shows the last
loss, val loss and learning rate. A stop request (Ctrl-C, a notebook's stop button) ends the run
at the next step boundary with a checkpoint saved; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading

from .schedule import get_lr


class StopRequest:
    """A request to stop at the next step boundary, with a checkpoint saved. Call `set()` (a
    notebook's stop button, a callback); inside `train`, the first Ctrl-C sets it too, and a
    second one stops at once. Under torchrun, SIGTERM (what torchrun sends its processes when it
    is stopped) counts as a Ctrl-C."""

    def __init__(self):
        self.requested = False

    def set(self):
        self.requested = True

    @contextlib.contextmanager
    def on_sigint(self, sigterm: bool = False):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handle(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        signums = (signal.SIGINT, signal.SIGTERM) if sigterm else (signal.SIGINT,)
        old = {signum: signal.signal(signum, handle) for signum in signums}
        try:
            yield self
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)


class ProgressBar:
    """A tqdm bar for a run. `state` is its TrainState; `elapsed` the seconds trained so far.

    A resumed run's bar starts where the run is, so the rate and time left are this session's."""

    def __init__(self, state, elapsed: float, *, time_budget: float | None, desc: str, enabled: bool):
        from tqdm.auto import tqdm

        self.budget = time_budget
        total, unit = (self.budget, "s") if self.budget else (state.schedule.max_steps, "step")
        initial = min(elapsed, self.budget) if self.budget else state.step
        self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled,
                        dynamic_ncols=True, bar_format=None if not self.budget else
                        "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
        self.enabled, self.loss, self.val = enabled, math.nan, math.nan
        self.update(state, elapsed)

    def update(self, state, elapsed: float, loss: float | None = None):
        if not self.enabled:
            return
        if loss is not None:
            self.loss = loss
        if state.history:
            self.val = state.history[-1]["val_loss"]
        self.bar.n = min(elapsed, self.budget) if self.budget else state.step
        if not self.budget:
            self.bar.total = state.schedule.max_steps

        def fmt(x):  # "-" until there is a figure (a nan here would look like a diverged run)
            return f"{x:.3f}" if math.isfinite(x) else "-"

        self.bar.set_postfix(step=state.step, loss=fmt(self.loss), val=fmt(self.val),
                             lr=f"{get_lr(state.step, state.schedule):.2e}", refresh=False)
        self.bar.update(0)  # redraws at most every tqdm.mininterval

    def close(self, state, elapsed: float):
        """Show where the run ended (the real elapsed seconds or steps, the last evaluation), and close."""
        if self.enabled:
            self.update(state, elapsed)
            self.bar.refresh()
        self.bar.close()
