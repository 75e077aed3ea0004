"""Tests of alysd.dead_letters: the LMDB store (real files, several processes), the
presentation of a letter, and the rate-limited log."""

import logging
import multiprocessing
import os
import signal
import stat
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alysd import zmq_bus
from alysd.dead_letters import (
    DeadLetter,
    DeadLetterQueue,
    DeadLetterStats,
    DeadLetterStoreError,
    RateLimitedLog,
    Reason,
    describe,
)

FRAME = zmq_bus.encode_envelope(zmq_bus.Kind.TELL, 7, {"a": 1}, sender="x", target="y")


def letter(n: int = 7, reason: str = Reason.MAILBOX_FULL, **over) -> DeadLetter:
    fields = {"reason": reason, "sender": "x", "target": "y", "message_id": n, "frame": FRAME,
              "detail": f"letter {n}"}
    fields.update(over)
    return DeadLetter(**fields)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "dead-letters")


@pytest.fixture
def queue(path):
    with DeadLetterQueue(path) as q:
        yield q


# --- put, get, list ------------------------------------------------------------------------

def test_put_then_get_returns_the_letter_with_its_id(queue):
    original = letter(detail="capacity 10000 reached")
    letter_id = queue.put(original)
    got = queue.get(letter_id)
    assert got == msgspec.structs.replace(original, id=letter_id, reason="mailbox_full",
                                          time=got.time)
    assert type(got.reason) is str
    assert got.frame == FRAME
    assert original.id == 0 and original.time == 0.0      # the caller's letter is untouched


def test_put_fills_in_the_time_only_when_missing(queue):
    before = time.time()
    filled = queue.get(queue.put(letter()))
    assert before <= filled.time <= time.time()
    assert queue.get(queue.put(letter(time=1234.5))).time == 1234.5


@pytest.mark.parametrize("missing", [0, -1, 99, 1 << 64, -(1 << 70)])
def test_get_and_remove_of_an_absent_id(queue, missing):
    queue.put(letter())
    assert queue.get(missing) is None
    assert queue.remove(missing) is False


def test_list_is_newest_first_and_honours_the_limit(queue):
    ids = [queue.put(letter(n)) for n in range(5)]
    assert [x.id for x in queue.list()] == ids[::-1]
    assert [x.message_id for x in queue.list()] == [4, 3, 2, 1, 0]
    assert [x.id for x in queue.list(2)] == ids[:-3:-1]
    assert [x.id for x in queue.list(50)] == ids[::-1]
    assert queue.list(0) == [] and queue.list(-3) == []


def test_an_empty_queue(queue):
    assert queue.list() == []
    assert queue.stats() == DeadLetterStats(count=0, evicted=0, by_reason={})
    assert queue.purge() == 0


def test_put_many_writes_all_in_order(queue):
    ids = queue.put_many([letter(n) for n in range(4)])
    assert ids == list(range(ids[0], ids[0] + 4))
    assert [queue.get(i).message_id for i in ids] == [0, 1, 2, 3]
    assert queue.put_many([]) == []


def test_a_letter_that_is_not_a_dead_letter_is_refused_and_nothing_is_stored(queue):
    with pytest.raises(TypeError, match="not a valid DeadLetter"):
        queue.put_many([letter(1), letter(2, sender=None)])
    with pytest.raises(TypeError):
        queue.put(letter(frame=object()))
    assert queue.stats().count == 0


# --- ids --------------------------------------------------------------------------------------

def test_ids_increase_and_survive_reopen_remove_and_purge(path):
    with DeadLetterQueue(path) as q:
        first = [q.put(letter(n)) for n in range(3)]
        assert first == sorted(first) and len(set(first)) == 3
        assert q.remove(first[-1]) is True
        assert q.remove(first[-1]) is False
    with DeadLetterQueue(path) as q:
        assert [x.id for x in q.list()] == first[1::-1]
        after_reopen = q.put(letter())
        assert after_reopen > first[-1]                     # a removed id is not reused
        assert q.purge() == 3
        after_purge = q.put(letter())
        assert after_purge > after_reopen
    with DeadLetterQueue(path) as q:
        assert [x.id for x in q.list()] == [after_purge]


# --- bounds -----------------------------------------------------------------------------------

