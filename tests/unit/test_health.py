"""System health from actor health (the seed's overall_health), pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alysd.health import DEGRADED, HEALTHY, UNHEALTHY, UNKNOWN, aggregate, serving

STATES = st.sampled_from([HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN])


def test_all_healthy_is_healthy():
    assert aggregate([HEALTHY, HEALTHY]) == HEALTHY
    assert aggregate([]) == HEALTHY


def test_any_unhealthy_is_unhealthy():
    assert aggregate([HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN]) == UNHEALTHY


def test_degraded_or_unknown_without_unhealthy_is_degraded():
    assert aggregate([HEALTHY, DEGRADED]) == DEGRADED
    assert aggregate([HEALTHY, UNKNOWN]) == DEGRADED   # e.g. an actor restarting


def test_the_node_serves_unless_unhealthy():
    assert serving(HEALTHY) and serving(DEGRADED) and not serving(UNHEALTHY)


@given(st.lists(STATES))
def test_order_does_not_matter_and_the_worst_wins(states):
    result = aggregate(states)
    assert result == aggregate(reversed(states))
    assert (result == UNHEALTHY) == (UNHEALTHY in states)
    assert (result == HEALTHY) == all(s == HEALTHY for s in states)
