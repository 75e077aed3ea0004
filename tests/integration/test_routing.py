"""Where messages go: broadcasts to subscribers, pools of actors, run-time filters."""

from __future__ import annotations

import os
import signal

from alysd.testing import wait_until
from alysd.zmq_bus import Kind
from tests.conftest import actor_toml, tree_toml
from tests.integration.test_delivery import PUMP, letters, ns, pump, recorder, records

MEMBERS = ["w.0", "w.1", "w.2"]


def test_publish_reaches_config_and_run_time_subscribers(start_daemon, tmp_path):
    j1, j2, j3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "deaf"
    d = start_daemon(tree_toml(
        recorder("s1", j1, subscribe=["evt"]), recorder("deaf", j3), PUMP,
        actor_toml("s2", cls="tests.actors:Subscriber",
                   config={"journal": str(j2), "subscribe_to": ["evt"]})))
    reached: list[int] = []

    def publish() -> int:
        reached.append(d.request("pump", {"publish": "evt", "msg": {"seq": len(reached)}}))
        return reached[-1]
    # s2 subscribed in started(); the publisher learns of it through the root
    wait_until(lambda: publish() == 2, interval=0.02, message="s2's subscription in effect")
    assert publish() == 2
    everything = [{"seq": i} for i in range(len(reached))]
    wait_until(lambda: [r["m"] for r in records(j1)] == everything, message="all events at s1")
    wait_until(lambda: [r["m"] for r in records(j2)]
               == [{"seq": i} for i, n in enumerate(reached) if n == 2], message="events at s2")
    assert {r["kind"] for r in records(j1) + records(j2)} == {Kind.EVENT}
    assert records(j3) == []


def test_a_run_time_subscription_is_renewed_by_the_next_incarnation(start_daemon, tmp_path):
    journal = tmp_path / "s"
    d = start_daemon(tree_toml(
        PUMP, actor_toml("s", cls="tests.actors:Subscriber",
                         config={"journal": str(journal), "subscribe_to": ["evt"]}),
        max_retries=10))
    wait_until(lambda: d.request("pump", {"publish": "evt", "msg": 1}) == 1, interval=0.02,
               message="subscription in effect")
    os.kill(d.status()["s"]["pid"], signal.SIGKILL)
    wait_until(lambda: (row := d.status()["s"])["incarnation"] > 1
               and row["state"] == "running", message="s restarted")
    wait_until(lambda: d.request("pump", {"publish": "evt", "msg": 2}) == 1, interval=0.02,
               message="the new incarnation's subscription in effect")
    wait_until(lambda: any(r["incarnation"] > 1 and r["m"] == 2 for r in records(journal)),
               message="an event reached the new incarnation")
    rows = d.status()
    assert (rows["s"]["restarts"], rows["pump"]["restarts"]) == (1, 0)


def test_subscribing_in_started_does_not_hold_up_the_siblings_start(start_daemon, tmp_path):
    d = start_daemon(tree_toml(
        actor_toml("s", cls="tests.actors:Subscriber",
                   config={"journal": str(tmp_path / "s"), "subscribe_to": ["evt"]}),
        PUMP, actor_toml("a")), wait=False)
    rows = d.wait_running(timeout=5)
    assert all(row["restarts"] == 0 for row in rows.values())
    wait_until(lambda: d.request("pump", {"publish": "evt", "msg": 1}) == 1, timeout=2,
               interval=0.02, message="subscription in effect")


def test_round_robin_pool_members_take_turns(start_daemon):
    d = start_daemon(tree_toml(actor_toml("w", instances=3), actor_toml("a")))
    rows = d.status()
    assert "w" not in rows
    assert all(rows[m]["state"] == "running" for m in MEMBERS)
    assert len({rows[m]["pid"] for m in MEMBERS}) == 3
    names = [d.request("a", {"op": "ask", "to": "w", "msg": {"op": "whoami"}})["name"]
             for _ in range(6)]
    assert names == MEMBERS * 2
    # alysctl's own requests to the pool take turns too
    assert sorted(d.request("w", {"op": "whoami"})["name"] for _ in range(3)) == MEMBERS


def test_restart_by_pool_name_restarts_every_member(start_daemon):
    d = start_daemon(tree_toml(actor_toml("w", instances=3), actor_toml("a")))
    before = d.status()
    rows = d.call("restart", {"name": "w"})
    assert sorted(r["name"] for r in rows) == MEMBERS
    after = d.status()
    for m in MEMBERS:
        assert after[m]["state"] == "running" and after[m]["pid"] != before[m]["pid"]
        assert after[m]["incarnation"] == before[m]["incarnation"] + 1
    assert after["a"]["pid"] == before["a"]["pid"]


def test_a_killed_pool_member_is_restarted_alone(start_daemon):
    d = start_daemon(tree_toml(actor_toml("w", instances=3), actor_toml("a"), max_retries=10))
    before = d.status()
    os.kill(before["w.1"]["pid"], signal.SIGKILL)
    after = wait_until(lambda: (s := d.status())["w.1"]["incarnation"] == 2
                       and s["w.1"]["state"] == "running" and s, message="w.1 restarted")
    assert after["w.0"]["pid"] == before["w.0"]["pid"]
    assert after["w.2"]["pid"] == before["w.2"]["pid"]
    assert after["w.1"]["restarts"] == 1
    names = {d.request("a", {"op": "ask", "to": "w", "msg": {"op": "whoami"}})["name"]
             for _ in range(3)}
    assert names == set(MEMBERS)


