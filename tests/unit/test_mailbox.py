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


# --- resize (a reload) ----------------------------------------------------------------------

def test_growing_takes_more_from_the_next_offer():
    box = Mailbox(1, Backpressure.FAIL)
    box.offer("a", NORMAL)
    assert box.offer("b", NORMAL)[0] is Admission.REFUSED
    box.resize(3)
    assert box.offer("b", NORMAL) == (Admission.ACCEPTED, None)
    assert box.offer("c", NORMAL) == (Admission.ACCEPTED, None)
    assert box.offer("d", NORMAL)[0] is Admission.REFUSED
    assert box.drain() == ["a", "b", "c"]


@pytest.mark.parametrize("policy", [Backpressure.FAIL, Backpressure.DROP_NEWEST])
def test_shrinking_below_the_depth_keeps_everything_and_refuses_until_under(policy):
    box = Mailbox(5, policy)
    for entry in "abcd":
        box.offer(entry, NORMAL)
    box.resize(2)
    assert len(box) == 4                       # nothing dropped by the resize
    assert box.offer("e", CRITICAL) == (Admission.REFUSED, "e")
    assert box.pop() == "a" and box.pop() == "b" and box.pop() == "c"
    assert box.offer("f", NORMAL) == (Admission.ACCEPTED, None)     # depth 1 -> 2
    assert box.offer("g", NORMAL) == (Admission.REFUSED, "g")
    assert box.drain() == ["d", "f"]


def test_shrinking_under_drop_oldest_evicts_one_for_each_one_taken():
    box = Mailbox(5, Backpressure.DROP_OLDEST)
    for entry in "abcd":
        box.offer(entry, NORMAL)
    box.resize(2)
    assert box.offer("e", NORMAL) == (Admission.EVICTED, "a")
    assert len(box) == 4                       # does not grow, shrinks as it is handled
    assert box.drain() == ["b", "c", "d", "e"]


def test_shrinking_under_block_accepts_the_loop_reads_no_more():
    box = Mailbox(5, Backpressure.BLOCK)
    for entry in "abcd":
        box.offer(entry, NORMAL)
    box.resize(2)
    assert box.capacity - len(box) < 0         # what the loop reads as "no room"
    assert box.offer("e", NORMAL) == (Admission.ACCEPTED, None)
    assert box.drain() == ["a", "b", "c", "d", "e"]


def test_resize_refuses_a_capacity_below_one():
    box = Mailbox(5, Backpressure.FAIL)
    with pytest.raises(ValueError, match="at least 1"):
        box.resize(0)
    assert box.capacity == 5


@pytest.mark.parametrize("policy", list(Backpressure))
@given(ops=st.lists(st.one_of(st.tuples(st.just("offer"), st.integers(0, 3)), st.just(("pop", 0)),
                              st.tuples(st.just("resize"), st.integers(1, 8))),
                    max_size=300))
def test_resizing_loses_nothing_and_keeps_the_order(policy, ops):
    """With resizes among the offers and pops: every entry is popped, returned or
    still inside; pops stay in priority order, FIFO within a priority; a resize
    itself never changes the depth."""
    box = Mailbox(5, policy)
    offered, returned = [], []
    for n, (op, arg) in enumerate(ops):
        if op == "offer":
            offered.append(n)
            _, out = box.offer((arg, n), arg)
            if out is not None:
                returned.append(out)
        elif op == "resize":
            depth = len(box)
            box.resize(arg)
            assert len(box) == depth
        elif box:
            returned.append(box.pop())
    rest = box.drain()
    assert rest == sorted(rest, key=lambda e: (-e[0], e[1]))
    assert sorted(n for _, n in returned + rest) == offered
