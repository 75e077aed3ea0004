"""Tests of alysd.restart: restart intensity (sliding window), OTP's restart matrix,
group plans, exponential backoff and the circuit breaker."""

import itertools
import random

import pytest
from hypothesis import given, settings, strategies as st

from alysd.config import ActorSpec, BackoffSpec, BreakerSpec, ChildPolicy, Restart, Strategy
from alysd.exits import LastExit
from alysd.restart import (JITTER, Action, BreakerState, ChildTrack, RestartWindow, Verdict,
                           is_abnormal, plan_group, wants_restart)


# --- RestartWindow -------------------------------------------------------------

def test_allows_max_restarts_then_refuses_one_more():
    w = RestartWindow(3, 5.0)
    assert [w.record(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert w.record(3.0) is False


def test_zero_intensity_refuses_the_first_restart():
    assert RestartWindow(0, 5.0).record(100.0) is False


def test_old_restarts_expire():
    w = RestartWindow(2, 10.0)
    assert w.record(0.0) and w.record(1.0)
    # At 11.5 both earlier stamps are more than 10 s old: the window is fresh again.
    assert w.record(11.5) is True
    assert len(w) == 1
    assert w.record(12.0) is True
    assert w.record(13.0) is False


def test_refusal_is_not_permanent_once_the_window_slides():
    w = RestartWindow(1, 1.0)
    assert w.record(0.0) is True
    assert w.record(0.5) is False
    assert w.record(5.0) is True


def test_boundary_stamp_exactly_period_old_still_counts():
    # OTP's add_restart keeps a restart R while R >= Now - Period.
    w = RestartWindow(1, 10.0)
    assert w.record(0.0) is True
    assert w.record(10.0) is False
    w2 = RestartWindow(1, 10.0)
    assert w2.record(0.0) is True
    assert w2.record(10.25) is True


def test_len_counts_only_stamps_in_the_window():
    w = RestartWindow(100, 2.0)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        w.record(t)
    assert len(w) == 5  # 1.0 .. 3.0


def _model(max_restarts, period, times):
    stamps, out = [], []
    for now in times:
        stamps.append(now)
        in_window = [s for s in stamps if s >= now - period]
        out.append(len(in_window) <= max_restarts)
    return out


@settings(max_examples=150, deadline=None, database=None)
@given(
    max_restarts=st.integers(min_value=0, max_value=6),
    period=st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 7.25]),
    steps=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 7.25, 10.0]),
                   min_size=1, max_size=40),
    start=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
)
def test_window_matches_a_trivial_model(max_restarts, period, steps, start):
    times = list(itertools.accumulate(steps, initial=start))[1:]
    w = RestartWindow(max_restarts, period)
    got = [w.record(t) for t in times]
    assert got == _model(max_restarts, period, times)


# --- wants_restart ---------------------------------------------------------------

def spec(restart: Restart, strategy: ChildPolicy = ChildPolicy.ONE_FOR_ONE) -> ActorSpec:
    return ActorSpec(name="worker", supervisor="root", class_path="m:C",
                     restart=restart, strategy=strategy)


CLEAN = LastExit(reason="clean", code=0)
ABNORMAL = [
    LastExit(reason="exit_code", code=1),
    LastExit(reason="exit_code", code=2),
    LastExit(reason="signal", signal="SIGKILL"),
    LastExit(reason="signal", signal="SIGTERM"),
    LastExit(reason="start_failed", code=3),
    LastExit(reason="start_timeout", signal="SIGKILL"),
]
CONFIG = LastExit(reason="config", code=78)
RESTARTING_POLICIES = [ChildPolicy.ONE_FOR_ONE, ChildPolicy.EXPONENTIAL_BACKOFF,
                       ChildPolicy.CIRCUIT_BREAKER]


def test_is_abnormal():
    assert not is_abnormal(CLEAN)
    assert all(is_abnormal(e) for e in ABNORMAL)
    assert is_abnormal(CONFIG)


@pytest.mark.parametrize("policy", RESTARTING_POLICIES, ids=lambda p: p.value)
def test_permanent_restarts_after_any_exit(policy):
    s = spec(Restart.PERMANENT, policy)
    assert wants_restart(s, CLEAN) is True
    for e in ABNORMAL:
        assert wants_restart(s, e) is True, e


