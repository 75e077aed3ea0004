"""The host link's retransmission timer (RFC 6298's estimator), without processes."""

import pytest

from alysd.link_transport import INITIAL_RTO, MAX_RTO, MIN_RTO, RetransmitTimer


def test_before_any_sample_it_waits_the_initial_timeout():
    assert RetransmitTimer().rto == INITIAL_RTO


def test_a_steady_round_trip_settles_near_it_but_never_below_the_floor():
    timer = RetransmitTimer()
    for _ in range(50):
        timer.sample(0.002)
    assert timer.rto == MIN_RTO
    for _ in range(50):
        timer.sample(0.5)
    assert timer.rto == pytest.approx(0.5, rel=0.2)


def test_a_jittery_peer_gets_more_room_than_a_steady_one():
    steady, jittery = RetransmitTimer(), RetransmitTimer()
    for i in range(40):
        steady.sample(0.4)
        jittery.sample(0.1 if i % 2 else 0.7)
    assert jittery.rto > steady.rto


def test_the_timeout_is_capped():
    timer = RetransmitTimer()
    timer.sample(60.0)
    assert timer.rto == MAX_RTO
