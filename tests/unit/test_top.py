"""Tests of ``alysctl top``'s pure part: message rates from two status snapshots,
and one frame laid out for a terminal of a given size."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alysd.ctl import format_time
from alysd.top import COLUMNS, MIN_NAME_WIDTH, message_rates, one_frame, render_frame

NOW = 1700000000.0


def row(name="engine", **over):
    base = {
        "name": name, "supervisor": "root", "pid": 123, "state": "running", "restarts": 2,
        "uptime_s": 90.0, "rss_bytes": 512 << 20, "cpu_percent": 12.345, "mailbox_depth": 4,
        "health": "healthy", "health_reason": None, "last_exit": None, "handled": 10,
    }
    base.update(over)
    return base


def counts(**handled):
    return [row(name, handled=n) for name, n in handled.items()]


# --- message_rates ------------------------------------------------------------------------

def test_the_first_snapshot_has_no_rates():
    assert message_rates(None, counts(a=5, b=0), 1.0) == {"a": None, "b": None}


def test_a_rate_is_the_change_in_handled_over_the_elapsed_time():
    assert message_rates(counts(a=10, b=7), counts(a=30, b=7), 2.0) == {"a": 10.0, "b": 0.0}


def test_a_count_that_went_down_has_no_rate():
    assert message_rates(counts(a=10, b=1), counts(a=3, b=2), 1.0) == {"a": None, "b": 1.0}


def test_an_actor_that_appeared_has_no_rate_and_one_that_disappeared_is_gone():
    assert message_rates(counts(a=1, gone=9), counts(a=2, new=50), 0.5) == \
        {"a": 2.0, "new": None}


@pytest.mark.parametrize("elapsed", [0.0, -1.0])
def test_no_time_elapsed_means_no_rate(elapsed):
    assert message_rates(counts(a=1), counts(a=5), elapsed) == {"a": None}


def test_a_missing_count_means_no_rate():
    before, after = counts(a=1, b=1), counts(a=2, b=2)
    del before[0]["handled"], after[1]["handled"]
    assert message_rates(before, after, 1.0) == {"a": None, "b": None}


# --- render_frame -------------------------------------------------------------------------

def test_frame_has_the_system_line_then_every_column():
    lines = render_frame([row(), row("sync", state="stopped", pid=None, health="unknown",
                                     rss_bytes=None, cpu_percent=None, mailbox_depth=0)],
                         {"engine": 12.345, "sync": None}, now=NOW).split("\n")
    assert lines[0] == f"system: degraded (1/2 actors running)  {format_time(NOW)}"
    assert lines[1].split() == ["NAME", "STATE", "PID", "CPU%", "RSS", "MAILBOX", "MSG/S",
                                "RESTARTS", "HEALTH"]
    assert lines[2].split() == ["engine", "running", "123", "12.3", "512.0", "MiB", "4",
                                "12.3", "2", "healthy"]
    assert lines[3].split() == ["sync", "stopped", "-", "-", "-", "0", "-", "2", "unknown"]
    assert len(lines) == 4


@pytest.mark.parametrize("healths, system", [
    (["healthy", "healthy"], "healthy"),
    (["healthy", "degraded"], "degraded"),
    (["degraded", "unhealthy"], "unhealthy"),
])
def test_the_system_health_is_the_aggregate_of_the_actors(healths, system):
    rows = [row(f"a{i}", health=h) for i, h in enumerate(healths)]
    assert render_frame(rows, {}, now=NOW).startswith(f"system: {system} (2/2 actors running)")


def test_an_unhealthy_actor_shows_its_reason():
    frame = render_frame([row(health="unhealthy", health_reason="disk full")], {}, now=NOW)
    assert frame.split("\n")[2].endswith("unhealthy (disk full)")


def test_long_names_are_cut_to_fit_the_width():
    rows = [row("a-very-long-actor-name-" + "x" * 40), row("short")]
    lines = render_frame(rows, {}, now=NOW, width=90).split("\n")
    assert all(len(line) <= 90 for line in lines)
    assert lines[2].startswith("a-very-long") and "…" in lines[2].split()[0]
    assert lines[3].split()[0] == "short"
    assert all(line.split()[-1] == "healthy" for line in lines[2:])   # the last column kept


def test_a_health_reason_is_cut_at_the_edge_rather_than_the_names():
    rows = [row("ingest-worker", health="degraded", health_reason="r" * 40)]
    wide = render_frame(rows, {}, now=NOW).split("\n")[2]
    lines = render_frame(rows, {}, now=NOW, width=len(wide) - 10).split("\n")
    assert lines[2].split()[0] == "ingest-worker"
    assert lines[2].endswith("r…") and len(lines[2]) == len(wide) - 10


def test_names_keep_a_minimum_and_lines_are_cut_on_a_very_narrow_terminal():
    lines = render_frame([row("abcdefghij")], {}, now=NOW, width=30).split("\n")
    assert all(len(line) <= 30 and line.endswith("…") for line in lines)
    assert lines[2].split()[0] == "abc…"[:MIN_NAME_WIDTH]


def test_what_does_not_fit_the_height_is_counted():
    rows = [row(f"actor{i}") for i in range(10)]
    lines = render_frame(rows, {}, now=NOW, height=6).split("\n")
    assert len(lines) == 6
    assert [line.split()[0] for line in lines[2:5]] == ["actor0", "actor1", "actor2"]
    assert lines[5] == "… 7 more"
    assert "(10/10 actors running)" in lines[0]      # the system line counts every actor


def test_rows_that_just_fit_the_height_need_no_more_line():
    rows = [row(f"actor{i}") for i in range(4)]
    lines = render_frame(rows, {}, now=NOW, height=6).split("\n")
    assert len(lines) == 6 and lines[-1].split()[0] == "actor3"


def test_a_tiny_height_still_shows_the_system_line_the_header_and_the_count():
    lines = render_frame([row("a"), row("b")], {}, now=NOW, height=1).split("\n")
    assert len(lines) == 3 and lines[1].split()[0] == "NAME" and lines[2] == "… 2 more"


def test_an_empty_system_is_healthy_with_a_bare_header():
    assert render_frame([], {}, now=NOW, width=80, height=24).split("\n") == [
        f"system: healthy (0/0 actors running)  {format_time(NOW)}", "  ".join(COLUMNS)]


def test_wire_text_cannot_steer_the_terminal():
    frame = render_frame([row("evil\x1b[2J", health="degraded", health_reason="a\nb\x1b]0;x")],
                         {}, now=NOW)
    assert "\x1b" not in frame and len(frame.split("\n")) == 3


names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(st.lists(names, max_size=30, unique=True), st.integers(12, 200), st.integers(1, 60),
       st.text(max_size=80))
def test_a_frame_fits_the_terminal_and_accounts_for_every_actor(names, width, height, reason):
    rows = [row(name, health="degraded", health_reason=reason or None) for name in names]
    lines = render_frame(rows, {}, now=NOW, width=width, height=height).split("\n")
    assert all(len(line) <= width for line in lines)
    assert len(lines) <= max(height, 3)
    more = int(lines[-1].split()[1]) if lines[-1].startswith("… ") else 0
    assert len(lines) - 2 - (1 if more else 0) + more == len(rows)


def test_one_frame_measures_the_rates_between_two_snapshots():
    snapshots = iter([counts(a=10), counts(a=20, b=1)])
    lines = one_frame(lambda: next(snapshots), 0.001).split("\n")
    start = lines[1].index("MSG/S")
    rate_a, rate_b = (line[start:].split()[0] for line in lines[2:])
    assert float(rate_a) > 0 and rate_b == "-"
