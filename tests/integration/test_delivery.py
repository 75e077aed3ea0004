"""Delivery as a user sees it: priorities, backpressure policies, at-least-once
redelivery across SIGKILL, poison quarantine, expiry, and hostile frames."""

from __future__ import annotations

import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alysd import zmq_bus
from alysd.ctl import ControlClient
from alysd.dead_letters import DeadLetterQueue
from alysd.errors import AlysdError, HandlerError, ProtocolError
from alysd.testing import run_daemon, wait_until
from alysd.zmq_bus import Kind
from tests.conftest import REPO, actor_toml, tree_toml

PUMP = actor_toml("pump", cls="tests.actors:Pump")


def recorder(name: str, journal, **keys) -> str:
    return actor_toml(name, cls="tests.actors:Recorder", config={"journal": str(journal)}, **keys)


def records(journal) -> list[dict]:
    """What the Recorder journaled so far (a line still being written is skipped)."""
    try:
        lines = journal.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def ns(journal) -> list[int]:
    return [r["m"]["n"] for r in records(journal)]


def pump(d, to: str, msgs: list, **kw) -> dict:
    return d.request("pump", {"to": to, "msgs": msgs, **kw}, timeout=15.0)


def letters(d, reason: str | None = None) -> list[dict]:
    """Dead letters, oldest first (optionally of one reason)."""
    listed = d.call("dead_letters", {"limit": 1000})["letters"][::-1]
    return [x for x in listed if reason is None or x["reason"] == reason]


def busy(d, journal, release, sender: str = "a") -> None:
    """Make ``r`` busy: ``sender`` tells it {"n": 0, "hold": release}; wait until it handles it."""
    assert d.request(sender, {"op": "send", "to": "r",
                              "msg": {"n": 0, "hold": str(release)}}) == "sent"
    wait_until(lambda: ns(journal) == [0], message="r busy with its first message")


def test_higher_priority_first_and_fifo_within_a_priority(start_daemon, tmp_path):
    journal, release = tmp_path / "journal", tmp_path / "release"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP, actor_toml("a")))
    busy(d, journal, release)
    sent = []
    for n, priority in enumerate(["low", "normal", "high", "critical"] * 3, start=1):
        assert pump(d, "r", [{"n": n}], priority=priority)["results"] == ["ok"]
        sent.append((n, ["low", "normal", "high", "critical"].index(priority)))
    release.touch()
    got = wait_until(lambda: len(rs := records(journal)) == 13 and rs, message="13 handled")[1:]
    assert [(r["m"]["n"], r["priority"]) for r in got] == sorted(sent, key=lambda s: (-s[1], s[0]))


def test_fail_policy_raises_mailbox_full_to_the_sender_at_once(start_daemon, tmp_path):
    d, journal, release = mailbox_daemon(start_daemon, tmp_path, {"capacity": 3, "backpressure": "fail"})
    busy(d, journal, release)
    out = pump(d, "r", [{"n": n} for n in range(1, 11)])
    accepted = [n for n, res in zip(range(1, 11), out["results"]) if res == "ok"]
    refused = [n for n, res in zip(range(1, 11), out["results"]) if res == "MailboxFull"]
    assert 1 <= len(accepted) <= 3 and accepted + refused == list(range(1, 11))
    assert out["elapsed"] < 1.0  # refused at once, not after waiting for room
    dead = wait_until(lambda: len(x := letters(d, "mailbox_full")) == len(refused) and x,
                      message="refused messages dead-lettered")
    assert [x["payload"]["n"] for x in dead] == refused
    assert {(x["sender"], x["target"]) for x in dead} == {("pump", "r")}
    release.touch()
    wait_until(lambda: ns(journal) == [0, *accepted], message="accepted messages handled")


def mailbox_daemon(start_daemon, tmp_path, mailbox: dict):
    """A daemon with a Recorder ``r`` of that ``[mailbox]`` table, a Pump and a
    Probe ``a``; returns it with r's journal and the file that releases r."""
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal, mailbox=mailbox), PUMP, actor_toml("a")))
    return d, journal, tmp_path / "release"