@pytest.mark.parametrize("policy", RESTARTING_POLICIES, ids=lambda p: p.value)
def test_transient_restarts_only_after_abnormal_exit(policy):
    s = spec(Restart.TRANSIENT, policy)
    assert wants_restart(s, CLEAN) is False
    for e in ABNORMAL:
        assert wants_restart(s, e) is True, e


@pytest.mark.parametrize("policy", RESTARTING_POLICIES, ids=lambda p: p.value)
def test_temporary_never_restarts(policy):
    s = spec(Restart.TEMPORARY, policy)
    for e in [CLEAN, *ABNORMAL]:
        assert wants_restart(s, e) is False, e


@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
def test_never_policy_never_restarts(restart):
    s = spec(restart, ChildPolicy.NEVER)
    for e in [CLEAN, *ABNORMAL]:
        assert wants_restart(s, e) is False, e


@pytest.mark.parametrize("restart, policy", list(itertools.product(Restart, ChildPolicy)),
                         ids=lambda v: v.value)
def test_config_exit_is_never_restarted(restart, policy):
    assert wants_restart(spec(restart, policy), CONFIG) is False


# --- RestartWindow.clear ----------------------------------------------------------

def test_clear_forgets_every_restart_so_a_full_window_accepts_again():
    w = RestartWindow(2, 60.0)
    assert w.record(1.0) and w.record(2.0)
    assert w.record(3.0) is False
    w.clear()
    assert len(w) == 0
    # A restarted supervisor starts afresh: max_restarts more within the same period.
    assert [w.record(t) for t in (3.5, 4.0, 4.5)] == [True, True, False]


def test_clear_on_an_empty_window_is_harmless():
    w = RestartWindow(1, 5.0)
    w.clear()
    assert len(w) == 0 and w.record(0.0) is True


# --- plan_group ---------------------------------------------------------------------

SIBLINGS = ["a", "b", "c"]


@pytest.mark.parametrize("failed", SIBLINGS)
def test_one_for_one_restarts_only_the_failed_child(failed):
    assert plan_group(Strategy.ONE_FOR_ONE, SIBLINGS, failed) == ([], [failed])


@pytest.mark.parametrize("failed, stop", [("a", ["c", "b"]), ("b", ["c", "a"]), ("c", ["b", "a"])])
def test_one_for_all_stops_the_others_in_reverse_and_starts_everyone_in_order(failed, stop):
    assert plan_group(Strategy.ONE_FOR_ALL, SIBLINGS, failed) == (stop, ["a", "b", "c"])


@pytest.mark.parametrize("failed, stop, start", [
    ("a", ["c", "b"], ["a", "b", "c"]),   # first: like one_for_all
    ("b", ["c"], ["b", "c"]),             # middle: a (started before b) is left alone
    ("c", [], ["c"]),                     # last: like one_for_one
])
def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(failed, stop, start):
    assert plan_group(Strategy.REST_FOR_ONE, SIBLINGS, failed) == (stop, start)


@pytest.mark.parametrize("strategy", list(Strategy), ids=lambda s: s.value)
def test_a_lone_child_is_planned_alone_and_the_sibling_list_is_not_mutated(strategy):
    assert plan_group(strategy, ["only"], "only") == ([], ["only"])
    siblings = list(SIBLINGS)
    plan_group(strategy, siblings, "b")
    assert siblings == SIBLINGS


@settings(max_examples=200, deadline=None, database=None)
@given(strategy=st.sampled_from(list(Strategy)),
       siblings=st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=10,
                         unique=True),
       data=st.data())
def test_plan_group_shape(strategy, siblings, data):
    failed = data.draw(st.sampled_from(siblings), label="failed")
    to_stop, to_start = plan_group(strategy, siblings, failed)
    at = siblings.index(failed)
    if strategy is Strategy.ONE_FOR_ONE:
        assert to_start == [failed]
    elif strategy is Strategy.ONE_FOR_ALL:
        assert to_start == siblings
    else:
        assert to_start == siblings[at:]  # a contiguous suffix starting at the failed child
        assert not set(to_start) & set(siblings[:at])
    assert to_start[0] == failed or strategy is Strategy.ONE_FOR_ALL
    assert failed in to_start
    # Stops run in reverse start order and never include the (already dead) failed child.
    assert to_stop == [name for name in reversed(to_start) if name != failed]


# --- ChildTrack: exponential_backoff -------------------------------------------------

CRASH = LastExit(reason="exit_code", code=1)


