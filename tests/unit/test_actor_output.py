"""ActorOutput (alysd/actor_output.py) on real pipes: lines cut right, kept
within bounds, tagged in the journal, and nothing left behind at the end."""

import io
import json
import os

from alysd import actor_output
from alysd.actor_output import ActorOutput


def output(**kw):
    journal = io.BytesIO()
    closed = []
    return ActorOutput(kw.pop("buffer_lines", 100), journal=journal,
                       on_close=closed.append, **kw), journal, closed


def pipe_for(out, actor="engine", pid=42, incarnation=1):
    r, w = os.pipe()
    out.attach(r, actor, pid, incarnation)
    return r, w


def test_lines_are_cut_at_newlines_and_a_partial_one_waits():
    out, journal, _ = output()
    r, w = pipe_for(out)
    os.write(w, b"one\ntw")
    out.read(r)
    os.write(w, b"o\nthree")
    out.read(r)
    assert [e.line for e in out.tail("engine", 10)] == ["one", "two"]
    os.close(w)                          # the process ended: the partial line is kept
    out.drain(42)
    assert [e.line for e in out.tail("engine", 10)] == ["one", "two", "three"]
    assert all((e.pid, e.incarnation) == (42, 1) for e in out.tail("engine", 10))


def test_the_ring_buffer_keeps_the_latest_lines_and_a_long_line_is_cut(monkeypatch):
    monkeypatch.setattr(actor_output, "MAX_LINE", 100)
    out, _, _ = output(buffer_lines=3)
    r, w = pipe_for(out)
    os.write(w, b"".join(b"%d\n" % i for i in range(10)))
    out.read(r)
    assert [e.line for e in out.tail("engine", 10)] == ["7", "8", "9"]
    os.write(w, b"x" * 150)
    out.read(r)
    assert out.tail("engine", 1)[0].line == "x" * 100
    os.close(w)
    out.close()


def test_the_journal_tags_what_is_not_already_a_log_line():
    out, journal, _ = output()
    r, w = pipe_for(out)
    os.write(w, b"2026-12-07 10:00:00,000 WARNING alysd.actor.engine[42]: a log line\n"
                b"a bare print\n")
    out.read(r)
    text = journal.getvalue().decode().splitlines()
    assert text[0] == "2026-12-07 10:00:00,000 WARNING alysd.actor.engine[42]: a log line"
    assert text[1].endswith("INFO alysd.actor.engine[42]: a bare print")
    os.close(w)
    out.close()


def test_in_json_every_journal_line_is_an_object():
    out, journal, _ = output(fmt="json")
    r, w = pipe_for(out)
    os.write(w, b'{"message": "already json"}\nplain\n')
    out.read(r)
    lines = [json.loads(line) for line in journal.getvalue().splitlines()]
    assert lines[0] == {"message": "already json"}
    assert (lines[1]["actor"], lines[1]["incarnation"], lines[1]["event"], lines[1]["message"]) \
        == ("engine", 1, "output", "plain")
    os.close(w)
    out.close()


def test_lines_of_all_actors_interleave_in_the_order_read_and_closed_pipes_leave():
    out, _, closed = output()
    ra, wa = pipe_for(out, "a", 1)
    rb, wb = pipe_for(out, "b", 2)
    for fd, r, text in ((wa, ra, b"a1\n"), (wb, rb, b"b1\n"), (wa, ra, b"a2\n")):
        os.write(fd, text)
        out.read(r)
    assert [e.line for e in out.since(0)] == ["a1", "b1", "a2"]
    assert [e.line for e in out.since(1, "a")] == ["a2"]
    os.close(wa)
    assert out.read(ra) is False and closed == [ra] and ra not in out.pipes
    os.close(wb)
    out.close()
    assert closed == [ra, rb] and not out.pipes
