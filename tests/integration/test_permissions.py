"""Actor permissions on real processes: the sender refuses, and so does the receiver."""

from __future__ import annotations

import msgspec
import pytest
import zmq

from alysd import zmq_bus
from alysd.errors import HandlerError
from alysd.testing import wait_until
from tests.conftest import actor_toml, tree_toml


def config(environment: str) -> str:
    return f'environment = "{environment}"\n' + tree_toml(
        actor_toml("a") + '[actors.a.permissions]\nsend_to = ["b"]\n',
        actor_toml("b"), actor_toml("c"))


def ask(d, to: str):
    return d.request("a", {"op": "ask", "to": to, "msg": {"op": "echo", "v": to}})


def test_an_actor_may_send_only_where_its_permissions_say(start_daemon):
    d = start_daemon(config("staging"))
    assert ask(d, "b") == "b"
    with pytest.raises(HandlerError, match=r"PermissionDenied: a may send only to b"):
        ask(d, "c")
    letter = wait_until(lambda: next((x for x in d.call("dead_letters", {"limit": None})["letters"]
                                      if x["reason"] == "denied"), None),
                        message="the denied message dead-lettered")
    assert (letter["sender"], letter["target"]) == ("a", "c")
    assert d.call("dead_letters", {"limit": None})["by_reason"]["denied"] == 1


def test_the_receiver_checks_again_whatever_the_sending_process_does(start_daemon):
    d = start_daemon(config("staging"))
    zctx = zmq.Context()
    # A process speaking for "a" without its courier: c still refuses it.
    sock = zmq_bus.connect_dealer(zctx, d.rundir.inbox("c"), "a")
    try:
        sock.send(zmq_bus.encode_envelope(zmq_bus.Kind.ASK, 5, {"op": "echo", "v": 1},
                                          sender="a", target="c"))
        assert sock.poll(10_000)
        env = zmq_bus.decode_envelope(sock.recv(), 1 << 20)
        error = msgspec.msgpack.decode(env.payload, type=zmq_bus.ErrorInfo)
        assert (env.kind, error.kind) == (zmq_bus.Kind.ERROR, "PermissionDenied")
        assert "a may send only to b" in error.message
    finally:
        sock.close(linger=0)
        zctx.term()
    assert "denied message 5: a may send only to b" in d.log()


def test_in_development_a_denial_is_only_logged(start_daemon):
    d = start_daemon(config("development"))
    assert ask(d, "c") == "c"
    wait_until(lambda: "would be denied outside development: a may send only to b" in d.log(),
               message="the would-be denial logged")


def test_a_reload_changes_permissions_without_a_restart(start_daemon):
    d = start_daemon(config("staging"))
    pids = {name: row["pid"] for name, row in d.status().items()}
    with open(d.config_path, "w") as f:
        f.write(config("staging").replace('send_to = ["b"]', 'send_to = ["b", "c"]'))
    report = d.call("reload", {"dry_run": False}, timeout=60)
    assert report["updated_live"] == {"a": ["permissions"]} and report["restarted"] == {}
    assert ask(d, "c") == "c"
    assert {name: row["pid"] for name, row in d.status().items()} == pids
