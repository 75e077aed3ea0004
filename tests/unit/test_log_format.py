"""alysd's log lines (alysd/log_format.py): JSON fields, and repeated lines held back."""

import io
import json
import logging

from alysd import log_format
from alysd.log_format import JsonFormatter, RepeatFilter


def record(msg="handled %d", args=(7,), name="alysd.actor.engine", level=logging.WARNING,
           **extra):
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_json_line_carries_every_field(monkeypatch):
    monkeypatch.setattr(log_format, "_context", {"actor": "engine", "incarnation": 3})
    line = json.loads(JsonFormatter().format(record(event="crash", message_id=42)))
    assert line["level"] == "warning" and line["logger"] == "alysd.actor.engine"
    assert (line["actor"], line["incarnation"], line["event"], line["message_id"]) == (
        "engine", 3, "crash", 42)
    assert line["message"] == "handled 7" and isinstance(line["pid"], int)
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_the_root_has_no_actor_and_exceptions_are_kept():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        rec = record()
        rec.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(rec))
    assert line["actor"] is None and line["event"] is None
    assert "ValueError: boom" in line["exc"]


def test_repeated_lines_from_one_place_are_held_back_and_then_counted():
    now = [0.0]
    repeat = RepeatFilter(burst=3, per=60.0, clock=lambda: now[0])
    passed = [repeat.filter(record(args=(i,))) for i in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert repeat.filter(record(msg="another place")) is True
    now[0] = 60.0
    later = record(args=(99,))
    assert repeat.filter(later) is True
    assert later.getMessage() == "handled 99 (7 similar lines held back)"


def test_places_that_come_and_go_do_not_pile_up():
    now = [0.0]
    repeat = RepeatFilter(clock=lambda: now[0])
    for i in range(log_format.MAX_PLACES + 10):
        repeat.filter(record(msg=f"formatted {i}", args=()))
    now[0] = 61.0
    repeat.filter(record(msg="one more", args=()))
    assert len(repeat.throttle) <= 2


def test_configure_writes_json_lines_to_the_stream():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        log_format.configure("info", "json", stream)
        logging.getLogger("alysd.test").info("hello %s", "there")
        logging.getLogger("alysd.test").debug("not at info")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["hello there"]


def test_audit_lines_are_never_held_back():
    repeat = RepeatFilter(burst=1, per=60.0, clock=lambda: 0.0)
    assert all(repeat.filter(record(msg="control: runs %s", args=("restart",), event="audit"))
               for _ in range(50))