class _FixedJitter(random.Random):
    """A Random whose ``uniform`` always returns one end of the range."""

    def __init__(self, top: bool):
        super().__init__(0)
        self.top = top

    def uniform(self, a, b):
        return b if self.top else a


def backoff_spec(restart: Restart = Restart.PERMANENT, **backoff) -> ActorSpec:
    return ActorSpec(name="worker", supervisor="root", class_path="m:C", restart=restart,
                     strategy=ChildPolicy.EXPONENTIAL_BACKOFF, backoff=BackoffSpec(**backoff))


def _delays(track: ChildTrack, n: int, start: float = 0.0) -> list[float]:
    out = []
    for i in range(n):
        v = track.on_exit(CRASH, start + i)
        assert v.action is Action.RESTART, v
        out.append(v.delay)
    return out


def _within_jitter(delay: float, base: float) -> bool:
    return base <= delay <= base * (1 + JITTER) * (1 + 1e-12)


def test_backoff_delay_doubles_per_consecutive_failure_up_to_max_delay():
    spec = backoff_spec(initial_delay=0.5, max_delay=5.0, multiplier=2.0, max_retries=20)
    bases = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert _delays(ChildTrack(spec, _FixedJitter(top=False)), 7) == bases
    # The jitter stretches a delay by at most JITTER (20 %), never shortens it, and
    # applies to the capped delay too.
    assert JITTER == pytest.approx(0.2)
    assert _delays(ChildTrack(spec, _FixedJitter(top=True)), 7) == pytest.approx(
        [b * 1.2 for b in bases])
    for d, b in zip(_delays(ChildTrack(spec, random.Random(7)), 7), bases):
        assert _within_jitter(d, b), (d, b)


def test_backoff_with_multiplier_one_is_a_constant_delay():
    spec = backoff_spec(initial_delay=3.0, max_delay=10.0, multiplier=1.0, max_retries=5)
    assert _delays(ChildTrack(spec, _FixedJitter(top=False)), 5) == [3.0] * 5


def test_backoff_resets_after_a_healthy_stretch_of_reset_after():
    spec = backoff_spec(initial_delay=1.0, max_delay=100.0, multiplier=2.0, max_retries=50,
                        reset_after=4.0)
    track = ChildTrack(spec, _FixedJitter(top=False))
    assert _delays(track, 3) == [1.0, 2.0, 4.0]
    track.on_ready(100.0)
    track.on_healthy(103.5)                     # healthy, but not up for reset_after yet
    assert track.on_exit(CRASH, 104.0).delay == 8.0
    track.on_ready(200.0)
    track.on_healthy(202.0)
    track.on_healthy(204.0)                     # up for exactly reset_after: n back to 0
    assert track.attempts == 0
    assert _delays(track, 2, start=205.0) == [1.0, 2.0]


def test_backoff_reset_needs_the_current_incarnation_to_have_been_up():
    spec = backoff_spec(initial_delay=1.0, max_delay=100.0, multiplier=2.0, reset_after=4.0)
    track = ChildTrack(spec, _FixedJitter(top=False))
    track.on_healthy(50.0)                      # never became ready: nothing to measure
    track.on_ready(0.0)
    assert _delays(track, 2, start=1.0) == [1.0, 2.0]
    track.on_healthy(60.0)                      # the exit ended the stretch begun at 0.0
    assert track.on_exit(CRASH, 61.0).delay == 4.0


def test_reset_after_defaults_to_ten_initial_delays():
    spec = backoff_spec(initial_delay=0.5, max_delay=100.0)
    assert spec.backoff.reset_after == 5.0
    track = ChildTrack(spec, _FixedJitter(top=False))
    _delays(track, 3)
    track.on_ready(10.0)
    track.on_healthy(14.5)
    assert track.on_exit(CRASH, 15.0).delay == 4.0
    track.on_ready(20.0)
    track.on_healthy(25.0)
    assert track.on_exit(CRASH, 26.0).delay == 0.5


def test_backoff_gives_up_after_max_retries_restarts_without_a_healthy_stretch():
    spec = backoff_spec(initial_delay=0.1, max_delay=1.0, max_retries=3)
    track = ChildTrack(spec, random.Random(1))
    _delays(track, 3)
    v = track.on_exit(CRASH, 10.0)
    assert v.action is Action.FAIL
    assert "gave up after 3 restarts" in v.reason
    assert track.on_exit(CRASH, 11.0).action is Action.FAIL   # still given up
    track.reset()                                             # alysctl start / reset
    v = track.on_exit(CRASH, 12.0)
    assert v.action is Action.RESTART and _within_jitter(v.delay, 0.1)


