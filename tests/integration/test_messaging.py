"""Request/reply, actor-to-actor messaging, the actor API, through real processes."""

from __future__ import annotations

import os

import psutil
import pytest

from alysd.errors import HandlerError, MessageTooLarge, RequestTimeout, UnknownActor
from alysd.testing import wait_until
from tests.conftest import actor_toml, tree_toml

TWO_PROBES = tree_toml(actor_toml("a"), actor_toml("b"))


def test_every_actor_is_its_own_titled_process_under_alysd(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), actor_toml("b"), actor_toml("c")))
    pids = {name: row["pid"] for name, row in d.status().items()}
    assert len(set(pids.values())) == 3 and d.pid not in pids.values()
    descendants = {p.pid for p in d.descendants()}
    for name, pid in pids.items():
        assert pid in descendants
        proc = psutil.Process(pid)
        assert " ".join(proc.cmdline()).startswith(f"alysd: root/{name}")
        # each actor leads its own process group, so a stop reaches its whole subtree
        assert os.getpgid(pid) == pid
    assert d.request("a", {"op": "pid"}) == pids["a"]


def test_request_reply_carries_any_msgspec_value(start_daemon):
    d = start_daemon(TWO_PROBES)
    for value in [1, -2.5, "text", [1, [2, 3]], {"k": {"n": None}}, True, None]:
        assert d.request("a", {"op": "echo", "v": value}) == value


def test_actor_to_actor_request_stamps_the_real_sender(start_daemon):
    d = start_daemon(TWO_PROBES)
    reply = d.request("a", {"op": "ask", "to": "b", "msg": {"op": "whoami"}})
    assert reply["name"] == "b"
    assert reply["from"] == "a"
    assert reply["supervisor"] == "root" and reply["incarnation"] == 1
    # through the daemon (alysctl's path) the sender is the control plane, not an actor
    assert d.request("b", {"op": "whoami"})["from"] == "$ctl"


def test_handler_exception_is_an_error_reply_and_the_actor_keeps_running(start_daemon):
    d = start_daemon(TWO_PROBES)
    pid = d.status()["a"]["pid"]
    with pytest.raises(HandlerError) as err:
        d.request("a", {"op": "raise", "msg": "bad input 42"})
    assert "ValueError: bad input 42" in str(err.value)
    assert err.value.actor == "a" and err.value.message_id
    assert d.request("a", {"op": "echo", "v": "still here"}) == "still here"
    assert d.status()["a"]["pid"] == pid
    log = wait_until(lambda: "bad input 42" in d.log() and d.log(), message="error logged")
    line = next(line for line in log.splitlines() if "handler failed" in line)
    assert "alysd.actor.a" in line and str(err.value.message_id) in line


def test_actor_to_actor_errors_are_typed(start_daemon):
    d = start_daemon(TWO_PROBES)
    with pytest.raises(HandlerError, match="UnknownActor"):
        # the sender raises UnknownActor at once; it surfaces as the handler's error
        d.request("a", {"op": "ask", "to": "nobody", "msg": 1})
    with pytest.raises(HandlerError, match="ValueError: inner"):
        d.request("a", {"op": "ask", "to": "b", "msg": {"op": "raise", "msg": "inner"}})
    with pytest.raises(UnknownActor, match="nobody"):
        d.request("nobody", 1)


def test_request_timeout_when_the_receiver_does_not_answer_in_time(start_daemon):
    d = start_daemon(TWO_PROBES)
    d.call("stop", {"name": "b"})
    with pytest.raises(HandlerError, match="RequestTimeout"):
        d.request("a", {"op": "ask", "to": "b", "msg": 1, "timeout": 0.2})
    with pytest.raises(RequestTimeout):
        # the relay's own deadline: the actor is busy waiting for b for 2 s
        d.request("a", {"op": "ask", "to": "b", "msg": 1, "timeout": 2.0}, timeout=0.3)


def test_send_is_fire_and_forget_and_arrives_in_order(start_daemon):
    d = start_daemon(TWO_PROBES)
    for i in range(50):
        assert d.request("a", {"op": "send", "to": "b", "msg": i}) == "sent"
    assert wait_until(lambda: d.request("b", {"op": "received"}) == list(range(50)),
                      message="50 messages at b")


def test_publish_reaches_every_subscriber(start_daemon):
    d = start_daemon(tree_toml(actor_toml("pub"),
                               actor_toml("s1", subscribe=["block_imported"]),
                               actor_toml("s2", subscribe=["block_imported", "other"]),
                               actor_toml("deaf")))
    assert d.request("pub", {"op": "publish", "event": "block_imported", "msg": {"h": 7}}) == 2
    assert d.request("pub", {"op": "publish", "event": "nobody_listens", "msg": 1}) == 0
    for name in ("s1", "s2"):
        assert wait_until(lambda name=name: d.request(name, {"op": "received"}) == [{"h": 7}],
                          message=f"event at {name}")
    assert d.request("deaf", {"op": "received"}) == []


def test_async_handler_awaits_requests(start_daemon):
    d = start_daemon(tree_toml(actor_toml("aio", cls="tests.actors:AsyncProbe"), actor_toml("b")))
    assert d.request("aio", "hi") == {"async": True, "echo": "hi", "count": 1}
    reply = d.request("aio", {"ask": "b", "msg": {"op": "echo", "v": 5}})
    assert reply == {"async": True, "reply": 5, "count": 2}


def test_declared_message_type_decodes_structs_and_refuses_others(start_daemon):
    d = start_daemon(tree_toml(actor_toml("ledger", cls="tests.actors:Ledger")))
    assert d.request("ledger", {"type": "Transfer", "amount": 5, "to": "alice"}) == 5
    assert d.request("ledger", {"type": "Transfer", "amount": 2, "to": "alice"}) == 7
    assert d.request("ledger", {"type": "Balance", "account": "alice"}) == 7
    with pytest.raises(HandlerError, match="payload does not match"):
        d.request("ledger", {"type": "Transfer", "amount": "lots", "to": "bob"})
    assert d.request("ledger", {"type": "Balance", "account": "bob"}) == 0


def test_oversized_messages_are_refused_with_a_clear_error(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), actor_toml("b"), system='max_message_bytes = "4KiB"'))
    with pytest.raises(MessageTooLarge, match="4096-byte limit"):
        d.request("a", {"op": "echo", "v": "x" * 5000})
    with pytest.raises(HandlerError, match="MessageTooLarge"):
        d.request("a", {"op": "ask", "to": "b", "pad": 5000})
    # a reply too large for the bus is an error for the requester, not a hang
    with pytest.raises(HandlerError):
        d.request("a", {"op": "ask", "to": "b", "msg": {"op": "big", "n": 5000}})
    assert d.request("a", {"op": "echo", "v": "small"}) == "small"


def test_config_table_reaches_the_actor(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a", config={"url": "http://127.0.0.1:8545",
                                                       "depth": 3, "tags": ["x", "y"]})))
    assert d.request("a", {"op": "config"}) == {"url": "http://127.0.0.1:8545", "depth": 3,
                                                  "tags": ["x", "y"]}


def test_health_and_counters_reach_status(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), system='heartbeat_interval = "50ms"'))
    assert d.status()["a"]["health"] == "healthy"
    d.request("a", {"op": "degrade", "reason": "peer count low"})
    row = wait_until(lambda: (r := d.status()["a"])["health"] == "degraded" and r,
                     message="degraded health")
    assert row["health_reason"] == "peer count low"
    assert row["handled"] >= 1
