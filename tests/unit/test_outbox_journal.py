"""The outbox journal: what a sender must not lose when it is killed."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from alysd import outbox_journal
from alysd.outbox_journal import OutboxJournal, recover


def test_live_records_are_recovered_in_order_and_done_ones_are_not(tmp_path):
    path = str(tmp_path / "a.outbox")
    journal = OutboxJournal(path, size=64 * 1024)
    handles = [journal.append(f"t{i % 3}", bytes([i]) * (i + 1)) for i in range(10)]
    for h in handles[::2]:
        journal.done(h)
    journal.close()
    assert recover(path) == [(f"t{i % 3}", bytes([i]) * (i + 1)) for i in range(1, 10, 2)]


def test_what_a_killed_process_wrote_survives_it(tmp_path):
    path = str(tmp_path / "a.outbox")
    pid = os.fork()
    if pid == 0:
        journal = OutboxJournal(path, size=64 * 1024)
        journal.append("r", b"frame-1")
        journal.done(journal.append("r", b"frame-2"))
        journal.append("r", b"frame-3")
        os._exit(0)          # no close, no flush: the pages are the file's
    os.waitpid(pid, 0)
    assert recover(path) == [("r", b"frame-1"), ("r", b"frame-3")]


def test_a_new_writer_starts_over(tmp_path):
    path = str(tmp_path / "a.outbox")
    OutboxJournal(path, size=4096).append("r", b"old")
    assert recover(path) == [("r", b"old")]
    OutboxJournal(path, size=4096).close()
    assert recover(path) == []


def test_the_writer_moves_to_the_other_file_only_once_it_is_all_done(tmp_path):
    path = str(tmp_path / "a.outbox")
    journal = OutboxJournal(path, size=2 * 256)
    first = [journal.append("r", b"x" * 50) for _ in range(3)]     # 69 bytes each: file 0 is full
    assert all(h >= 0 for h in first)
    second = [journal.append("r", b"y" * 50) for _ in range(3)]    # file 1
    assert all(h >> 32 == 1 for h in second)
    assert journal.append("r", b"z" * 50) == -1      # file 0 still holds live records
    assert journal.unjournaled == 1
    for h in first:
        journal.done(h)
    assert journal.append("r", b"z" * 50) >> 32 == 0
    assert recover(path) == [("r", b"y" * 50)] * 3 + [("r", b"z" * 50)]


def test_a_frame_larger_than_a_file_is_sent_unjournaled(tmp_path):
    journal = OutboxJournal(str(tmp_path / "a.outbox"), size=2 * 256)
    assert journal.append("r", b"x" * 300) == -1
    journal.done(-1)                                  # a no-op for the caller's convenience


def test_a_torn_record_is_not_taken(tmp_path):
    path = str(tmp_path / "a.outbox")
    journal = OutboxJournal(path, size=4096)
    journal.append("r", b"whole")
    handle = journal.append("r", b"torn")
    journal.close()
    with open(f"{path}.0", "r+b") as file:           # as if killed before the header
        file.seek(handle & 0xFFFFFFFF)
        file.write(bytes(16))
    assert recover(path) == [("r", b"whole")]
    outbox_journal.remove(path)
    assert recover(path) == [] and not os.path.exists(f"{path}.0")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=100), st.booleans()),
                max_size=40))
def test_recover_returns_exactly_the_live_records(tmp_path_factory, ops):
    path = str(tmp_path_factory.mktemp("j") / "a.outbox")
    journal = OutboxJournal(path, size=64 * 1024)
    live = []
    for target, frame, deliver in ops:
        handle = journal.append(target, frame)
        if deliver:
            journal.done(handle)
        else:
            live.append((target, frame))
    journal.close()
    assert recover(path) == live
