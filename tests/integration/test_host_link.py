"""The host link between two real alysd daemons on loopback TCP: messages cross
with their origin; forged, altered, old and replayed frames are refused and
counted; a node that is down gets its messages when it comes back, even
across a restart of the sender's link; sensitive messages go only over CURVE."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import msgspec
import pytest
import zmq

from alysd import seal
from alysd.curve import generate_keypair, load_secret
from alysd.errors import HandlerError, NoDaemon
from alysd.testing import wait_until
from tests.conftest import _toml, actor_toml, tree_toml

LINK = "alysd.host_link:HostLink"


def free_port() -> int:
    """A port nothing listens on now (for a node that must keep its port across
    restarts, or be known before it starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_toml(name: str, port: int, key: str, *actors: str, peers: list[dict] = (),
              network: str = "", environment: str = "development", link: dict | None = None
              ) -> str:
    link_keys = {"uses": ["network"], **(link or {})}
    text = f'environment = "{environment}"\n' + tree_toml(
        actor_toml("link", LINK, **link_keys), *actors)
    text += (f'\n[network]\nnode_name = "{name}"\nlisten = "127.0.0.1:{port}"\n'
             f'network_key_file = "{key}"\npeers = {_toml(list(peers))}\n{network}')
    return text


def recorder(journal) -> str:
    return actor_toml("chain", "tests.actors:Recorder", config={"journal": str(journal)})


SENDER = actor_toml("sender", "tests.actors:RemoteSender")


def lines(journal) -> list[dict]:
    try:
        with open(journal) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def status(d) -> dict:
    return d.request("link", {"type": "link_status"})


def send(d, node: str, to: str, message, sensitive: bool = False):
    return d.request("sender", {"node": node, "to": to, "message": message,
                                "sensitive": sensitive})


# Tests ask for start_daemon after short_tmp: daemons end before their files go.
@pytest.fixture
def key(short_tmp) -> str:
    path = os.path.join(short_tmp, "network.key")
    seal.generate_network_key(path)
    return path


def test_a_message_crosses_to_another_node_with_its_origin(short_tmp, key, start_daemon):
    journal = os.path.join(short_tmp, "journal")
    port = free_port()
    bob = start_daemon(node_toml("bob", port, key, recorder(journal)))
    alice = start_daemon(node_toml("alice", 0, key, SENDER,
                                   peers=[{"name": "bob", "address": f"127.0.0.1:{port}"}]))
    assert send(alice, "bob", "chain", {"block": 7}) == "sent"
    got = wait_until(lambda: lines(journal), message="the message on bob")
    assert [(r["m"], r["from"], r["origin"]) for r in got] == [
        ({"block": 7}, "link", "sender@alice")]
    done = wait_until(lambda: (s := status(alice))["acknowledged"] == 1 and s,
                      message="bob's acknowledgement")
    assert done["peers"]["bob"]["pending"] == 0 and done["sent"] == 1
    assert status(bob)["received"] == 1
    assert alice.status()["link"]["health"] == "healthy"


def data_frame(key: bytes, message, *, origin="mallory", message_id=None, sealed_at=None,
               to="chain") -> bytes:
    """A DATA frame sealed by hand."""
    header = seal.LinkHeader(kind=seal.LinkKind.DATA, origin=origin,
                             message_id=message_id or seal.new_message_id(),
                             sealed_at=time.time_ns() if sealed_at is None else sealed_at,
                             from_actor="x", to_actor=to)
    return seal.seal(key, header, msgspec.msgpack.encode(message))


class Hostile:
    """A raw client of a node's link port, speaking the wire by hand."""

    def __init__(self, port: int, origin: str = "mallory"):
        self.zctx = zmq.Context()
        self.sock = self.zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, origin.encode())
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def ack(self, key: bytes, timeout: float = 10.0) -> seal.LinkHeader:
        if not self.sock.poll(timeout * 1000):
            raise TimeoutError("no acknowledgement")
        return seal.Opener(key, window=30, capacity=10, max_bytes=1 << 20, floor=0).open(
            self.sock.recv()).header

    def close(self):
        self.sock.close(linger=0)
        self.zctx.term()