def _least_loaded_pool(tmp_path) -> str:
    return tree_toml(recorder("w", tmp_path / "journal", instances=2, routing="least_loaded"),
                     PUMP, actor_toml("a"))


def test_least_loaded_prefers_an_idle_member_over_a_busy_one(start_daemon, tmp_path):
    journal, release = tmp_path / "journal", tmp_path / "release"
    d = start_daemon(_least_loaded_pool(tmp_path))
    assert d.request("a", {"op": "send", "to": "w",
                           "msg": {"n": 0, "hold": str(release)}}) == "sent"
    first = wait_until(lambda: records(journal), message="a member busy")[0]["name"]
    idle = ({"w.0", "w.1"} - {first}).pop()
    try:
        assert pump(d, "w", [{"n": n} for n in (1, 2, 3)])["results"] == ["ok"] * 3
        # handled while the busy member is still busy, so by the idle one
        got = wait_until(lambda: len(rs := records(journal)) == 4 and rs, timeout=3,
                         message="3 messages handled while a member is busy")
        assert [(r["name"], r["m"]["n"]) for r in got[1:]] == [(idle, 1), (idle, 2), (idle, 3)]
    finally:
        release.touch()


def test_least_loaded_avoids_a_member_with_a_backlog(start_daemon, tmp_path):
    journal, release = tmp_path / "journal", tmp_path / "release"
    d = start_daemon(_least_loaded_pool(tmp_path))
    backlog = [{"n": 0, "sleep": 0.05}, {"n": 1, "hold": str(release)}]
    backlog += [{"n": n} for n in range(2, 6)]
    assert pump(d, "w.0", backlog)["results"] == ["ok"] * 6
    wait_until(lambda: d.status()["w.0"]["mailbox_depth"] > 0, message="a backlog at w.0")
    try:
        assert pump(d, "w", [{"n": n} for n in (10, 11, 12)])["results"] == ["ok"] * 3
        wait_until(lambda: [(r["name"], r["m"]["n"]) for r in records(journal)
                            if r["m"]["n"] >= 10] == [("w.1", 10), ("w.1", 11), ("w.1", 12)],
                   timeout=3, message="the pool's messages handled by the idle member")
        assert not {2, 3, 4, 5} & set(ns(journal))  # w.0 was busy all along
    finally:
        release.touch()
    wait_until(lambda: sorted(ns(journal)) == [0, 1, 2, 3, 4, 5, 10, 11, 12],
               message="the backlog handled")


def test_drop_filter_dead_letters_until_removed(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP,
                               system='heartbeat_interval = "50ms"'))
    rule = d.call("filter_add", {"sender": "pump", "receiver": "r", "action": "drop"})
    assert pump(d, "r", [{"n": 1}, {"n": 2}])["results"] == ["ok", "ok"]
    dropped = wait_until(lambda: len(x := letters(d, "filtered")) == 2 and x,
                         message="2 filtered dead letters")
    assert [(x["payload"], x["sender"], x["target"]) for x in dropped] == [
        ({"n": 1}, "pump", "r"), ({"n": 2}, "pump", "r")]
    wait_until(lambda: d.call("filter_list")["filters"][0]["matched"] == 2,
               message="filter_list counts the 2 messages the filter matched")
    assert d.call("filter_remove", {"id": rule["id"]}) == {"removed": 1}
    assert pump(d, "r", [{"n": 3}])["results"] == ["ok"]
    wait_until(lambda: ns(journal) == [3], message="delivered again once the filter is gone")


def test_delay_filter_lets_a_later_message_overtake(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP))
    d.call("filter_add", {"receiver": "r", "message_type": "slow", "action": "delay",
                          "delay": 0.4})
    msgs = [{"type": "slow", "n": 1}, {"type": "fast", "n": 2}]
    assert pump(d, "r", msgs)["results"] == ["ok", "ok"]
    wait_until(lambda: ns(journal) == [2, 1], message="the delayed message after the later one")
    assert letters(d) == []


def test_duplicate_filter_delivers_twice(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP))
    d.call("filter_add", {"sender": "pump", "receiver": "r", "action": "duplicate"})
    assert pump(d, "r", [{"n": 1}])["results"] == ["ok"]
    wait_until(lambda: ns(journal) == [1, 1], message="handled twice")


def test_filter_list_shows_what_is_installed(start_daemon):
    d = start_daemon(tree_toml(actor_toml("r"), PUMP))
    assert d.call("filter_list") == {"filters": []}
    one = d.call("filter_add", {"sender": "pump", "receiver": "r", "action": "drop",
                                "rate": 0.5})["id"]
    two = d.call("filter_add", {"receiver": "r*", "message_type": "slow", "action": "delay",
                                "delay": 2})["id"]
    listed = {f["id"]: f for f in d.call("filter_list")["filters"]}
    assert set(listed) == {one, two}
    assert {k: listed[one][k] for k in ("sender", "receiver", "message_type", "action", "rate",
                                        "delay")} == {
        "sender": "pump", "receiver": "r", "message_type": None, "action": "drop", "rate": 0.5,
        "delay": None}
    assert {k: listed[two][k] for k in ("sender", "receiver", "message_type", "action", "rate",
                                        "delay")} == {
        "sender": None, "receiver": "r*", "message_type": "slow", "action": "delay", "rate": 1.0,
        "delay": 2.0}
    assert d.call("filter_remove", {"all": True}) == {"removed": 2}
    assert d.call("filter_list") == {"filters": []}
    # the fields alysd.control documents for filter_list
    assert set(listed[one]) == {"id", "sender", "receiver", "message_type", "action", "rate",
                                "delay", "matched"}