def test_the_oldest_letters_are_evicted_at_capacity(path):
    with DeadLetterQueue(path, capacity=3) as q:
        ids = [q.put(letter(n)) for n in range(5)]
        assert [x.id for x in q.list()] == ids[:1:-1]
        assert q.get(ids[0]) is None and q.get(ids[1]) is None
        assert q.stats() == DeadLetterStats(count=3, evicted=2, by_reason={"mailbox_full": 5})
        batch = q.put_many([letter(n) for n in range(5, 10)])   # more than capacity at once
        assert [x.id for x in q.list()] == batch[:1:-1]
        assert q.stats().evicted == 7
    with DeadLetterQueue(path, capacity=3) as q:
        assert q.stats().evicted == 7


def test_the_oldest_letters_are_evicted_when_bytes_run_over_half_the_map(path):
    frame = b"f" * (256 << 10)
    with DeadLetterQueue(path, capacity=1000, map_size=4 << 20) as q:  # 2 MiB for letters
        ids = [q.put(letter(n, frame=frame)) for n in range(20)]
        kept = [x.id for x in q.list()]
        assert 4 <= len(kept) < 8
        assert kept == ids[:-len(kept) - 1:-1]
        assert q.stats().evicted == 20 - len(kept)
        assert q.get(ids[-1]).frame == frame


def test_a_letter_larger_than_the_budget_is_refused_and_the_store_is_unchanged(path):
    with DeadLetterQueue(path, map_size=2 << 20) as q:
        kept = q.put(letter())
        with pytest.raises(DeadLetterStoreError, match="exceeds the 1048576-byte budget") as info:
            q.put(letter(frame=b"x" * (1 << 20)))
        assert path in str(info.value)
        assert [x.id for x in q.list()] == [kept]


def test_a_full_map_sheds_the_oldest_letters_then_names_the_store(path):
    with DeadLetterQueue(path, capacity=1000, map_size=4 << 20) as q:
        frame = b"f" * (512 << 10)
        q.put(letter(frame=frame))
        # A live reader pins every page written before it: the writes after it
        # cannot reuse them, so the map fills up however much is evicted.
        snapshot = q._env.begin()
        try:
            with pytest.raises(DeadLetterStoreError, match="is full") as info:
                for n in range(20):
                    q.put(letter(n, frame=frame))
            assert path in str(info.value)
        finally:
            snapshot.abort()
        latest = q.put(letter(99, frame=frame))            # room again once the reader is gone
        assert q.list(1)[0].id == latest


# --- reasons, purge, remove ---------------------------------------------------------------------

def test_by_reason_counts_every_letter_ever_put(path):
    with DeadLetterQueue(path, capacity=2) as q:
        q.put(letter(reason=Reason.POISON))
        q.put(letter(reason="poison"))
        q.put_many([letter(reason=Reason.TIMEOUT), letter(reason="some_future_reason")])
        assert q.stats().by_reason == {"poison": 2, "timeout": 1, "some_future_reason": 1}
        assert q.purge() == 2
    with DeadLetterQueue(path, capacity=2) as q:
        stats = q.stats()
        assert stats.count == 0 and stats.evicted == 2
        assert stats.by_reason == {"poison": 2, "timeout": 1, "some_future_reason": 1}


def test_purge_and_remove(queue):
    ids = [queue.put(letter(n)) for n in range(4)]
    assert queue.remove(ids[1]) is True
    assert [x.id for x in queue.list()] == [ids[3], ids[2], ids[0]]
    assert queue.stats().count == 3
    assert queue.purge() == 3
    assert queue.list() == [] and queue.stats().count == 0


def test_reason_values():
    assert [r.value for r in Reason] == [
        "unknown_actor", "dropped_oldest", "dropped_newest", "mailbox_full", "timeout",
        "expired", "rejected", "poison", "filtered", "forged", "denied"]
    assert Reason("poison") is Reason.POISON and Reason.POISON == "poison"


# --- the directory and the handle -----------------------------------------------------------------

def test_the_directory_is_created_private(tmp_path):
    path = tmp_path / "state" / "dead-letters"
    with DeadLetterQueue(str(path)) as q:
        q.put(letter())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert stat.S_IMODE(os.stat(path / name).st_mode) == 0o600


def test_a_file_in_the_way_is_a_typed_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a store")
    with pytest.raises(DeadLetterStoreError, match="cannot (create|open) dead-letter store"):
        DeadLetterQueue(str(path))