def test_forged_altered_old_and_replayed_frames_are_refused_and_counted(short_tmp, key,
                                                                        start_daemon):
    journal = os.path.join(short_tmp, "journal")
    bob = start_daemon(node_toml("bob", 0, key, recorder(journal)))
    port = status(bob)["listen"][1]
    secret = seal.load_network_key(key)
    hostile = Hostile(port)
    try:
        genuine = data_frame(secret, {"n": 1})
        hostile.sock.send(genuine)
        acked = hostile.ack(secret)
        assert acked.kind is seal.LinkKind.ACK and acked.origin == "bob"
        first_id = msgspec.msgpack.decode(msgspec.msgpack.decode(
            genuine, type=seal.Sealed).header, type=seal.LinkHeader).message_id
        assert acked.acks == (first_id,)

        outer = msgspec.msgpack.decode(genuine, type=seal.Sealed)
        altered = msgspec.msgpack.encode(seal.Sealed(            # another payload, same MAC
            outer.version, outer.header, msgspec.msgpack.encode({"n": 1000}), outer.mac))
        now = time.time_ns()
        for frame in [genuine,                                    # replayed
                      altered,                                    # bad_mac
                      data_frame(b"k" * 32, {"n": 2}),         # bad_mac: another network
                      data_frame(secret, {"n": 3}, sealed_at=now - 60 * 10**9),   # stale
                      data_frame(secret, {"n": 4}, sealed_at=now + 60 * 10**9),   # future
                      b"\x93garbage"]:                            # malformed
            hostile.sock.send(frame)
        hostile.sock.send_multipart([b"one", b"two"])             # malformed: 3 frames
        # A key holder's payload nested past the decoder's depth: refused, twice.
        nested = seal.seal(secret, seal.LinkHeader(
            kind=seal.LinkKind.DATA, origin="mallory", message_id=seal.new_message_id(),
            sealed_at=time.time_ns(), from_actor="x", to_actor="chain"), b"\x91" * 5000 + b"\xc0")
        hostile.sock.send(nested)
        hostile.sock.send(nested)     # not taken the first time: refused again, not a replay
        # The same message re-sealed (a sender that missed the acknowledgement):
        # acknowledged again, not delivered twice.
        hostile.sock.send(data_frame(secret, {"n": 1}, message_id=first_id))
        assert hostile.ack(secret).acks == (first_id,)
        expected = {"replayed": 1, "bad_mac": 2, "stale": 1, "future": 1, "malformed": 4}
        try:
            counts = wait_until(lambda: (s := status(bob))["refused"] == expected and s,
                                message="every refusal counted")
        except TimeoutError:
            raise AssertionError(f"refused: {status(bob)['refused']}, expected {expected}")
        assert counts["received"] == 1 and counts["duplicates"] == 1
        assert not hostile.sock.poll(0)          # nothing acknowledged but the genuine one
    finally:
        hostile.close()
    assert bob.call("dead_letters")["count"] == 0
    assert [r["m"] for r in lines(journal)] == [{"n": 1}]
    assert bob.status()["link"]["state"] == "running" and bob.proc.poll() is None
    assert "refused a frame from another host (bad_mac)" in bob.log()


def test_messages_for_a_node_that_is_down_wait_for_it_even_across_a_link_restart(
        short_tmp, key, start_daemon):
    journal = os.path.join(short_tmp, "journal")
    port = free_port()
    alice = start_daemon(node_toml("alice", 0, key, SENDER,
                                   peers=[{"name": "bob", "address": f"127.0.0.1:{port}"}]))
    for n in range(3):
        send(alice, "bob", "chain", {"n": n})
    wait_until(lambda: status(alice)["peers"]["bob"]["pending"] == 3, message="3 pending")
    old_pid = alice.status()["link"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: (row := alice.status()["link"])["state"] == "running"
               and row["pid"] != old_pid, message="a new link process")
    assert status(alice)["peers"]["bob"]["pending"] == 3     # read back from its outbox
    start_daemon(node_toml("bob", port, key, recorder(journal)))
    wait_until(lambda: sorted(r["m"]["n"] for r in lines(journal)) == [0, 1, 2],
               timeout=20, message="the 3 messages on bob")
    wait_until(lambda: status(alice)["peers"]["bob"]["pending"] == 0, message="all acknowledged")
    assert len(lines(journal)) == 3


def test_what_comes_in_goes_only_where_the_links_permissions_allow(short_tmp, key,
                                                                    start_daemon):
    journal = os.path.join(short_tmp, "journal")
    vault = os.path.join(short_tmp, "vault")
    port = free_port()
    bob = start_daemon(node_toml(
        "bob", port, key, recorder(journal),
        actor_toml("vault", "tests.actors:Recorder", config={"journal": vault}),
        environment="staging", link={"permissions": {"send_to": ["chain"]}}))
    alice = start_daemon(node_toml("alice", 0, key, SENDER,
                                   peers=[{"name": "bob", "address": f"127.0.0.1:{port}"}]))
    for to in ("vault", "nobody", "link", "chain"):
        send(alice, "bob", to, {"to": to})
    wait_until(lambda: lines(journal), message="the message for chain")
    # Every one is acknowledged: refusing again on a retransmission would not help.
    wait_until(lambda: status(alice)["acknowledged"] == 4, message="4 acknowledgements")
    letters = wait_until(lambda: (r := bob.call("dead_letters"))["count"] == 3 and r,
                         message="3 dead letters on bob")
    assert sorted((letter["reason"], letter["target"]) for letter in letters["letters"]) == [
        ("denied", "vault"), ("unknown_actor", "link"), ("unknown_actor", "nobody")]
    assert lines(vault) == []


