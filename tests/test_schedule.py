"""The learning-rate schedule and its fit to a time budget (pure functions, and through train()
with a fake clock: no test here depends on how fast this machine is)."""

import dataclasses
from types import SimpleNamespace

import pytest

from tinygpt.config import PRESETS, TrainConfig
from tinygpt.data import Text
from tinygpt.model import GPTConfig
from tinygpt.schedule import FIT_POINTS, BudgetFit, Schedule, continue_schedule, fit_is_due, fitted_max_steps, get_lr
from tinygpt.train import RunOptions, train

SCHEDULE = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)


def test_lr_at_step_zero_is_lr_over_warmup_plus_one():
    assert get_lr(0, SCHEDULE) == pytest.approx(1.0 / 11)


def test_lr_rises_linearly_during_warmup():
    lrs = [get_lr(s, SCHEDULE) for s in range(10)]
    assert lrs == pytest.approx([(s + 1) / 11 for s in range(10)])


def test_lr_peaks_at_the_end_of_warmup():
    assert get_lr(10, SCHEDULE) == pytest.approx(1.0)


def test_lr_halfway_through_the_cosine_is_the_midpoint():
    assert get_lr(60, SCHEDULE) == pytest.approx((1.0 + 0.1) / 2)


def test_lr_at_max_steps_and_beyond_is_min_lr():
    assert get_lr(110, SCHEDULE) == pytest.approx(0.1)
    assert get_lr(500, SCHEDULE) == 0.1


