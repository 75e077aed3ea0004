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
