"""Hostile and malformed input on every socket: counted, logged, never a crash."""

from __future__ import annotations

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alysd import zmq_bus
from alysd.control import CtlRequest, reply_decoder, request_encoder
from alysd.testing import run_daemon, wait_until
from tests.conftest import REPO, actor_toml, tree_toml

frames = st.lists(st.binary(max_size=64), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def daemon():
    with run_daemon(tree_toml(actor_toml("a"), system='heartbeat_interval = "50ms"'),
                    python_path=[REPO]) as d:
        yield d


@pytest.fixture
def quiet_daemon(start_daemon):
    """A daemon of its own, for tests that read its log line by line: the
    module's daemon is flooded by the garbage tests, and alysd holds back
    repeated lines (alysd.log_format)."""
    return start_daemon(tree_toml(actor_toml("a"), system='heartbeat_interval = "50ms"'))


@pytest.fixture(scope="module")
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _dealer(zctx, path: str, identity: bytes) -> zmq.Socket:
    sock = zctx.socket(zmq.DEALER)
    if identity:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.LINGER, 2000)  # close() must not drop what we just sent
    sock.setsockopt(zmq.RCVTIMEO, 2000)
    sock.connect(zmq_bus.ipc(path))
    return sock


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=frames)
def test_garbage_on_an_actor_inbox_is_rejected_and_the_actor_keeps_serving(daemon, zctx, garbage):
    sock = _dealer(zctx, daemon.rundir.inbox("a"), b"intruder")
    try:
        sock.send_multipart(garbage)
        # A well-formed request after the garbage is still answered, in order.
        sock.send(zmq_bus.encode_envelope(zmq_bus.Kind.ASK, 7, {"op": "echo", "v": "ok"},
                                          sender="intruder", target="a"))
        while True:
            env = zmq_bus.decode_envelope(sock.recv(), 1 << 20)
            if env.correlation_id == 7:
                break
        assert msgspec.msgpack.decode(env.payload) == "ok"
    finally:
        sock.close()


def test_rejections_are_counted_and_logged(quiet_daemon, zctx):
    daemon = quiet_daemon
    sock = _dealer(zctx, daemon.rundir.inbox("a"), b"x")
    sock.send_multipart([b"\x01\x02", b"three", b"frames"])
    sock.send(b"\x93not an envelope")
    sock.close()
    wait_until(lambda: daemon.log().count("rejected a frame from 'x'") == 2, message="logged")
    logged = daemon.log().count("rejected a frame")
    # the counter reaches status with the next heartbeat
    wait_until(lambda: daemon.status()["a"]["errors"] >= logged, message="errors counted")


def test_an_envelope_claiming_another_sender_is_dead_lettered_as_forged(quiet_daemon, zctx):
    daemon = quiet_daemon
    sock = _dealer(zctx, daemon.rundir.inbox("a"), b"mallory")
    try:
        sock.send(zmq_bus.encode_envelope(zmq_bus.Kind.ASK, 9, {"op": "whoami"},
                                          sender="a-trusted-actor", target="a"))
        # Not handled: the honest request after it is the first to be answered.
        sock.send(zmq_bus.encode_envelope(zmq_bus.Kind.ASK, 10, {"op": "whoami"},
                                          sender="mallory", target="a"))
        env = zmq_bus.decode_envelope(sock.recv(), 1 << 20)
        assert env.correlation_id == 10
        assert msgspec.msgpack.decode(env.payload)["from"] == "mallory"
    finally:
        sock.close()
    letter = wait_until(lambda: next((x for x in daemon.call("dead_letters", {"limit": None})
                                      ["letters"] if x["reason"] == "forged"), None),
                        message="the forged envelope dead-lettered")
    assert (letter["sender"], letter["target"], letter["message_id"]) == ("mallory", "a", 9)
    assert "claims to come from 'a-trusted-actor'" in letter["detail"]
    assert "rejected a frame from 'mallory': claims to come from" in daemon.log()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=frames)
def test_garbage_on_the_control_and_system_sockets_never_stops_the_daemon(daemon, zctx, garbage):
    for path in (daemon.rundir.control, daemon.rundir.system):
        sock = _dealer(zctx, path, b"")
        sock.send_multipart(garbage)
        sock.close()
    ctl = _dealer(zctx, daemon.rundir.control, b"")
    try:
        ctl.send(request_encoder.encode(CtlRequest(1, "status")))
        reply = reply_decoder.decode(ctl.recv())
        assert reply.ok
    finally:
        ctl.close()


def test_unknown_control_command_is_an_error_reply(daemon, zctx):
    ctl = _dealer(zctx, daemon.rundir.control, b"")
    try:
        ctl.send(request_encoder.encode(CtlRequest(5, "rm -rf /")))
        reply = reply_decoder.decode(ctl.recv())
        assert not reply.ok and reply.id == 5
        assert "unknown command" in reply.error.message
        ctl.send(request_encoder.encode(CtlRequest(6, "restart", {"wrong": 1})))
        reply = reply_decoder.decode(ctl.recv())
        assert not reply.ok and "bad arguments for restart" in reply.error.message
    finally:
        ctl.close()
    assert daemon.proc.poll() is None


def test_rejected_control_frames_are_counted(daemon, zctx):
    before = daemon.call("version")["rejected_frames"]
    sock = _dealer(zctx, daemon.rundir.control, b"")
    sock.send(b"\xc1 not a request")
    sock.close()
    wait_until(lambda: daemon.call("version")["rejected_frames"] > before, message="counted")


def test_a_peer_sending_far_oversized_frames_is_cut_off_and_the_actor_keeps_serving(daemon, zctx):
    sock = _dealer(zctx, daemon.rundir.inbox("a"), b"flood")
    sock.send(b"\0" * (16 * 1024 * 1024 + zmq_bus.OVERSIZE_SLACK + 1))
    sock.close()
    assert daemon.request("a", {"op": "echo", "v": "fine"}) == "fine"
    assert daemon.status()["a"]["state"] == "running"