def test_lr_decreases_monotonically_after_warmup():
    lrs = [get_lr(s, SCHEDULE) for s in range(10, 111)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_lr_without_warmup_starts_at_the_peak():
    assert get_lr(0, dataclasses.replace(SCHEDULE, warmup_steps=0)) == pytest.approx(1.0)


def test_a_schedule_gives_the_same_rates_as_its_config():
    sched = Schedule.from_config(SCHEDULE)
    assert [get_lr(s, sched) for s in range(120)] == [get_lr(s, SCHEDULE) for s in range(120)]


# ---------------------------------------------------------------- continuing a schedule


def test_extending_mid_decay_continues_from_the_current_rate_without_a_jump():
    sched = continue_schedule(Schedule.from_config(SCHEDULE), step=60, max_steps=210)
    assert get_lr(60, sched) == pytest.approx(get_lr(60, SCHEDULE))
    lrs = [get_lr(s, sched) for s in range(60, 211)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_extending_a_finished_schedule_stays_at_min_lr_with_no_second_warm_up():
    sched = continue_schedule(Schedule.from_config(SCHEDULE), step=110, max_steps=200)
    assert [get_lr(s, sched) for s in range(110, 200)] == pytest.approx([0.1] * 90)


def test_continuing_during_warm_up_keeps_the_warm_up_and_moves_the_end_of_the_decay():
    sched = continue_schedule(Schedule.from_config(SCHEDULE), step=5, max_steps=210)
    longer = dataclasses.replace(SCHEDULE, max_steps=210)
    assert [get_lr(s, sched) for s in range(220)] == [get_lr(s, longer) for s in range(220)]


def test_the_rates_before_the_step_continued_from_are_unchanged():
    sched = continue_schedule(Schedule.from_config(SCHEDULE), step=60, max_steps=80)
    assert [get_lr(s, sched) for s in range(61)] == [get_lr(s, SCHEDULE) for s in range(61)]


# ---------------------------------------------------------------- the fit, as a pure function


def test_a_slow_machine_gets_a_shorter_schedule_that_ends_with_the_budget():
    cfg = TrainConfig(max_steps=1000, warmup_steps=10, time_budget=100.0)
    # planning to end at 97 s, 87 s left at 0.5 s a step: 174 more steps
    assert fitted_max_steps(cfg, step=20, elapsed=10.0, seconds_per_step=0.5) == 20 + 174


def test_a_fast_machine_gets_a_longer_schedule_that_fills_the_budget():
    cfg = TrainConfig(max_steps=1000, warmup_steps=10, time_budget=100.0)
    assert fitted_max_steps(cfg, step=20, elapsed=10.0, seconds_per_step=0.01) == 20 + 8700


def test_the_fit_keeps_at_least_the_warm_up_and_the_steps_done():
    cfg = TrainConfig(max_steps=1000, warmup_steps=50, time_budget=100.0)
    assert fitted_max_steps(cfg, step=20, elapsed=99.0, seconds_per_step=1.0) == 51
    assert fitted_max_steps(cfg, step=80, elapsed=120.0, seconds_per_step=1.0) == 80  # no time left: end now


# ---------------------------------------------------------------- the fit in training, with a fake clock


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budget_config(**overrides) -> TrainConfig:
    cfg = dataclasses.replace(
        PRESETS["smoke"], model=GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0),
        batch_size=8, warmup_steps=5, eval_interval=1000, eval_iters=1, lr=1e-3, min_lr=1e-4, time_budget=10.0)
    return dataclasses.replace(cfg, **overrides)


def run_with_clock(cfg, text, seconds_per_step=0.1, seconds_per_eval=0.0):
    clock = FakeClock()

    def tick(step, elapsed, model):
        clock.now += seconds_per_step

    def eval_cost(history):
        clock.now += seconds_per_eval

    return train(cfg, Text(text), RunOptions(progress=False, clock=clock, on_step=tick, on_eval=eval_cost)), clock


@pytest.fixture(scope="module")
def short_text(text):
    return text[:100_000]


def test_a_slow_machine_ends_inside_the_budget_with_the_learning_rate_decayed(short_text):
    run, clock = run_with_clock(budget_config(max_steps=1000), short_text)
    assert run.stopped == "finished" and run.step == run.schedule.max_steps == 98  # 11 + (9.7 - 1.0) s / 0.1 s
    assert run.history[-1]["lr"] == pytest.approx(1e-4)
    assert clock.now <= 10.0


def test_a_fast_machine_lengthens_its_schedule_to_use_at_least_95_percent_of_the_budget(short_text):
    run, clock = run_with_clock(budget_config(max_steps=30), short_text)
    assert run.stopped == "finished" and run.step == 98
    assert 0.95 * 10.0 <= run.history[-1]["time"] <= 10.0
    assert any("98 steps (planned 30)" in n for n in run.notices)


def test_the_fit_counts_the_time_evaluations_take(short_text):
    # 0.1 s a step and 1 s for an evaluation every 10 steps: 0.2 s a step in all
    cfg = budget_config(max_steps=1000, eval_interval=10, time_budget=20.0)
    run, clock = run_with_clock(cfg, short_text, seconds_per_eval=1.0)
    assert run.stopped == "finished" and clock.now <= 20.0
    assert run.step >= 0.9 * (20.0 - 1.0) / 0.2  # the first evaluation is paid before the steps
    assert run.history[-1]["lr"] == pytest.approx(1e-4)


def test_without_fit_schedule_the_budget_only_stops_training(short_text):
    run, clock = run_with_clock(budget_config(max_steps=1000, fit_schedule=False), short_text, 0.125)
    assert run.stopped == "time budget" and run.step == 80 and run.schedule.max_steps == 1000
    assert run.history[-1]["step"] == 80 and run.history[-1]["time"] == 10.0


def test_a_schedule_continued_twice_keeps_every_earlier_rate_and_round_trips():
    once = continue_schedule(Schedule.from_config(SCHEDULE), step=60, max_steps=80)
    twice = continue_schedule(once, step=70, max_steps=300)
    assert [get_lr(s, twice) for s in range(71)] == [get_lr(s, once) for s in range(71)]
    assert Schedule.from_dict(twice.to_dict()) == twice


def test_the_fit_counts_each_evaluation_on_the_way_where_it_falls():
    cfg = TrainConfig(max_steps=1000, warmup_steps=10, eval_interval=10, time_budget=100.0)
    # 77 s left: the evaluation due at step 20 (5 s), 10 steps (10 s), the one at 30, ...: 50 steps and 5
    # evaluations take 75 s; a 51st step would bring the evaluation at step 70 first (81 s)
    planned = fitted_max_steps(cfg, step=20, elapsed=10.0, seconds_per_step=1.0, reserve=10.0, seconds_per_eval=5.0)
    assert planned == 20 + 50


def test_the_fit_keeps_time_for_the_final_evaluation():
    cfg = TrainConfig(max_steps=1000, warmup_steps=10, time_budget=100.0)
    # (97 - 10 - 5) s / 0.5 s
    assert fitted_max_steps(cfg, step=20, elapsed=10.0, seconds_per_step=0.5, reserve=5.0) == 20 + 164


def test_later_fits_correct_the_plan_when_the_pace_changes(short_text):
    clock = FakeClock()

    def tick(step, elapsed, model):  # 0.1 s a step until 5 s into the budget, then twice as slow
        clock.now += 0.1 if clock.now < 5.0 else 0.2

    run = train(budget_config(max_steps=1000), Text(short_text), RunOptions(progress=False, on_step=tick, clock=clock))
    assert run.stopped == "finished" and 0.95 * 10.0 <= clock.now <= 10.0
    assert run.history[-1]["lr"] == pytest.approx(1e-4)
    assert any("refitted" in n for n in run.notices)


# ---------------------------------------------------------------- when the fit to a time budget comes

BUDGETED = TrainConfig(max_steps=1000, time_budget=100.0)


def test_the_first_fit_comes_at_a_tenth_of_the_budget_on_a_slow_machine():
    assert not fit_is_due(BUDGETED, elapsed=9.9, fits_done=0, steps_timed=50, step=51, planned_steps=1000)
    assert fit_is_due(BUDGETED, elapsed=10.0, fits_done=0, steps_timed=50, step=51, planned_steps=1000)


def test_the_first_fit_comes_at_a_tenth_of_the_planned_steps_on_a_fast_machine():
    assert not fit_is_due(BUDGETED, elapsed=0.5, fits_done=0, steps_timed=98, step=99, planned_steps=1000)
    assert fit_is_due(BUDGETED, elapsed=0.5, fits_done=0, steps_timed=99, step=100, planned_steps=1000)


def test_the_later_fits_come_at_their_points_of_the_budget_only():
    assert not fit_is_due(BUDGETED, elapsed=49.0, fits_done=2, steps_timed=500, step=900, planned_steps=1000)
    assert fit_is_due(BUDGETED, elapsed=50.0, fits_done=2, steps_timed=10, step=900, planned_steps=1000)
    assert not fit_is_due(BUDGETED, elapsed=99.0, fits_done=len(FIT_POINTS), steps_timed=500, step=999,
                          planned_steps=1000)


def plan_end_after(elapsed: float, step: int = 100, fits_done: int = len(FIT_POINTS)):
    """A 100-step plan at 1 s a step (every fit point passed), after the step that reaches `step`."""
    cfg = TrainConfig(max_steps=100, warmup_steps=10, eval_interval=1000, time_budget=100.0)
    state = SimpleNamespace(step=step - 1, schedule=Schedule.from_config(cfg), fits_done=fits_done)
    fit = BudgetFit(cfg, 0)
    fit.after_step(state, now=elapsed - 1.0, elapsed=elapsed - 1.0, eval_seconds=[])  # a session's first step: untimed
    state.step = step
    fit.after_step(state, now=elapsed, elapsed=elapsed, eval_seconds=[])
    return state


def test_a_plan_that_runs_out_before_95_percent_of_the_budget_is_lengthened_at_once():
    state = plan_end_after(elapsed=80.0)
    assert state.schedule.max_steps == 100 + 17  # (97 - 80) s at 1 s a step
    assert state.fits_done == len(FIT_POINTS)  # not one of the fit points


def test_a_plan_that_runs_out_at_95_percent_of_the_budget_ends_there():
    assert plan_end_after(elapsed=95.0).schedule.max_steps == 100
    assert plan_end_after(elapsed=80.0, step=99).schedule.max_steps == 100  # not run out yet, no evaluation here


def test_a_plan_the_pace_would_end_early_is_refitted_at_the_next_evaluation():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, eval_interval=10, time_budget=100.0)
    state = SimpleNamespace(step=38, schedule=Schedule.from_config(cfg), fits_done=2)  # next point: 50%
    fit = BudgetFit(cfg, 0)
    for k in range(13):  # steps 39..50 at 0.5 s each (the first untimed): 100 planned steps end near 55 s
        state.step += 1 if k else 0
        fit.after_step(state, now=20.0 + 0.5 * k, elapsed=20.0 + 0.5 * k, eval_seconds=[])
        if state.step < 50:
            assert state.schedule.max_steps == 100  # between evaluations: no refit
    assert state.step == 50 and state.schedule.max_steps > 100 and state.fits_done == 2


