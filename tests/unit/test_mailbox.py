"""The mailbox as a data structure: priority order, stability, each policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alysd.config import Backpressure
from alysd.mailbox import Admission, Mailbox

LOW, NORMAL, HIGH, CRITICAL = range(4)


def test_higher_priority_first_fifo_within_a_priority():
    box = Mailbox(100, Backpressure.BLOCK)
    for entry, priority in [("n1", NORMAL), ("l1", LOW), ("c1", CRITICAL), ("n2", NORMAL),
                            ("h1", HIGH), ("c2", CRITICAL), ("l2", LOW)]:
        box.offer(entry, priority)
    assert box.drain() == ["c1", "c2", "h1", "n1", "n2", "l1", "l2"]
    assert len(box) == 0 and not box


@given(st.lists(st.tuples(st.integers(0, 3), st.integers()), max_size=200))
def test_pop_order_is_a_stable_sort_by_descending_priority(items):
    box = Mailbox(10_000, Backpressure.BLOCK)
    for i, (priority, _) in enumerate(items):
        box.offer((i, priority), priority)
    popped = box.drain()
    expected = sorted(((i, p) for i, (p, _) in enumerate(items)), key=lambda e: -e[1])
    assert popped == expected


def test_depth_counts_batches_by_their_size():
    box = Mailbox(100, Backpressure.BLOCK)
    box.offer("batch", NORMAL, size=64)
    box.offer("one", NORMAL)
    assert len(box) == 65
    box.pop()
    assert len(box) == 1


def test_drop_newest_refuses_the_incoming_message():
    box = Mailbox(2, Backpressure.DROP_NEWEST)
    assert box.offer("a", NORMAL) == (Admission.ACCEPTED, None)
    box.offer("b", NORMAL)
    assert box.offer("c", CRITICAL) == (Admission.REFUSED, "c")
    assert box.drain() == ["a", "b"]


def test_fail_refuses_the_incoming_message():
    box = Mailbox(1, Backpressure.FAIL)
    box.offer("a", NORMAL)
    assert box.offer("b", NORMAL) == (Admission.REFUSED, "b")
    assert len(box) == box.capacity


def test_drop_oldest_evicts_the_oldest_of_the_lowest_priority():
    box = Mailbox(3, Backpressure.DROP_OLDEST)
    box.offer("n1", NORMAL)
    box.offer("l1", LOW)
    box.offer("l2", LOW)
    assert box.offer("h1", HIGH) == (Admission.EVICTED, "l1")
    assert box.offer("n2", NORMAL) == (Admission.EVICTED, "l2")
    assert box.drain() == ["h1", "n1", "n2"]


def test_drop_oldest_never_evicts_a_higher_priority_message():
    box = Mailbox(2, Backpressure.DROP_OLDEST)
    box.offer("c1", CRITICAL)
    box.offer("c2", CRITICAL)
    assert box.offer("l1", LOW) == (Admission.REFUSED, "l1")
    assert len(box) == 2


def test_block_accepts_past_capacity_the_loop_stops_reading_instead():
    box = Mailbox(1, Backpressure.BLOCK)
    box.offer("a", NORMAL)
    assert len(box) == box.capacity
    assert box.offer("b", NORMAL) == (Admission.ACCEPTED, None)
    assert len(box) == 2


def test_a_batch_larger_than_capacity_enters_an_empty_mailbox():
    box = Mailbox(10, Backpressure.FAIL)
    assert box.offer("big", NORMAL, size=64)[0] is Admission.ACCEPTED


@pytest.mark.parametrize("policy", list(Backpressure))
@given(ops=st.lists(st.one_of(st.tuples(st.just("offer"), st.integers(0, 3)), st.just(("pop", 0))),
                    max_size=300))
def test_nothing_leaves_without_being_returned(policy, ops):
    """Every offered entry is either popped, returned as refused/evicted, or still inside."""
    box = Mailbox(5, policy)
    offered, returned = [], []
    for n, (op, priority) in enumerate(ops):
        if op == "offer":
            offered.append(n)
            admission, out = box.offer(n, priority)
            if out is not None:
                returned.append(out)
        elif box:
            returned.append(box.pop())
        if policy is not Backpressure.BLOCK:
            assert len(box) <= 5
    returned += box.drain()
    assert sorted(returned) == offered