def flood_a_busy_receiver(d, journal, release, reason: str) -> tuple[list[int], list[int]]:
    """Ten messages to a busy ``r`` of capacity 3; once it is released and every
    message is handled or dead-lettered for ``reason``: the two lists of n."""
    busy(d, journal, release)
    assert pump(d, "r", [{"n": n} for n in range(1, 11)])["results"] == ["ok"] * 10
    release.touch()

    def settled():
        handled = ns(journal)[1:]
        dropped = [x["payload"]["n"] for x in letters(d, reason)]
        return len(handled) + len(dropped) == 10 and (handled, dropped)
    return wait_until(settled, message="every message handled or dead-lettered")


def test_drop_newest_dead_letters_the_newest_without_an_error(start_daemon, tmp_path):
    d, journal, release = mailbox_daemon(start_daemon, tmp_path, {"capacity": 3, "backpressure": "drop_newest"})
    handled, dropped = flood_a_busy_receiver(d, journal, release, "dropped_newest")
    assert dropped and sorted(handled + dropped) == list(range(1, 11))
    assert handled == sorted(handled) and max(handled) < min(dropped)  # the newest went
    assert len(handled) <= 3


def test_drop_oldest_keeps_the_newest(start_daemon, tmp_path):
    d, journal, release = mailbox_daemon(start_daemon, tmp_path, {"capacity": 3, "backpressure": "drop_oldest"})
    handled, dropped = flood_a_busy_receiver(d, journal, release, "dropped_oldest")
    assert handled == [8, 9, 10]
    assert dropped == list(range(1, 8))
    assert {x["target"] for x in letters(d, "dropped_oldest")} == {"r"}


def test_block_policy_delivers_everything_as_the_receiver_frees_room(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(
        recorder("r", journal, mailbox={"capacity": 3, "backpressure": "block"}), PUMP))
    out = pump(d, "r", [{"n": n, "sleep": 0.05} for n in range(10)])
    assert out["results"] == ["ok"] * 10
    assert out["elapsed"] >= 0.25  # the sender waited for room instead of overfilling r
    wait_until(lambda: ns(journal) == list(range(10)), message="all 10 handled in order")
    assert d.call("dead_letters")["count"] == 0


def test_block_policy_times_out_with_mailbox_full(start_daemon, tmp_path):
    d, journal, release = mailbox_daemon(start_daemon, tmp_path, {"capacity": 2, "backpressure": "block"})
    busy(d, journal, release)
    out = pump(d, "r", [{"n": n} for n in (1, 2, 3)], timeout=0.3)
    assert out["results"] == ["ok", "ok", "MailboxFull"]
    assert 0.3 <= out["elapsed"] < 3.0  # waited its own timeout, not for r
    dead = wait_until(lambda: letters(d, "mailbox_full"), message="mailbox_full dead letter")
    assert [x["payload"] for x in dead] == [{"n": 3}]
    assert dead[0]["sender"] == "pump" and "waited" in dead[0]["detail"]
    release.touch()
    wait_until(lambda: ns(journal) == [0, 1, 2], message="accepted messages handled")


def test_at_least_once_redelivers_what_a_killed_receiver_held(start_daemon, tmp_path):
    journal, release = tmp_path / "journal", tmp_path / "release"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP, max_retries=10))
    msgs = [{"n": 0, "sleep": 0.2}, {"n": 1, "hold": str(release)}]
    msgs += [{"n": n} for n in range(2, 20)]
    assert pump(d, "r", msgs)["results"] == ["ok"] * 20
    # r is busy with message 1; the rest wait in its mailbox
    wait_until(lambda: ns(journal) == [0, 1], message="r holding message 1")
    wait_until(lambda: d.status()["r"]["mailbox_depth"] > 0, message="a backlog in r's mailbox")
    os.kill(d.status()["r"]["pid"], signal.SIGKILL)
    release.touch()

    def redelivered():
        second = [r for r in records(journal) if r["incarnation"] >= 2]
        return set(range(1, 20)) <= {r["m"]["n"] for r in second} and second
    second = wait_until(redelivered, message="r's next incarnation handled what it held")
    assert set(ns(journal)) == set(range(20))                   # nothing lost
    assert all(r["retry"] >= 1 for r in second)                  # marked as redeliveries
    assert [r["m"]["n"] for r in second] == sorted(r["m"]["n"] for r in second)  # in order
    assert d.status()["r"]["restarts"] == 1
    assert d.call("dead_letters")["count"] == 0