def run_with_changing_pace(text, pace, budget=20.0):
    """Train on the fake clock with `pace(now)` seconds a step; returns (run, seconds used)."""
    clock = FakeClock()

    def tick(step, elapsed, model):
        clock.now += pace(clock.now)

    run = train(budget_config(max_steps=1000, time_budget=budget), Text(text),
                RunOptions(progress=False, on_step=tick, clock=clock))
    return run, clock.now


@pytest.mark.parametrize("pace, why", [
    (lambda now: 0.4 if 8.0 <= now < 11.0 else 0.1, "a slow patch over the fit at half the budget"),
    (lambda now: 0.1 if now < 13.0 else 0.05, "twice as fast after the fit at 70%"),
    (lambda now: 0.05 if now < 13.0 else 0.1, "twice as slow after the fit at 70%"),
    (lambda now: 0.1 if now < 17.5 else 0.02, "five times as fast after the fit at 85%"),
])
def test_the_run_ends_at_95_percent_of_the_budget_or_more_when_the_pace_changes(short_text, pace, why):
    run, used = run_with_changing_pace(short_text, pace)
    assert 0.95 * 20.0 <= used <= 20.0, why
    assert run.stopped == "finished" and run.history[-1]["lr"] == pytest.approx(1e-4), why


def test_a_fit_waits_for_ten_timed_steps_or_half_of_a_shorter_plan():
    assert not fit_is_due(BUDGETED, elapsed=20.0, fits_done=0, steps_timed=9, step=200, planned_steps=1000)
    assert fit_is_due(BUDGETED, elapsed=20.0, fits_done=0, steps_timed=10, step=200, planned_steps=1000)
    assert not fit_is_due(BUDGETED, elapsed=0.1, fits_done=0, steps_timed=1, step=2, planned_steps=6)
    assert fit_is_due(BUDGETED, elapsed=0.1, fits_done=0, steps_timed=3, step=4, planned_steps=6)