def test_backoff_with_zero_max_retries_fails_on_the_first_exit():
    v = ChildTrack(backoff_spec(max_retries=0), random.Random(1)).on_exit(CRASH, 0.0)
    assert v.action is Action.FAIL and "gave up after 0 restarts" in v.reason


def test_a_healthy_stretch_gives_the_retries_back():
    spec = backoff_spec(initial_delay=1.0, max_delay=8.0, max_retries=2, reset_after=1.0)
    track = ChildTrack(spec, random.Random(3))
    for cycle in range(5):
        _delays(track, 2, start=cycle * 100.0)
        track.on_ready(cycle * 100.0 + 10)
        track.on_healthy(cycle * 100.0 + 11)
    assert track.on_exit(CRASH, 1000.0).action is Action.RESTART


def test_jitter_differs_between_tracks_so_a_group_does_not_thunder():
    spec = backoff_spec(initial_delay=1.0, max_delay=30.0, max_retries=10)
    a = _delays(ChildTrack(spec, random.Random(1)), 5)
    b = _delays(ChildTrack(spec, random.Random(2)), 5)
    assert a != b
    assert all(x != y for x, y in zip(a, b))
    # ... and a seed reproduces its delays.
    assert _delays(ChildTrack(spec, random.Random(1)), 5) == a


@settings(max_examples=100, deadline=None, database=None)
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=4, unique=True),
       initial=st.sampled_from([0.01, 0.1, 0.25, 1.0, 3.0]),
       multiplier=st.sampled_from([1.0, 1.5, 2.0, 3.0, 10.0]),
       cap=st.sampled_from([1.0, 2.0, 10.0, 100.0]),
       failures=st.integers(1, 12))
def test_jittered_delays_stay_within_bounds_and_never_shrink_below_the_last_step(
        seeds, initial, multiplier, cap, failures):
    spec = backoff_spec(initial_delay=initial, max_delay=initial * cap, multiplier=multiplier,
                        max_retries=failures)
    runs = [_delays(ChildTrack(spec, random.Random(seed)), failures) for seed in seeds]
    previous_base = 0.0
    for n in range(failures):
        base = min(initial * cap, initial * multiplier ** n)
        assert base >= previous_base
        previous_base = base
        for run in runs:
            assert _within_jitter(run[n], base), (n, run[n], base)
    # Tracks seeded differently do not restart in lockstep.
    assert len({tuple(run) for run in runs}) == len(runs)


def test_a_long_crash_loop_keeps_restarting_at_max_delay():
    spec = backoff_spec(initial_delay=0.1, max_delay=30.0, multiplier=2.0, max_retries=100_000)
    track = ChildTrack(spec, random.Random(5))
    for i in range(1100):
        v = track.on_exit(CRASH, float(i))
        assert v.action is Action.RESTART
        assert v.delay <= 30.0 * (1 + JITTER)


# --- ChildTrack: circuit_breaker ----------------------------------------------------

def breaker_spec(failure_threshold=3, recovery_timeout=10.0, success_threshold=2,
                 restart: Restart = Restart.PERMANENT) -> ActorSpec:
    return ActorSpec(name="worker", supervisor="root", class_path="m:C", restart=restart,
                     strategy=ChildPolicy.CIRCUIT_BREAKER,
                     breaker=BreakerSpec(failure_threshold=failure_threshold,
                                         recovery_timeout=recovery_timeout,
                                         success_threshold=success_threshold))


def _open(track: ChildTrack, at: float) -> Verdict:
    """Fail ``track`` until its breaker opens; the opening failure happens at ``at``."""
    while True:
        v = track.on_exit(CRASH, at)
        if v.action is not Action.RESTART:
            return v


