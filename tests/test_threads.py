"""tinygpt.threads: the thread policy for a machine that is not idle, and its one override."""

import pytest
import torch

from tinygpt import threads


def test_tinygpt_threads_fixes_the_count(monkeypatch):
    monkeypatch.setenv("TINYGPT_THREADS", "3")
    assert threads.fixed_threads() == 3


@pytest.mark.parametrize("value", ["", "  "])
def test_an_unset_or_empty_setting_leaves_the_choice_to_the_policy(monkeypatch, value):
    monkeypatch.setenv("TINYGPT_THREADS", value)
    assert threads.fixed_threads() is None


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_setting_that_is_not_a_positive_whole_number_is_refused_in_one_line(monkeypatch, value):
    monkeypatch.setenv("TINYGPT_THREADS", value)
    with pytest.raises(ValueError, match="TINYGPT_THREADS must be a whole number") as e:
        threads.fixed_threads()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("others_busy, expected", [(0.0, 2), (0.2, 2), (0.8, 1), (1.0, 1), (1.9, 1), (5.0, 1)])
def test_training_takes_the_cores_other_processes_leave_free_and_never_fewer_than_one(others_busy, expected):
    assert threads.free_cores(others_busy, cores=2) == expected


def test_on_an_idle_many_core_machine_training_takes_every_core():
    assert threads.free_cores(0.1, cores=16) == 16
    assert threads.free_cores(3.0, cores=16) == 13


def test_the_load_meter_counts_other_processes_cpu_time_and_not_its_own():
    looks = iter([(0.0, 100.0, 10.0), (2.0, 103.0, 12.0), (4.0, 107.0, 12.5)])
    meter = threads.LoadMeter(sample=lambda: next(looks))
    assert meter.others_busy() == pytest.approx(0.5)  # 3 CPU s in 2 s, 2 of them this process's
    assert meter.others_busy() == pytest.approx(1.75)  # 4 CPU s in 2 s, 0.5 of them this process's


def test_a_look_sooner_than_min_look_tells_nothing_and_the_next_covers_the_whole_interval():
    looks = iter([(0.0, 100.0, 10.0), (0.05, 100.1, 10.0), (2.0, 104.0, 11.0)])
    meter = threads.LoadMeter(sample=lambda: next(looks))
    assert meter.others_busy() is None
    assert meter.others_busy() == pytest.approx(1.5)  # from the first look: 4 CPU s in 2 s, 1 of them ours


def test_the_load_meter_reads_real_cpu_times():
    wall, every, own = threads.cpu_times()
    assert wall > 0 and every >= own > 0


def test_training_threads_apply_the_fixed_count_on_a_cpu(monkeypatch):
    monkeypatch.setenv("TINYGPT_THREADS", "1")
    before = torch.get_num_threads()
    try:
        assert threads.TrainingThreads("cpu").update() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_training_threads_leave_torch_alone_off_the_cpu(monkeypatch):
    monkeypatch.delenv("TINYGPT_THREADS", raising=False)
    before = torch.get_num_threads()
    threads.TrainingThreads("cuda")
    assert torch.get_num_threads() == before


def test_generation_takes_the_free_cores(monkeypatch):
    monkeypatch.delenv("TINYGPT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "free_now", lambda: 3)
    assert threads.generation_threads("cpu") == 3
    assert threads.generation_threads("cuda") is None


def test_generation_in_a_worker_thread_takes_one_thread(monkeypatch):
    import threading

    monkeypatch.delenv("TINYGPT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "free_now", lambda: 2)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(threads.generation_threads("cpu")))
    worker.start()
    worker.join()
    assert seen == [1]


def test_generation_follows_the_fixed_count_when_one_is_set(monkeypatch):
    monkeypatch.setenv("TINYGPT_THREADS", "2")
    monkeypatch.setattr(threads, "free_now", lambda: 1)
    assert threads.generation_threads("cpu") == 2


def test_using_threads_sets_the_count_within_and_restores_it(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.using_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads.using_threads(None):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_free_now_keeps_the_last_answer_when_a_look_comes_too_soon(monkeypatch):
    looks = iter([(0.0, 0.0, 0.0), (1.0, 1.0, 0.0), (1.01, 1.0, 0.0)])
    monkeypatch.setattr(threads, "_meter", threads.LoadMeter(sample=lambda: next(looks)))
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert threads.free_now() == 1  # another process kept a core busy for the whole second
    assert threads.free_now() == 1  # 10 ms later: too soon to tell, the last answer stands
