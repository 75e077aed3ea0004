"""The limit decisions, without processes: readings in, breaches out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alysd.config import parse_config
from alysd.limits import Limits, LimitWatch

MiB = 1 << 20


def watch(breaches: int = 2, **limits) -> LimitWatch:
    return LimitWatch(Limits(**limits), breaches)


def test_limits_come_from_the_actor_spec():
    config = parse_config('[supervisors.r]\n[actors.a]\nsupervisor = "r"\nclass = "m:A"\n'
                          'memory_limit = "256MiB"\ncpu_limit = 1.5\ncpu_window = "2s"\n'
                          'max_cpu_time = "400ms"\n')
    limits = Limits.of(config.actors["a"])
    assert limits == Limits(256 * MiB, 1.5, 2.0, 0.4)
    assert limits.any and not Limits().any
    assert limits.sample_interval(1.0) == 0.2        # often enough for max_cpu_time
    assert Limits(memory=1).sample_interval(1.0) == 1.0
    # CPU: for max_cpu_time as often as readings; for cpu_limit ten times a window
    assert limits.cpu_interval(1.0) == 0.2
    assert Limits(cpu=1.0, cpu_window=5.0).cpu_interval(0.1) == 0.5
    assert Limits(cpu=1.0, cpu_window=5.0).cpu_interval(1.0) == 1.0
    assert Limits(memory=1).cpu_interval(1.0) is None


def test_a_reading_whose_cpu_is_not_new_counts_for_memory_only():
    w = watch(breaches=2, memory=100, cpu=0.5, cpu_window=1.0)
    for t in (0.0, 1.0):
        assert w.observe(t, 0, t, None) is None  # a full core, CPU read each second
    assert w.cpu_over == 1
    for _ in range(3):                           # memory readings between two CPU readings
        assert w.observe(1.0, 0, 1.0, None) is None
    assert w.cpu_over == 1
    assert w.observe(2.0, 0, 2.0, None).reason == "cpu_limit"


def test_memory_needs_consecutive_readings_over_the_limit():
    w = watch(memory=100 * MiB)
    assert w.observe(1.0, 150 * MiB, 0.0, None) is None
    assert w.memory_over == 1
    assert w.observe(2.0, 50 * MiB, 0.0, None) is None     # freed again: the count starts over
    assert w.memory_over == 0
    assert w.observe(3.0, 150 * MiB, 0.0, None) is None
    breach = w.observe(4.0, 150 * MiB, 0.0, None)
    assert breach.reason == "memory_limit"
    assert str(150 * MiB) in breach.detail and str(100 * MiB) in breach.detail


def test_memory_at_the_limit_is_not_over_it():
    w = watch(breaches=1, memory=100)
    assert w.observe(1.0, 100, 0.0, None) is None
    assert w.observe(2.0, 101, 0.0, None).reason == "memory_limit"


def test_cpu_is_judged_only_over_a_whole_window():
    w = watch(cpu=0.5, cpu_window=2.0)
    # 100 % of a core from the start, but no window yet: no judgement
    assert w.observe(0.0, 0, 0.0, None) is None
    assert w.observe(1.0, 0, 1.0, None) is None
    assert w.cpu_over == 0
    assert w.observe(2.0, 0, 2.0, None) is None     # a window now: 1 core > 0.5, first time
    assert w.cpu_over == 1
    breach = w.observe(3.0, 0, 3.0, None)
    assert breach.reason == "cpu_limit" and "1.00 cores" in breach.detail


def test_a_burst_shorter_than_the_window_is_no_breach():
    w = watch(breaches=1, cpu=0.5, cpu_window=4.0)
    cpu = 0.0
    for t in range(12):
        cpu += 1.0 if t % 4 == 0 else 0.0        # one busy second in four: 0.25 cores
        assert w.observe(float(t), 0, cpu, None) is None


def test_max_cpu_time_counts_cpu_from_when_the_message_was_first_seen():
    w = watch(max_cpu_time=0.5)
    assert w.observe(0.0, 0, 10.0, 7) is None      # message 7 first seen at 10 s of CPU
    assert w.observe(0.2, 0, 10.4, 7) is None
    breach = w.observe(0.4, 0, 10.6, 7)
    assert breach.reason == "hung" and breach.message_id == 7


def test_max_cpu_time_starts_over_with_each_message_and_when_idle():
    w = watch(max_cpu_time=0.5)
    assert w.observe(0.0, 0, 0.0, 1) is None
    assert w.observe(0.2, 0, 0.4, 2) is None       # another message: counted from here
    assert w.observe(0.4, 0, 0.8, 2) is None
    assert w.observe(0.6, 0, 0.8, None) is None    # idle
    assert w.observe(0.8, 0, 5.0, 2) is None       # the same id again is a new start
    assert w.observe(1.0, 0, 5.4, 2) is None


def test_a_sleeping_handler_is_not_hung_by_cpu():
    w = watch(max_cpu_time=0.5)
    for t in range(20):
        assert w.observe(float(t), 0, 1.0, 9) is None


@given(st.lists(st.tuples(st.integers(0, 300), st.floats(0, 2)), min_size=1, max_size=60),
       st.integers(1, 4))
def test_no_breach_without_that_many_readings_in_a_row_over_the_limit(readings, breaches):
    """Whatever the readings, a breach is only ever reported after ``breaches``
    readings in a row over the limit, and always then."""
    w = watch(breaches=breaches, memory=100, cpu=1.0, cpu_window=3.0)
    cpu, over = 0.0, 0
    for t, (rss, cores) in enumerate(readings):
        cpu += cores
        over = over + 1 if rss > 100 else 0
        breach = w.observe(float(t), rss, cpu, None)
        if breach is not None and breach.reason == "memory_limit":
            assert over >= breaches
            return
        if over >= breaches:
            assert breach is not None   # cpu may have been found first; either acts
            return