def test_breaker_restarts_until_the_threshold_then_opens_with_a_visible_reason():
    track = ChildTrack(breaker_spec(), random.Random(0))
    assert track.breaker is BreakerState.CLOSED and track.breaker_deadline() is None
    for t in (1.0, 2.0):
        v = track.on_exit(CRASH, t)
        assert v == Verdict(Action.RESTART, delay=0.0)
        assert track.breaker is BreakerState.CLOSED
    v = track.on_exit(CRASH, 3.0)
    assert v.action is Action.STAY_STOPPED            # stopped, not failed: it comes back
    assert "circuit open" in v.reason and "3 failures" in v.reason
    assert "half-open in 10.0s" in v.reason
    assert track.breaker is BreakerState.OPEN
    assert track.breaker_deadline() == 13.0
    assert "half-open in 4.0s" in track.open_reason(9.0)


def test_breaker_goes_half_open_exactly_at_the_recovery_timeout():
    track = ChildTrack(breaker_spec(), random.Random(0))
    _open(track, 3.0)
    assert track.breaker_due(3.0) is False
    assert track.breaker_due(12.999) is False
    assert track.breaker is BreakerState.OPEN
    assert track.breaker_due(13.0) is True
    assert track.breaker is BreakerState.HALF_OPEN
    assert track.breaker_deadline() is None
    assert track.breaker_due(100.0) is False          # one trial, not one per call


def test_breaker_due_late_still_goes_half_open():
    track = ChildTrack(breaker_spec(), random.Random(0))
    _open(track, 0.0)
    assert track.breaker_due(500.0) is True and track.breaker is BreakerState.HALF_OPEN


def test_breaker_due_is_false_while_closed():
    track = ChildTrack(breaker_spec(), random.Random(0))
    track.on_exit(CRASH, 0.0)
    assert track.breaker_due(1e9) is False and track.breaker is BreakerState.CLOSED


def test_a_failure_while_half_open_reopens_at_once():
    track = ChildTrack(breaker_spec(failure_threshold=3), random.Random(0))
    _open(track, 3.0)
    assert track.breaker_due(13.0)
    track.on_ready(13.5)
    v = track.on_exit(CRASH, 14.0)                    # one failure, not failure_threshold
    assert v.action is Action.STAY_STOPPED and "circuit open" in v.reason
    assert track.breaker is BreakerState.OPEN
    assert track.breaker_deadline() == 24.0           # a fresh recovery_timeout
    assert track.breaker_due(23.0) is False
    assert track.breaker_due(24.0) is True


def test_success_threshold_healthy_heartbeats_close_the_breaker():
    track = ChildTrack(breaker_spec(failure_threshold=3, success_threshold=2), random.Random(0))
    _open(track, 3.0)
    assert track.breaker_due(13.0)
    track.on_ready(13.5)
    track.on_healthy(14.0)
    assert track.breaker is BreakerState.HALF_OPEN
    track.on_healthy(15.0)
    assert track.breaker is BreakerState.CLOSED
    assert (track.failures, track.successes) == (0, 0)
    # Closed again with its count reset: failure_threshold failures to open it again.
    assert [track.on_exit(CRASH, t).action for t in (20.0, 21.0, 22.0)] == [
        Action.RESTART, Action.RESTART, Action.STAY_STOPPED]


def test_half_open_successes_do_not_carry_over_a_reopening():
    track = ChildTrack(breaker_spec(success_threshold=2), random.Random(0))
    _open(track, 0.0)
    assert track.breaker_due(10.0)
    track.on_ready(10.0)
    track.on_healthy(11.0)                            # 1 of 2
    track.on_exit(CRASH, 12.0)                        # reopens
    assert track.breaker_due(22.0)
    track.on_ready(22.0)
    track.on_healthy(23.0)                            # 1 of 2 again, not 2 of 2
    assert track.breaker is BreakerState.HALF_OPEN
    track.on_healthy(24.0)
    assert track.breaker is BreakerState.CLOSED


def test_a_healthy_heartbeat_while_closed_resets_the_consecutive_failures():
    track = ChildTrack(breaker_spec(failure_threshold=3), random.Random(0))
    for cycle in range(4):
        t = cycle * 10.0
        assert track.on_exit(CRASH, t).action is Action.RESTART
        assert track.on_exit(CRASH, t + 1).action is Action.RESTART
        track.on_ready(t + 2)
        track.on_healthy(t + 3)
    assert track.breaker is BreakerState.CLOSED
    track.on_exit(CRASH, 100.0)
    track.on_exit(CRASH, 101.0)
    assert track.on_exit(CRASH, 102.0).action is Action.STAY_STOPPED