def test_a_request_whose_target_is_killed_is_answered_by_the_next_incarnation(
        start_daemon, tmp_path):
    journal, release = tmp_path / "journal", tmp_path / "release"
    d = start_daemon(tree_toml(recorder("r", journal), actor_toml("a"), max_retries=10))
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(d.request, "a", {"op": "ask", "to": "r", "timeout": 8.0,
                                             "msg": {"n": 1, "hold": str(release)}}, 10.0)
        wait_until(lambda: ns(journal) == [1], message="r handling the request")
        os.kill(d.status()["r"]["pid"], signal.SIGKILL)
        release.touch()
        answer = reply.result(timeout=10)
    assert answer["name"] == "r" and answer["incarnation"] == 2 and answer["retry"] == 1


def test_a_message_that_keeps_killing_its_handler_is_quarantined_as_poison(
        start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal, mailbox={"max_retries": 2}), PUMP,
                               max_retries=10))
    msgs = [{"n": 0, "die": True}, {"n": 1}, {"n": 2}]
    assert pump(d, "r", msgs)["results"] == ["ok"] * 3
    poison = wait_until(lambda: letters(d, "poison"), message="poison dead letter")
    assert [x["payload"] for x in poison] == [{"n": 0, "die": True}]
    assert poison[0]["sender"] == "pump" and poison[0]["target"] == "r"
    wait_until(lambda: {1, 2} <= set(ns(journal)), message="later messages handled")
    attempts = [r["retry"] for r in records(journal) if r["m"]["n"] == 0]
    assert attempts == [0, 1]  # max_retries incarnations died on it, then no more
    assert pump(d, "r", [{"n": 3}])["results"] == ["ok"]
    wait_until(lambda: ns(journal)[-1] == 3, message="r still handles messages")
    row = d.status()["r"]
    assert row["state"] == "running" and row["restarts"] == 2


def test_an_expired_request_is_dead_lettered_not_handled(start_daemon, tmp_path):
    journal, release = tmp_path / "journal", tmp_path / "release"
    d = start_daemon(tree_toml(recorder("r", journal), actor_toml("a")))
    busy(d, journal, release)
    with pytest.raises(HandlerError, match="RequestTimeout"):
        d.request("a", {"op": "ask", "to": "r", "msg": {"n": 1}, "timeout": 0.3})
    release.touch()
    assert d.request("a", {"op": "send", "to": "r", "msg": {"n": 2}}) == "sent"
    wait_until(lambda: ns(journal)[-1:] == [2], message="r handled the next message")
    assert ns(journal) == [0, 2]  # the expired request was never handled
    expired = wait_until(lambda: letters(d, "expired"), message="expired dead letter")
    assert [(x["payload"], x["sender"], x["target"], x["kind"]) for x in expired] == [
        ({"n": 1}, "a", "r", "ask")]


def test_status_mailbox_depth_shows_the_backlog(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP))
    assert d.status()["r"]["mailbox_depth"] == 0
    assert pump(d, "r", [{"n": n, "sleep": 0.1} for n in range(8)])["results"] == ["ok"] * 8
    depth = wait_until(lambda: d.status()["r"]["mailbox_depth"], message="a backlog")
    assert 0 < depth <= 8
    wait_until(lambda: len(ns(journal)) == 8, message="backlog handled")
    wait_until(lambda: d.status()["r"]["mailbox_depth"] == 0, timeout=2, message="depth 0")


