"""alysd's logs as an operator's journal gets them."""

from __future__ import annotations

import json

import pytest

from alysd.errors import HandlerError
from tests.conftest import actor_toml, tree_toml


def test_json_logs_are_one_object_per_line_with_who_wrote_it(start_daemon):
    d = start_daemon("[logging]\nformat = \"json\"\n" + tree_toml(
        actor_toml("relay", "actors.examples:Relay", config={"target": "nobody"})))
    with pytest.raises(HandlerError):
        d.request("relay", "hello")
    assert d.stop() == 0
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "pid", "actor", "incarnation", "message_id",
                "event", "message"} <= set(line) for line in lines)
    failed = [line for line in lines if line["event"] == "handler_failed"]
    assert failed and (failed[0]["actor"], failed[0]["incarnation"]) == ("relay", 1)
    assert "UnknownActor" in failed[0]["message"] and failed[0]["message_id"] > 0
    root = [line for line in lines if line["actor"] is None]
    assert any("alysd exits with status 0" in line["message"] for line in root)
    assert {line["pid"] for line in root} != {failed[0]["pid"]}


def test_a_crash_report_is_tagged_and_a_crash_loop_is_held_back(start_daemon, short_tmp):
    journal = f"{short_tmp}/journal"
    d = start_daemon("[logging]\nformat = \"json\"\n" + tree_toml(
        actor_toml("r", "tests.actors:Recorder", config={"journal": journal}),
        max_retries=1000, within_time="1s"))
    for _ in range(25):
        pid = d.actor_pid("r")
        d.kill("r")
        d.wait_until(lambda: d.actor_pid("r") not in (pid, None), message="r restarted")
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    reports = [line for line in lines if line["event"] == "crash_report"]
    # 25 crashes, 20 reports a minute at most from that place in the code.
    assert len(reports) == 20
    assert all(line["actor"] is None and "actor r " in line["message"] for line in reports)


def test_what_an_actor_writes_is_kept_tagged_and_quoted_when_it_crashes(start_daemon):
    d = start_daemon(tree_toml(actor_toml("talker", "tests.actors:Talker")))
    pid = d.actor_pid("talker")
    assert d.request("talker", {"say": "hello there"}) == "said"
    d.send("talker", {"die": "my last words"})
    d.wait_until(lambda: d.actor_pid("talker") not in (pid, None), message="restarted")
    lines = d.call("logs", {"name": "talker", "lines": 10})["lines"]
    texts = [entry["line"] for entry in lines]
    assert "hello there" in texts and "my last words" in texts
    assert any(t.endswith("said hello there") and "WARNING alysd.actor.talker" in t
               for t in texts)
    assert {entry["pid"] for entry in lines} == {pid}
    assert all(entry["incarnation"] == 1 and entry["actor"] == "talker" for entry in lines)
    log = d.log()
    # In the journal: a bare print is tagged with the actor; the crash report quotes it.
    assert f"INFO alysd.actor.talker[{pid}]: hello there" in log
    report = next(line for line in log.splitlines() if "crash report: actor talker" in line)
    assert "its last output:" in report and "my last words" in report


def test_logs_follow_a_live_actor_and_interleave_all(start_daemon):
    import select
    import subprocess
    import sys

    d = start_daemon(tree_toml(actor_toml("talker", "tests.actors:Talker"),
                               actor_toml("other", "tests.actors:Talker")))
    d.request("other", {"say": "from other"})
    follower = subprocess.Popen([sys.executable, "-m", "alysd.ctl", "--runtime-dir",
                                 d.rundir.path, "logs", "talker", "-f", "-n", "0"],
                                stdout=subprocess.PIPE, text=True)
    try:
        d.wait_until(lambda: d.call("logs", {"name": "other", "lines": 1})["lines"],
                     message="other's line kept")
        got = []

        def seen():
            d.request("talker", {"say": "now"})
            while select.select([follower.stdout], [], [], 0.3)[0]:
                line = follower.stdout.readline()
                assert line, f"alysctl logs -f ended ({follower.poll()})"
                got.append(line.strip())
                if "now" in got:
                    return True
            return False
        d.wait_until(seen, timeout=15, message="the new line followed")
        assert "from other" not in got
    finally:
        follower.terminate()
        follower.wait(10)
        follower.stdout.close()
    both = d.call("logs", {"lines": 100})["lines"]
    assert {"talker", "other"} <= {entry["actor"] for entry in both}
    assert [e["seq"] for e in both] == sorted(e["seq"] for e in both)
