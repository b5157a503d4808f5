"""The learning-rate schedule, and its fit to a time budget. No clock, no model: times are given.

Linear warm-up from 0 to lr over warmup_steps, then cosine decay to min_lr at max_steps (as in
nanoGPT). A schedule can be *continued* from a step: from there the learning rate decays by a
cosine from its value at that step to min_lr at a new max_steps. That is how a run is extended
on resume (no second warm-up, no jump) and how a time budget refits the plan mid-run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

FIT_POINTS = (0.1, 0.3, 0.5, 0.7, 0.85, 0.95)  # fractions of a time budget at which the schedule is (re)fitted
END_AT = 0.95  # a plan that runs out before this fraction of the budget is lengthened there and then
FIRST_FIT_STEPS = 0.1  # ... and the first fit comes at this fraction of the planned steps, if that is sooner
MIN_STEPS_TIMED = 10  # steps timed before a fit
FIT_MARGIN = 0.97  # plan to end at 97% of the budget: the pace varies


@dataclass(frozen=True)
class Schedule:
    """The learning rate at every step: warm-up, then a cosine that ends at max_steps.

    `restarts`: one (step, lr, previous_max_steps) per continuation (see continue_schedule): from
    that step, a cosine from that lr down to min_lr at the next continuation's previous_max_steps,
    or at max_steps for the last one. Rates before a continuation keep their old values."""

    lr: float
    min_lr: float
    warmup_steps: int
    max_steps: int
    restarts: tuple = ()

    @classmethod
    def from_config(cls, cfg) -> Schedule:
        return cls(lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "restarts": [list(r) for r in self.restarts]}

    @classmethod
    def from_dict(cls, d: dict) -> Schedule:
        return cls(**{**d, "restarts": tuple(tuple(r) for r in d.get("restarts", ()))})


def _cosine(step: int, start: int, end: int, hi: float, lo: float) -> float:
    progress = (step - start) / max(1, end - start)
    return lo + 0.5 * (1.0 + math.cos(math.pi * progress)) * (hi - lo)


def get_lr(step: int, schedule) -> float:
    """The learning rate for optimizer step `step` (0-based) under `schedule` (a Schedule or a
    TrainConfig: anything with lr, min_lr, warmup_steps and max_steps)."""
    restarts = getattr(schedule, "restarts", ())
    ends = [r[2] for r in restarts] + [schedule.max_steps]  # where each piece's cosine ends
    piece = sum(1 for r in restarts if step >= r[0])
    if step >= ends[piece]:
        return schedule.min_lr
    if piece:
        start, hi, _ = restarts[piece - 1]
        return _cosine(step, start, ends[piece], hi, schedule.min_lr)
    if step < schedule.warmup_steps:
        return schedule.lr * (step + 1) / (schedule.warmup_steps + 1)
    return _cosine(step, schedule.warmup_steps, ends[0], schedule.lr, schedule.min_lr)


def continue_schedule(schedule: Schedule, step: int, max_steps: int) -> Schedule:
    """`schedule` up to `step`, then ending at `max_steps` instead: the learning rate carries on
    from its value at `step` (no jump, no second warm-up). Still in warm-up, only the end of the
    decay moves."""
    if max_steps == schedule.max_steps:
        return schedule
    if step <= schedule.warmup_steps and not schedule.restarts:
        return dataclasses.replace(schedule, max_steps=max_steps)
    restart = (step, get_lr(step, schedule), schedule.max_steps)
    return dataclasses.replace(schedule, max_steps=max_steps, restarts=schedule.restarts + (restart,))


def fitted_max_steps(cfg, step: int, elapsed: float, seconds_per_step: float, reserve: float = 0.0,
                     seconds_per_eval: float = 0.0) -> int:
    """The max_steps that ends the schedule with cfg.time_budget at this pace, longer or shorter
    than cfg.max_steps (a fast machine gets a longer schedule, a slow one a shorter).

    `elapsed`: seconds of the budget spent by `step`; `seconds_per_step`: a step's time;
    `seconds_per_eval`: an evaluation's, counted at each multiple of cfg.eval_interval on the way
    (one at `step` itself is still to come: the loop evaluates before the next step);
    `reserve`: seconds kept for the final evaluation. Never less than the warm-up plus one step,
    nor than the steps already done (a plan with no time left ends at `step`: now).
    """
    left = max(0.0, FIT_MARGIN * cfg.time_budget - elapsed - reserve)

    def cost(n):  # n more steps, and the evaluations due before them: at step, step + 1, ... step + n - 1
        evals = (step + n - 1) // cfg.eval_interval - (step - 1) // cfg.eval_interval
        return n * seconds_per_step + evals * seconds_per_eval

    n = int(left / (seconds_per_step + seconds_per_eval / cfg.eval_interval))  # about right; then exact
    while cost(n + 1) <= left:
        n += 1
    while n > 0 and cost(n) > left:
        n -= 1
    return max(cfg.warmup_steps + 1, step + n)


def fit_is_due(cfg, elapsed: float, fits_done: int, steps_timed: int, step: int, planned_steps: int) -> bool:
    """Whether the next fit to cfg.time_budget is due, after optimizer step `step`.

    The first fit comes at FIT_POINTS[0] of the budget (`elapsed`: seconds of the whole run) or at
    FIRST_FIT_STEPS of the `planned_steps` (the schedule's max_steps), whichever is first: a fast
    machine would otherwise finish the planned steps before a tenth of the budget and ignore it.
    The later fits come at their points of the budget and correct the plan as the pace settles
    (the first steps and evaluations are slower: caches, allocations) and as the machine gets busier
    or quieter. Each needs MIN_STEPS_TIMED steps timed since the last (fewer for a plan that short:
    half of it), so one slow step does not decide the plan. (BudgetFit also refits between them
    when the plan would end before END_AT of the budget.)"""
    if fits_done >= len(FIT_POINTS) or steps_timed < min(MIN_STEPS_TIMED, max(1, planned_steps // 2)):
        return False
    if fits_done == 0 and step >= FIRST_FIT_STEPS * planned_steps:
        return True
    return elapsed >= FIT_POINTS[fits_done] * cfg.time_budget


class BudgetFit:
    """Times the steps of one session and fits the schedule to cfg.time_budget at FIT_POINTS, and in
    between whenever the plan would end before END_AT of the budget: at an evaluation, if the pace
    since the last fit projects an early end; at once, if the planned steps have run out.

    While `wanted(state)`, call after_step after each optimizer step with the clock's `now`, the
    run's `elapsed` seconds and the seconds each evaluation of the session took; it changes
    `state.schedule` (and `state.fits_done`, which counts the FIT_POINTS passed) when a fit is due,
    and returns a notice worth telling, or None."""

    def __init__(self, cfg, evals_seen: int):
        self.cfg, self.active = cfg, cfg.time_budget is not None and cfg.fit_schedule
        self.prev_end, self.steps, self.seconds, self.evals_seen = None, 0, 0.0, evals_seen

    def wanted(self, state) -> bool:
        return self.active

    def after_step(self, state, now: float, elapsed: float, eval_seconds: list[float]) -> str | None:
        cfg = self.cfg
        eval_time = sum(eval_seconds[self.evals_seen:])
        self.evals_seen = len(eval_seconds)
        if self.prev_end is not None:  # the first step of a session pays one-off costs: not timed
            self.seconds += now - self.prev_end - eval_time
            self.steps += 1
        self.prev_end = now
        if not self.steps:
            return None
        old = state.schedule.max_steps
        warm = eval_seconds[1:] or eval_seconds  # the first evaluation of a session is slower
        per_eval = sum(warm) / len(warm) if warm else 0.0
        step_time = max(self.seconds / self.steps, 1e-9)
        pace = step_time + per_eval / cfg.eval_interval
        at_point = fit_is_due(cfg, elapsed, state.fits_done, self.steps, state.step, old)
        end = END_AT * cfg.time_budget
        ran_out = state.step >= old and elapsed < end
        ends_early = (state.step % cfg.eval_interval == 0 and self.steps >= MIN_STEPS_TIMED
                      and elapsed + (old - state.step) * pace + per_eval < end)
        if not (at_point or ran_out or ends_early):
            return None
        planned = fitted_max_steps(cfg, state.step, elapsed, step_time, reserve=per_eval, seconds_per_eval=per_eval)
        state.schedule = continue_schedule(state.schedule, state.step, planned)
        state.fits_done += at_point
        self.steps, self.seconds = 0, 0.0  # the next fit uses the pace from here on
        first = at_point and state.fits_done == 1
        if first or abs(planned - old) > 0.02 * old:
            return (f"schedule {'fitted' if first else 'refitted'} to the {cfg.time_budget:g} s "
                    f"budget at {pace * 1000:.3g} ms a step: {planned} steps (planned {old})")
        return None