def test_at_most_once_still_delivers_normally(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal, mailbox={"delivery": "at_most_once"}),
                               PUMP, actor_toml("a")))
    assert pump(d, "r", [{"n": n} for n in range(20)])["results"] == ["ok"] * 20
    wait_until(lambda: ns(journal) == list(range(20)), message="20 handled in order")
    assert d.request("a", {"op": "ask", "to": "r", "msg": {"n": 20}})["name"] == "r"
    assert all(r["retry"] == 0 for r in records(journal))


def test_send_to_an_unknown_actor_raises_and_is_dead_lettered(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a")))
    with pytest.raises(HandlerError, match="UnknownActor"):
        d.request("a", {"op": "send", "to": "ghost", "msg": {"x": 1}})
    dead = wait_until(lambda: letters(d, "unknown_actor"), message="unknown_actor dead letter")
    assert [(x["sender"], x["target"], x["payload"]) for x in dead] == [("a", "ghost", {"x": 1})]
    assert d.call("dead_letters")["by_reason"] == {"unknown_actor": 1}


def test_system_mail_during_traffic_costs_no_message_and_no_actor(start_daemon):
    """Filter changes reach every actor as system mail, announced by a signal; one
    that lands while an actor takes a message off its socket must not lose the
    message or crash the actor."""
    d = start_daemon(tree_toml(PUMP, actor_toml("r"), max_retries=10))
    pids = {name: row["pid"] for name, row in d.status().items()}
    stop = threading.Event()

    def churn():
        client = ControlClient(d.rundir)
        while not stop.is_set():
            rule = client.call("filter_add", {"receiver": "nobody*", "action": "drop"})
            client.call("filter_remove", {"id": rule["id"]})
    with ThreadPoolExecutor(1) as pool:
        churning = pool.submit(churn)
        try:
            for first in range(0, 500, 25):
                out = d.request("pump", {"to": "r", "msgs": list(range(first, first + 25))},
                                timeout=5.0)
                assert out["results"] == ["ok"] * 25
        finally:
            stop.set()
        churning.result()
    wait_until(lambda: d.request("r", {"op": "received"}) == list(range(500)), timeout=5,
               message="500 messages at r, in order")
    assert {name: row["pid"] for name, row in d.status().items()} == pids


# --- hostile frames ---------------------------------------------------------------------------

_VALID = zmq_bus.encode_envelope(Kind.TELL, 1, {"x": 1}, sender="fuzz", target="p")
_DELIVERABLE = {Kind.TELL, Kind.ASK, Kind.EVENT, Kind.BATCH}
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=16)
_frames = st.one_of(
    st.binary(max_size=200),                                        # noise
    st.integers(0, len(_VALID) - 1).map(lambda n: _VALID[:n]),       # a truncated envelope
    _values.map(zmq_bus.encode),                                     # msgpack, no envelope
    st.sampled_from([Kind.REPLY, Kind.ERROR, Kind.ACK]).map(         # not for an inbox
        lambda k: zmq_bus.encode_envelope(k, 7, 1, sender="fuzz", target="p")),
)


def _deliverable(message: list[bytes]) -> bool:
    if len(message) != 1:
        return False
    try:
        return zmq_bus.decode_envelope(message[0], 1 << 20).kind in _DELIVERABLE
    except ProtocolError:
        return False


def test_garbage_frames_are_dead_lettered_and_the_actor_keeps_serving(start_daemon):
    d = start_daemon(tree_toml(actor_toml("p")))
    pid = d.status()["p"]["pid"]
    zctx = zmq.Context()
    sock = zmq_bus.connect_dealer(zctx, d.rundir.inbox("p"), "fuzz")
    sent = 0
    try:
        @settings(max_examples=30, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(st.lists(_frames, min_size=1, max_size=3), min_size=1, max_size=4))
        def garbage_is_survived(messages):
            nonlocal sent
            for message in messages:
                if not _deliverable(message):
                    sock.send_multipart(message)
                    sent += 1
            assert d.request("p", {"op": "echo", "v": "alive"}) == "alive"

        garbage_is_survived()
        assert sent > 0
    finally:
        sock.close(linger=0)
        zctx.term()
    assert d.status()["p"]["pid"] == pid
    wait_until(lambda: d.call("dead_letters", {"limit": 0})["by_reason"].get("rejected") == sent,
               message=f"{sent} rejected frames dead-lettered")
    newest = d.call("dead_letters", {"limit": 1})["letters"][0]
    assert (newest["reason"], newest["sender"], newest["target"]) == ("rejected", "fuzz", "p")
    assert d.request("p", {"op": "pid"}) == pid