def test_close_is_idempotent_and_a_closed_queue_refuses(path):
    q = DeadLetterQueue(path)
    q.put(letter())
    q.close()
    q.close()
    with pytest.raises(DeadLetterStoreError, match="is closed"):
        q.list()
    with DeadLetterQueue(path) as again:                   # and the directory can be reopened
        assert again.stats().count == 1


def _inherited_child(q: DeadLetterQueue, path: str) -> None:
    with pytest.raises(DeadLetterStoreError, match="open it after the fork"):
        q.put(letter(1))
    q.close()
    with DeadLetterQueue(path) as own:
        own.put(letter(2))


def test_a_queue_inherited_across_fork_refuses_and_the_child_opens_its_own(path):
    with DeadLetterQueue(path) as q:
        q.put(letter(0))
        child = multiprocessing.get_context("fork").Process(target=_inherited_child,
                                                            args=(q, path))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        q.put(letter(3))                                    # the parent's handle still works
        assert [x.message_id for x in q.list()] == [3, 2, 0]


# --- several processes --------------------------------------------------------------------------

PER_WRITER = 150


def _writer(path: str, name: str, start) -> None:
    start.wait(30)
    with DeadLetterQueue(path) as q:
        for n in range(PER_WRITER // 2):
            q.put(letter(n, sender=name))
        q.put_many([letter(n, sender=name) for n in range(PER_WRITER // 2, PER_WRITER)])


def test_two_processes_write_concurrently(path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    writers = [ctx.Process(target=_writer, args=(path, name, start)) for name in ("a", "b")]
    for w in writers:
        w.start()
    start.set()
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    with DeadLetterQueue(path) as q:
        letters = q.list()
        assert q.stats().count == 2 * PER_WRITER
    ids = [x.id for x in letters]
    assert len(set(ids)) == len(ids) == 2 * PER_WRITER
    assert ids == sorted(ids, reverse=True)
    for name in ("a", "b"):
        mine = [x.message_id for x in reversed(letters) if x.sender == name]
        assert mine == list(range(PER_WRITER))               # each writer's order is kept


def _killed_mid_write(path: str) -> None:
    q = DeadLetterQueue(path)
    txn = q._env.begin(write=True)                       # holds LMDB's writer lock
    txn.put(b"half", b"written", db=q._letters)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_writer_killed_mid_transaction_does_not_wedge_the_others(path):
    with DeadLetterQueue(path) as q:
        q.put(letter(1))
    child = multiprocessing.get_context("spawn").Process(target=_killed_mid_write, args=(path,))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with DeadLetterQueue(path) as q:
        q.put(letter(2))
        assert [x.message_id for x in q.list()] == [2, 1]    # the half-written one is gone


# --- round trip -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_queue(tmp_path_factory):
    with DeadLetterQueue(str(tmp_path_factory.mktemp("roundtrip"))) as q:
        yield q


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(), sender=st.text(), target=st.text(),
       message_id=st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
       frame=st.binary(max_size=4096), detail=st.none() | st.text(),
       at=st.floats(allow_nan=False, allow_infinity=False) | st.just(0.0))
def test_any_letter_round_trips(shared_queue, reason, sender, target, message_id, frame,
                                detail, at):
    original = DeadLetter(reason=reason, sender=sender, target=target, message_id=message_id,
                          frame=frame, detail=detail, time=at)
    got = shared_queue.get(shared_queue.put(original))
    assert (got.reason, got.sender, got.target, got.message_id, got.frame, got.detail) == \
        (reason, sender, target, message_id, frame, detail)
    if at:
        assert got.time == at
    else:
        assert got.time > 0


# --- describe -------------------------------------------------------------------------------------

def test_describe_decodes_the_envelope_and_its_payload():
    frame = zmq_bus.encode_envelope(zmq_bus.Kind.TELL, 7, {"a": 1}, sender="x", target="y")
    out = describe(DeadLetter(reason="mailbox_full", sender="x", target="y", message_id=7,
                              frame=frame, detail="capacity 10 reached", time=12.5, id=3))
    assert out == {
        "id": 3, "time": 12.5, "reason": "mailbox_full", "sender": "x", "target": "y",
        "message_id": 7, "kind": "tell", "priority": "normal", "retry_count": 0,
        "detail": "capacity 10 reached", "size": len(frame), "payload": {"a": 1},
        "payload_error": None,
    }


def test_describe_makes_any_payload_json_able():
    payload = {"blob": b"\x00\xff", 1: [b"ab", None, 2.5], "nested": {"k": (1, 2)}}
    frame = zmq_bus.encode_envelope(zmq_bus.Kind.ASK, 9, payload, sender="x", target="y",
                                    priority=zmq_bus.Priority.CRITICAL)
    out = describe(DeadLetter(reason="timeout", sender="x", target="y", message_id=9,
                              frame=frame))
    assert out["kind"] == "ask" and out["priority"] == "critical"
    assert out["payload"] == {"blob": {"base64": "AP8="}, "1": [{"base64": "YWI="}, None, 2.5],
                              "nested": {"k": [1, 2]}}
    assert msgspec.json.decode(msgspec.json.encode(out)) == out


@pytest.mark.parametrize("frame", [b"", b"\xc1garbage", b"\x93\x01\x02\x03", b"\xff" * 64])
def test_describe_garbage_says_why(frame):
    out = describe(DeadLetter(reason="rejected", sender="?", target="y", message_id=0,
                              frame=frame))
    assert out["payload"] is None and out["kind"] is None and out["priority"] is None
    assert out["retry_count"] is None
    assert "malformed envelope" in out["payload_error"]
    assert out["reason"] == "rejected" and out["size"] == len(frame)


def test_describe_an_envelope_whose_payload_does_not_decode():
    frame = zmq_bus.encode_envelope(zmq_bus.Kind.TELL, 5, msgspec.Raw(b"\xa1\xff"),
                                    sender="x", target="y")    # a str that is not UTF-8
    out = describe(DeadLetter(reason="rejected", sender="x", target="y", message_id=5,
                              frame=frame))
    assert out["kind"] == "tell"
    assert out["payload"] is None
    assert out["payload_error"].startswith("undecodable payload")


def test_describe_does_not_decode_a_frame_over_the_limit():
    out = describe(DeadLetter(reason="rejected", sender="x", target="y", message_id=7,
                              frame=FRAME), max_bytes=10)
    assert out["payload"] is None
    assert "exceeds the 10-byte limit" in out["payload_error"]


# --- RateLimitedLog ------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def limited(caplog):
    caplog.set_level(logging.WARNING, logger="test.dead_letters")
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("test.dead_letters"), burst=3, per=10.0, clock=clock)
    return log, clock, caplog


def test_a_logged_line_names_reason_sender_target_message_and_detail(limited):
    log, _, caplog = limited
    log.dead_letter(letter(42, detail="capacity 10000 reached", sender="engine",
                           target="sync"))
    assert caplog.messages == [
        "dead letter (mailbox_full): message 42 from engine to sync: capacity 10000 reached"]
    assert caplog.records[0].levelno == logging.WARNING


def test_lines_over_the_burst_are_counted_and_reported_with_the_next_window(limited):
    log, clock, caplog = limited
    for n in range(7):
        log.dead_letter(letter(n, detail=None))
    assert len(caplog.messages) == 3
    clock.now += 9.9
    log.dead_letter(letter(7, detail=None))                   # still the same window
    assert len(caplog.messages) == 3
    clock.now += 0.1
    log.dead_letter(letter(8, detail=None))
    assert caplog.messages[-1] == ("dead letter (mailbox_full): message 8 from x to y "
                                   "(5 more mailbox_full dead letters were not logged)")
    log.dead_letter(letter(9, detail=None))
    assert caplog.messages[-1] == "dead letter (mailbox_full): message 9 from x to y"


def test_each_reason_has_its_own_budget(limited):
    log, _, caplog = limited
    for n in range(5):
        log.dead_letter(letter(n, reason=Reason.POISON))
        log.dead_letter(letter(n, reason="timeout"))
    assert sum("(poison)" in m for m in caplog.messages) == 3
    assert sum("(timeout)" in m for m in caplog.messages) == 3


def test_flush_reports_what_is_still_suppressed_once(limited):
    log, _, caplog = limited
    log.flush()
    assert caplog.messages == []
    for n in range(5):
        log.dead_letter(letter(n, reason=Reason.POISON))
    caplog.clear()
    log.flush()
    assert caplog.messages == ["2 more poison dead letters were not logged"]
    log.flush()
    assert caplog.messages == ["2 more poison dead letters were not logged"]
