"""Tests of alysd.restart: restart intensity (sliding window) and OTP's restart matrix."""

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from alysd.config import ActorSpec, ChildPolicy, Restart
from alysd.exits import LastExit
from alysd.restart import RestartWindow, is_abnormal, wants_restart


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