def test_messages_a_killed_sender_had_just_sent_still_arrive(start_daemon, tmp_path):
    """ZeroMQ queues a frame inside the sender before writing it out: a sender
    SIGKILLed right after ``send`` would take the frame with it. Its next
    incarnation re-sends what its outbox journal still holds."""
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(recorder("r", journal), PUMP, max_retries=10))
    with pytest.raises(AlysdError):
        d.request("pump", {"to": "r", "msgs": [{"n": n} for n in range(1000)],
                           "then_die": True}, timeout=15.0)
    wait_until(lambda: set(ns(journal)) == set(range(1000)), timeout=15,
               message="every message the killed sender had sent")
    assert not letters(d)


def test_what_is_undelivered_when_alysd_stops_is_dead_lettered(short_tmp, tmp_path):
    journal = tmp_path / "journal"
    state = os.path.join(short_tmp, "state")
    config = tree_toml(recorder("r", journal), PUMP)
    with run_daemon(config, python_path=[REPO], state_dir=state) as d:
        d.call("stop", {"name": "r"})
        assert pump(d, "r", [{"n": n} for n in range(5)])["results"] == ["ok"] * 5
    with DeadLetterQueue(os.path.join(state, "dead-letters")) as queue:
        stranded = queue.list()
    assert sorted(zmq_bus.decode_any(zmq_bus.decode_envelope(x.frame, 1 << 20).payload)["n"]
                  for x in stranded) == list(range(5))
    assert {(x.reason, x.sender, x.target) for x in stranded} == {("timeout", "pump", "r")}
    assert all(x.detail == "not delivered when alysd stopped" for x in stranded)


# --- group commit -----------------------------------------------------------------------------

def test_commit_runs_before_receipts_once_for_a_batch(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(actor_toml("c", cls="tests.actors:Committer",
                                          config={"journal": str(journal)}), PUMP))
    assert pump(d, "c", [{"n": n} for n in range(20)])["results"] == ["ok"] * 20
    def committed():
        got = records(journal)
        return sum(r.get("commit", 0) for r in got) == 20 and got
    got = wait_until(committed, message="20 messages committed")
    # Each commit covers messages handled before it, and there are fewer
    # commits than messages (they are grouped).
    handled = 0
    for r in got:
        if "commit" in r:
            assert r["commit"] <= handled
            handled -= r["commit"]
        else:
            handled += 1
    assert len([r for r in got if "commit" in r]) < 20


def test_a_failed_commit_ends_the_incarnation_and_the_messages_come_again(start_daemon,
                                                                          tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(actor_toml(
        "c", cls="tests.actors:Committer",
        config={"journal": str(journal), "fail_first_commit": str(tmp_path / "failed")}), PUMP))
    assert pump(d, "c", [{"n": n} for n in range(3)])["results"] == ["ok"] * 3
    wait_until(lambda: sum(r.get("commit", 0) for r in records(journal)) == 3,
               message="the 3 messages committed by the next incarnation")
    handled = [(r["m"]["n"], r["retry"], r["incarnation"]) for r in records(journal) if "m" in r]
    first = {n for n, retry, incarnation in handled if incarnation == 1}
    again = {n: retry for n, retry, incarnation in handled if incarnation == 2}
    assert first and sorted(again) == [0, 1, 2]      # nothing was acknowledged uncommitted
    assert all(again[n] >= 1 for n in first)
    assert d.status()["c"]["restarts"] == 1 and letters(d) == []
