"""A process's buffered way into the dead-letter queue."""

from __future__ import annotations

import logging
import os

from alysd import dead_letter_sink
from alysd.dead_letter_sink import DeadLetterSink
from alysd.dead_letters import DeadLetterQueue, Reason


def add(sink: DeadLetterSink, n: int = 1) -> None:
    for i in range(n):
        sink.add(Reason.FILTERED, sender="a", target="b", message_id=i + 1, frame=b"x",
                 detail="test")


def test_letters_are_stored_together_at_flush(tmp_path):
    path = str(tmp_path / "dlq")
    sink = DeadLetterSink(path, 100, logging.getLogger("t"))
    add(sink, 3)
    assert not os.path.exists(path)          # opened on the first write, not before
    sink.flush()
    assert sink.written == 3 and not sink.pending
    sink.close()
    with DeadLetterQueue(path) as queue:
        assert [x.message_id for x in queue.list()] == [3, 2, 1]


def test_a_busy_process_flushes_by_count(tmp_path):
    sink = DeadLetterSink(str(tmp_path / "dlq"), 10_000, logging.getLogger("t"))
    add(sink, dead_letter_sink.FLUSH_BATCH - 1)
    sink.flush_if_due()
    assert sink.written == 0                # neither old enough nor enough of them
    add(sink)
    sink.flush_if_due()
    assert sink.written == dead_letter_sink.FLUSH_BATCH
    sink.close()


def test_a_store_that_cannot_be_written_is_logged_with_the_ids(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sink = DeadLetterSink(str(blocker / "dlq"), 10, logging.getLogger("t"))
    add(sink, 2)
    with caplog.at_level(logging.ERROR):
        sink.flush()
    assert sink.lost == 2 and sink.written == 0
    assert "could not store 2 dead letters" in caplog.text and "1, 2" in caplog.text
    sink.close()
