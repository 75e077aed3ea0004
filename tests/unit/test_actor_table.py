"""The actor table's slots for actors added at run time (a reload): handed out by
the root, adopted by every process, never reused, shared across fork."""

from __future__ import annotations

import os

import msgspec
import pytest

from alysd.actor_table import RUNNING, ActorTable, TableFull
from alysd.errors import AlysdError


def test_configured_actors_take_the_first_slots_and_spares_follow():
    table = ActorTable(["a", "b"], spare=3)
    assert table.capacity == 5
    assert table.index == {"a": 0, "b": 1}
    assert [table.add("c"), table.add("d"), table.add("e")] == [2, 3, 4]
    assert table.index["e"] == 4 and table.names[4] == "e"


def test_without_spares_nothing_can_be_added():
    table = ActorTable(["a"])
    with pytest.raises(TableFull) as caught:
        table.add("b")
    assert isinstance(caught.value, AlysdError)
    assert "'b'" in str(caught.value) and "all 1 slots" in str(caught.value)
    assert "b" not in table.index


def test_a_full_table_says_its_capacity():
    table = ActorTable(["a", "b"], spare=1)
    table.add("c")
    with pytest.raises(TableFull, match="all 3 slots") as caught:
        table.add("d")
    assert caught.value.capacity == 3 and caught.value.name == "d"


def test_slots_are_never_reused_not_even_for_the_same_name():
    table = ActorTable(["a"], spare=2)
    first = table.add("b")
    again = table.add("b")             # removed, then added by a later reload
    assert again != first
    assert table.index["b"] == again
    assert table.names[first] == "b"   # a stale reader of the old slot still sees who it was


def test_an_added_slot_reads_as_never_started():
    table = ActorTable(["a"], spare=1)
    table.set_running("a", 7)
    slot = table.add("b")
    assert table.look(slot) == (0, 0, 0)
    assert table.crashes(slot) == (0, 0)
    assert table.activity("b") is None


def test_adopt_is_idempotent_and_keeps_later_adds_off_adopted_slots():
    root = ActorTable(["a"], spare=4)
    slots = {"b": root.add("b"), "c": root.add("c")}
    other = ActorTable(["a"], spare=4)        # another process's view of the same layout
    other.adopt(slots)
    other.adopt(slots)
    assert other.index == root.index
    assert other.names == root.names
    assert other.add("d") == 3


def test_adopt_refuses_a_slot_outside_the_table():
    table = ActorTable(["a"], spare=1)
    with pytest.raises(ValueError, match="slot 2 of actor 'x'.*capacity 2"):
        table.adopt({"x": 2})
    assert "x" not in table.index


def test_an_added_sender_is_named_in_activity():
    table = ActorTable(["a"], spare=1)
    table.add("b")
    table.handling(table.index["a"], 0, table.sender_index("b"), 42)
    doing = table.activity("a")
    assert doing.sender == "b" and doing.message_id == 42


def _read_exactly(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError("the other process closed its pipe")
        data += chunk
    return data


def test_a_process_forked_before_a_slot_was_added_sees_it_once_adopted():
    """The slots are memory shared across fork: a child forked before the root
    added an actor adopts its slot (told by message, as a Topology does) and
    then reads what the root writes there, and the root reads what it writes."""
    table = ActorTable(["a"], spare=2)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            slots = msgspec.msgpack.decode(_read_exactly(to_child_r, int.from_bytes(
                _read_exactly(to_child_r, 4), "big")), type=dict[str, int])
            table.adopt(slots)
            seen = table.look(table.index["new"])
            table.set_depth(table.index["new"], 17)
            os.write(to_parent_w, msgspec.msgpack.encode(list(seen)))
            code = 0
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        slot = table.add("new")
        table.set_running("new", 3)
        data = msgspec.msgpack.encode({"new": slot})
        os.write(to_child_w, len(data).to_bytes(4, "big") + data)
        seen = msgspec.msgpack.decode(os.read(to_parent_r, 64))
    finally:
        os.close(to_child_w)
        _, status = os.waitpid(pid, 0)
        os.close(to_parent_r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert seen == [3, RUNNING, 0]
    assert table.depth(slot) == 17