def test_failure_threshold_one_opens_on_the_first_failure():
    track = ChildTrack(breaker_spec(failure_threshold=1, recovery_timeout=2.5), random.Random(0))
    v = track.on_exit(CRASH, 1.0)
    assert v.action is Action.STAY_STOPPED and "circuit open" in v.reason
    assert track.breaker_deadline() == 3.5


def test_reset_closes_an_open_breaker():
    track = ChildTrack(breaker_spec(), random.Random(0))
    _open(track, 3.0)
    track.reset()
    assert track.breaker is BreakerState.CLOSED
    assert track.breaker_deadline() is None
    assert track.breaker_due(1e9) is False
    assert [track.on_exit(CRASH, t).action for t in (4.0, 5.0, 6.0)] == [
        Action.RESTART, Action.RESTART, Action.STAY_STOPPED]


def test_reset_closes_a_half_open_breaker():
    track = ChildTrack(breaker_spec(), random.Random(0))
    _open(track, 0.0)
    track.breaker_due(10.0)
    track.reset()
    assert track.breaker is BreakerState.CLOSED
    assert track.on_exit(CRASH, 11.0).action is Action.RESTART


@pytest.mark.parametrize("restart", [Restart.TRANSIENT, Restart.TEMPORARY], ids=lambda r: r.value)
def test_exits_that_are_not_restarted_do_not_count_as_breaker_failures(restart):
    track = ChildTrack(breaker_spec(failure_threshold=2, restart=restart), random.Random(0))
    for t in range(5):
        assert track.on_exit(CLEAN, float(t)).action is Action.STAY_STOPPED
    assert track.breaker is BreakerState.CLOSED and track.failures == 0


# --- on_exit: restart type x policy x exit (the OTP matrix) ------------------------

MATRIX_POLICIES = [ChildPolicy.ONE_FOR_ONE, ChildPolicy.EXPONENTIAL_BACKOFF,
                   ChildPolicy.CIRCUIT_BREAKER, ChildPolicy.NEVER]
EXITS = {"clean": CLEAN, "crash": ABNORMAL[0], "exit2": ABNORMAL[1], "sigkill": ABNORMAL[2],
         "sigterm": ABNORMAL[3], "start_failed": ABNORMAL[4], "start_timeout": ABNORMAL[5],
         "config": CONFIG}


def _expected(restart: Restart, policy: ChildPolicy, exit: LastExit) -> tuple[Action, str | None]:
    if exit.reason == "config":
        return Action.FAIL, "EX_CONFIG"
    if policy is ChildPolicy.NEVER:
        return Action.STAY_STOPPED, "policy never"
    if restart is Restart.TEMPORARY:
        return Action.STAY_STOPPED, "restart = temporary"
    if restart is Restart.TRANSIENT and exit.reason == "clean":
        return Action.STAY_STOPPED, "restart = transient"
    return Action.RESTART, None


@pytest.mark.parametrize("exit_name", list(EXITS))
@pytest.mark.parametrize("policy", MATRIX_POLICIES, ids=lambda p: p.value)
@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
def test_on_exit_matrix(restart, policy, exit_name):
    exit = EXITS[exit_name]
    spec = ActorSpec(name="worker", supervisor="root", class_path="m:C", restart=restart,
                     strategy=policy)
    track = ChildTrack(spec, random.Random(0))
    action, why = _expected(restart, policy, exit)
    for attempt in range(3):          # the same answer on repeated exits (below any limit)
        v = track.on_exit(exit, float(attempt))
        assert v.action is action, (attempt, v)
        if why is not None:
            assert why in v.reason
        if action is Action.RESTART:
            if policy is ChildPolicy.EXPONENTIAL_BACKOFF:
                base = spec.backoff.initial_delay * spec.backoff.multiplier ** attempt
                assert _within_jitter(v.delay, base)
            else:
                assert v.delay == 0.0
        else:
            assert v.delay == 0.0
    if action is not Action.RESTART:
        # An exit that is not restarted leaves no trace in the pacing state.
        assert (track.attempts, track.failures, track.breaker) == (0, 0, BreakerState.CLOSED)


def test_config_exit_fails_even_an_open_or_given_up_child():
    track = ChildTrack(breaker_spec(failure_threshold=1), random.Random(0))
    _open(track, 0.0)
    assert track.on_exit(CONFIG, 1.0).action is Action.FAIL
    track = ChildTrack(backoff_spec(max_retries=0), random.Random(0))
    assert track.on_exit(CONFIG, 0.0).action is Action.FAIL