def test_sensitive_messages_go_only_over_curve(short_tmp, key, start_daemon):
    journal = os.path.join(short_tmp, "journal")
    alice_key, bob_key = (os.path.join(short_tmp, f"{n}.curve") for n in ("alice", "bob"))
    alice_pub, bob_pub = generate_keypair(alice_key), generate_keypair(bob_key)
    alice_port, bob_port, carol_port = free_port(), free_port(), free_port()
    curve = lambda own: f'curve_secret_file = "{own}"\n'
    bob = start_daemon(node_toml(
        "bob", bob_port, key, recorder(journal), network=curve(bob_key),
        peers=[{"name": "alice", "address": f"127.0.0.1:{alice_port}", "public_key": alice_pub}]))
    alice = start_daemon(node_toml(
        "alice", alice_port, key, SENDER, network=curve(alice_key),
        peers=[{"name": "bob", "address": f"127.0.0.1:{bob_port}", "public_key": bob_pub},
               {"name": "carol", "address": f"127.0.0.1:{carol_port}"}]))
    send(alice, "bob", "chain", {"secret": 1}, sensitive=True)
    got = wait_until(lambda: lines(journal), message="the sensitive message on bob")
    assert [(r["m"], r["origin"]) for r in got] == [({"secret": 1}, "sender@alice")]
    assert status(alice)["peers"]["bob"]["curve"] is True

    send(alice, "carol", "chain", {"secret": 2}, sensitive=True)   # carol is plain TCP
    letters = wait_until(lambda: (r := alice.call("dead_letters"))["count"] == 1 and r,
                         message="the refused message dead-lettered")
    assert letters["letters"][0]["reason"] == "denied"
    assert "not reached over CURVE" in letters["letters"][0]["detail"]
    assert status(alice)["peers"]["carol"]["pending"] == 0

    # A peer's CURVE key speaks for that peer only.
    zctx = zmq.Context()
    sock = zctx.socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey = load_secret(alice_key)
    sock.curve_serverkey = bob_pub.encode()
    sock.connect(f"tcp://127.0.0.1:{bob_port}")
    try:
        sock.send(data_frame(seal.load_network_key(key), {"forged": 1}, origin="carol"))
        wait_until(lambda: status(bob)["refused"] == {"forged": 1}, message="forged refused")
    finally:
        sock.close(linger=0)
        zctx.term()
    assert len(lines(journal)) == 1


def test_a_link_without_the_network_key_is_failed_not_restarted_in_a_loop(start_daemon):
    text = tree_toml(actor_toml("link", LINK, uses=["network"]),
                     actor_toml("other", "tests.actors:Probe"))
    d = start_daemon(text, wait=False)

    def failed():
        try:
            row = d.status().get("link", {})
        except NoDaemon:
            return None
        return row.get("state") == "failed" and row
    row = wait_until(failed, timeout=20, message="the link failed")
    assert row["last_exit"]["code"] == 78 and row["restarts"] == 0
    assert "network.network_key_file is not set" in d.log()
    d.wait_running(["other"])


def test_a_message_for_an_unknown_node_is_dead_lettered(key, start_daemon):
    alice = start_daemon(node_toml("alice", 0, key, SENDER))
    with pytest.raises(HandlerError, match="UnknownActor"):
        alice.request("link", {"type": "remote", "node": "zed", "to": "chain", "message": 1})
    letters = wait_until(lambda: (r := alice.call("dead_letters"))["count"] == 1 and r,
                         message="an unknown_actor dead letter")
    assert letters["letters"][0]["reason"] == "unknown_actor"
    assert "no peer node 'zed'" in letters["letters"][0]["detail"]


def test_a_local_actor_cannot_pass_itself_off_as_another_node(short_tmp, key, start_daemon):
    journal = os.path.join(short_tmp, "journal")
    d = start_daemon(node_toml("alice", 0, key, recorder(journal)))
    forged = {"type": "$link_inbound",
              "messages": [[b"x", "bob", "chain", "chain", bytes(16), 1]]}
    with pytest.raises(HandlerError, match="PermissionDenied: .* may not hand the link"):
        d.request("link", forged)
    assert lines(journal) == []


def test_a_full_mailbox_refuses_a_remote_message_as_it_would_a_local_one(short_tmp, key,
                                                                        start_daemon):
    journal = os.path.join(short_tmp, "journal")
    release = os.path.join(short_tmp, "release")
    port = free_port()
    bob = start_daemon(node_toml("bob", port, key, actor_toml(
        "chain", "tests.actors:Recorder", config={"journal": journal},
        mailbox={"capacity": 1, "backpressure": "fail"})))
    alice = start_daemon(node_toml("alice", 0, key, SENDER,
                                   peers=[{"name": "bob", "address": f"127.0.0.1:{port}"}]))
    send(alice, "bob", "chain", {"hold": release})
    wait_until(lambda: lines(journal), message="chain busy")
    for n in range(3):
        send(alice, "bob", "chain", {"n": n})
    wait_until(lambda: status(alice)["acknowledged"] == 4, message="all 4 acknowledged")
    full = wait_until(lambda: [x for x in bob.call("dead_letters")["letters"]
                               if x["reason"] == "mailbox_full"], message="mailbox_full letters")
    open(release, "w").close()
    wait_until(lambda: len(lines(journal)) == 1 + 3 - len(full), message="the rest handled")
    assert status(alice)["peers"]["bob"]["pending"] == 0
