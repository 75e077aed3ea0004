"""Tests of alysd.control and alysd.protocol: the control, system and zygote messages
survive their encoders and decoders, and errors come back typed."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alysd.config import (ActorSpec, Backpressure, BackoffSpec, BreakerSpec, ChildPolicy, Delivery,
                          MailboxSpec, Restart)
from alysd.control import (COMMANDS, CtlReply, CtlRequest, reply_decoder, request_decoder,
                           request_encoder)
from alysd.errors import CommandError, HandlerError, UnknownActor
from alysd.protocol import (APPLIED, FAILED, ActorBoot, CheckImports, Directory, Exited, FilterHits,
                            Go, HealthProbe, HealthReport, Hello, ImportsChecked, Peer, Preloaded,
                            PreserveOnStop, Ready, Reconfigure, Reconfigured, Spawn, SpawnFailed,
                            Spawned, Topology, system_decoder, system_encoder, zygote_decoder)
from alysd.zmq_bus import ErrorInfo, decode_any, encode


# --- control plane -------------------------------------------------------------------------

@pytest.mark.parametrize("req", [
    CtlRequest(1, "status"),
    CtlRequest(2, "restart", {"name": "engine"}),
    CtlRequest(3, "send", {"name": "engine", "payload": {"op": [1, 2.5, None]}, "timeout": 5.0}),
    CtlRequest(2**62, "version", {}),
])
def test_ctl_request_round_trip(req):
    got = request_decoder.decode(request_encoder.encode(req))
    assert got == req
    assert type(got) is CtlRequest


def test_ctl_request_args_default_to_empty():
    # A client may send just [id, command].
    got = request_decoder.decode(encode([7, "tree"]))
    assert got == CtlRequest(7, "tree", {})


@pytest.mark.parametrize("bad", [encode([1]), encode(["1", "status"]), encode({"id": 1}),
                                 encode([1, "status", [1, 2]]), b"\xc1"])
def test_malformed_ctl_request_is_a_decode_error(bad):
    with pytest.raises(msgspec.DecodeError):
        request_decoder.decode(bad)


def test_ctl_reply_with_result_round_trip():
    rows = [{"name": "engine", "pid": 123, "last_exit": None}, {"name": "sync", "pid": None}]
    reply = CtlReply(5, True, result=msgspec.Raw(encode(rows)))
    got = reply_decoder.decode(request_encoder.encode(reply))
    assert got.id == 5 and got.ok is True and got.error is None
    assert decode_any(got.result) == rows


def test_ctl_reply_default_result_is_nil():
    got = reply_decoder.decode(request_encoder.encode(CtlReply(6, True)))
    assert decode_any(got.result) is None


@pytest.mark.parametrize("exc, cls, text", [
    (UnknownActor("no actor or supervisor named 'ghost'", actor="ghost"), UnknownActor,
     "no actor or supervisor named 'ghost'"),
    (CommandError("alysd is shutting down"), CommandError, "alysd is shutting down"),
    (KeyError("name"), HandlerError, "KeyError: 'name'"),
])
def test_ctl_reply_with_error_gives_the_typed_exception(exc, cls, text):
    info = ErrorInfo.from_exception(exc, actor=getattr(exc, "actor", None), message_id=None)
    data = request_encoder.encode(CtlReply(8, False, error=info))
    got = reply_decoder.decode(data)
    assert got.ok is False and got.id == 8
    assert got.error == info
    err = got.error.to_exception()
    assert type(err) is cls
    assert str(err) == text
    assert err.actor == getattr(exc, "actor", None)


def test_every_command_is_documented():
    assert set(COMMANDS) == {"status", "tree", "restart", "stop", "start", "reset", "send",
                             "tell", "inject", "logs", "version", "dead_letters", "dead_letters_replay",
                             "dead_letters_purge", "filter_add", "filter_list", "filter_remove",
                             "reload"}
    for name, cmd in COMMANDS.items():
        assert cmd.name == name and cmd.doc
    assert {n for n, c in COMMANDS.items() if c.mutating} == {
        "restart", "stop", "start", "reset", "send", "tell", "inject", "dead_letters_replay",
        "dead_letters_purge", "filter_add", "filter_remove", "reload"}


# --- system channel --------------------------------------------------------------------

@pytest.mark.parametrize("msg", [
    Hello(3, 4242),
    Go(),
    Ready(3),
    HealthProbe(7),
    HealthReport(3, 7, "degraded", "db slow"),
    HealthReport(4, 8, "healthy"),
    FilterHits(3, {1: 5}),
    Reconfigure(4, ActorSpec(name="m", supervisor="root", class_path="m:C",
                             config={"url": "x"}, settings={"chain": {"id": 7}})),
    Reconfigured(3, 4, APPLIED, None, "healthy"),
    Reconfigured(3, 5, FAILED, "ValueError: bad url", "degraded", "db slow"),
    PreserveOnStop("/var/lib/alysd/state/engine.state"),
], ids=lambda m: type(m).__name__)
def test_system_messages_round_trip(msg):
    got = system_decoder.decode(system_encoder.encode(msg))
    assert type(got) is type(msg)
    assert got == msg


def test_system_decoder_refuses_zygote_messages():
    with pytest.raises(msgspec.ValidationError):
        system_decoder.decode(system_encoder.encode(Spawned("engine", 1, 99)))


def test_system_decoder_refuses_an_unknown_tag():
    with pytest.raises(msgspec.ValidationError):
        system_decoder.decode(encode(["Goodbye", 1]))


# --- zygote channel ------------------------------------------------------------------

def full_spec() -> ActorSpec:
    return ActorSpec(
        name="engine", supervisor="chain_supervisor", class_path="actors.engine:EngineActor",
        strategy=ChildPolicy.CIRCUIT_BREAKER, restart=Restart.TRANSIENT,
        memory_limit=512 << 20, cpu_limit=0.5, start_timeout=20.0, shutdown_timeout=None,
        backoff=BackoffSpec(initial_delay=0.5, max_delay=30.0, multiplier=3.0, max_retries=4),
        breaker=BreakerSpec(failure_threshold=3, recovery_timeout=60.0, success_threshold=2),
        mailbox=MailboxSpec(capacity=100, backpressure=Backpressure.DROP_OLDEST),
        subscribe=("block_added", "reorg"),
        config={"url": "http://127.0.0.1:8545", "retries": [1, 2], "nested": {"a": None}},
    )


def boot(spec: ActorSpec) -> ActorBoot:
    return ActorBoot(spec=spec, incarnation=9, runtime_dir="/run/alysd",
                     heartbeat_interval=1.0, max_message_bytes=16 << 20,
                     dead_letters="/var/lib/alysd/dead-letters", dead_letter_capacity=10,
                     delivery_timeout=30.0, wait_for_go=False)


@pytest.mark.parametrize("msg", [
    Preloaded([]),
    Preloaded([("actors.engine.class", "cannot import 'actors.engine': boom")]),
    Spawn(boot(full_spec())),
    Spawn(boot(ActorSpec(name="m", supervisor="root", class_path="m:C"))),
    Spawned("engine", 9, 31337),
    SpawnFailed("engine", 9, "fork failed: [Errno 11] Resource temporarily unavailable"),
    Exited(31337, 9),
    Exited(31337, 78 << 8),
], ids=lambda m: type(m).__name__)
def test_zygote_messages_round_trip(msg):
    got = zygote_decoder.decode(system_encoder.encode(msg))
    assert type(got) is type(msg)
    assert got == msg


def test_spawn_keeps_typed_spec_fields():
    got = zygote_decoder.decode(system_encoder.encode(Spawn(boot(full_spec()))))
    spec = got.boot.spec
    assert spec.strategy is ChildPolicy.CIRCUIT_BREAKER
    assert spec.restart is Restart.TRANSIENT
    assert spec.mailbox.backpressure is Backpressure.DROP_OLDEST
    assert spec.shutdown_timeout is None
    assert spec.subscribe == ("block_added", "reorg")
    assert spec.backoff.reset_after == 5.0          # 10 x initial_delay, kept across the wire
    assert got.boot.wait_for_go is False
    assert got.boot.incarnation == 9 and got.boot.max_message_bytes == 16 << 20


def test_preloaded_issues_decode_as_pairs():
    got = zygote_decoder.decode(system_encoder.encode(Preloaded([("a.class", "x")])))
    assert got.issues == [("a.class", "x")]


def test_zygote_decoder_refuses_system_messages():
    with pytest.raises(msgspec.ValidationError):
        zygote_decoder.decode(system_encoder.encode(Hello(1, 2)))


def test_reconfigure_keeps_typed_spec_fields():
    msg = Reconfigure(1, full_spec())
    got = system_decoder.decode(system_encoder.encode(msg))
    assert got.spec == msg.spec
    assert got.spec.mailbox.backpressure is Backpressure.DROP_OLDEST


def test_boot_restore_from_defaults_to_none_and_travels():
    assert boot(full_spec()).restore_from is None
    with_blob = msgspec.structs.replace(boot(full_spec()), restore_from="/s/engine.state")
    got = zygote_decoder.decode(system_encoder.encode(Spawn(with_blob)))
    assert got.boot.restore_from == "/s/engine.state"


@pytest.mark.parametrize("msg", [
    CheckImports(3, ("actors.engine:EngineActor", "actors.new:NewActor")),
    ImportsChecked(3, []),
    ImportsChecked(4, [("actors.new:NewActor", "ModuleNotFoundError: No module named 'x'")]),
], ids=lambda m: type(m).__name__)
def test_reload_zygote_messages_round_trip(msg):
    got = zygote_decoder.decode(system_encoder.encode(msg))
    assert type(got) is type(msg)
    assert got == msg


# --- topology (a reload changes who can be messaged) -------------------------------------------

def peer(capacity: int = 100, backpressure: Backpressure = Backpressure.BLOCK) -> Peer:
    return Peer(capacity, backpressure, Delivery.AT_LEAST_ONCE, 3)


OLD = Directory(
    peers={"a": peer(), "b": peer(), "w.0": peer(), "w.1": peer()},
    pools={"w": ("w.0", "w.1")},
    least_loaded=frozenset(),
    subscribers={"block": ("a", "w")})
NEW = Directory(
    peers={"a": peer(500), "w.0": peer(), "w.1": peer(), "w.2": peer(), "c": peer()},
    pools={"w": ("w.0", "w.1", "w.2")},
    least_loaded=frozenset({"w"}),
    subscribers={"block": ("w",), "reorg": ("c",)})


def test_between_carries_only_added_and_changed_peers_and_complete_tables():
    t = Topology.between(1, OLD, NEW, {"w.2": 4, "c": 5, "a": 0})
    assert t.generation == 1
    assert t.peers == {"a": peer(500), "w.2": peer(), "c": peer()}
    assert t.removed == ("b",)
    assert t.slots == {"w.2": 4, "c": 5}          # only the added ones
    assert t.pools == NEW.pools and t.least_loaded == NEW.least_loaded
    assert t.subscribers == NEW.subscribers


def test_between_needs_a_slot_for_every_added_actor():
    with pytest.raises(ValueError, match="w.2"):
        Topology.between(1, OLD, NEW, {"c": 5})


def test_with_topology_gives_the_new_directory_at_its_generation():
    t = Topology.between(1, OLD, NEW, {"w.2": 4, "c": 5})
    got = OLD.with_topology(t)
    assert got == msgspec.structs.replace(NEW, generation=1)
    assert "b" not in got.peers


def test_applying_a_topology_twice_changes_nothing():
    t = Topology.between(1, OLD, NEW, {"w.2": 4, "c": 5})
    once = OLD.with_topology(t)
    assert once.with_topology(t) == once


def test_an_older_topology_is_ignored():
    first = Topology.between(1, OLD, NEW, {"w.2": 4, "c": 5})
    second = Topology.between(2, NEW, OLD, {"b": 6})
    now = OLD.with_topology(first).with_topology(second)
    assert now.with_topology(first) is now
    assert now == msgspec.structs.replace(OLD, generation=2)


def test_nothing_changed_is_an_empty_topology():
    t = Topology.between(1, OLD, OLD, {})
    assert t.peers == {} and t.removed == () and t.slots == {}
    assert OLD.with_topology(t) == msgspec.structs.replace(OLD, generation=1)


@pytest.mark.parametrize("t", [
    Topology.between(1, OLD, NEW, {"w.2": 4, "c": 5}),
    Topology.between(2, NEW, OLD, {"b": 6}),
], ids=["grow", "shrink"])
def test_topology_travels_on_both_channels(t):
    for decoder in (system_decoder, zygote_decoder):
        got = decoder.decode(system_encoder.encode(t))
        assert type(got) is Topology
        assert got == t
        assert got.least_loaded == t.least_loaded and isinstance(got.least_loaded, frozenset)


_names = st.sampled_from(["a", "b", "c", "d", "e", "p.0", "p.1"])
_directories = st.builds(
    Directory,
    peers=st.dictionaries(_names, st.builds(peer, st.integers(1, 4),
                                            st.sampled_from(list(Backpressure)))),
    pools=st.dictionaries(st.sampled_from(["p", "q"]), st.lists(_names, max_size=3).map(tuple)),
    least_loaded=st.frozensets(st.sampled_from(["p", "q"])),
    subscribers=st.dictionaries(st.sampled_from(["x", "y"]), st.lists(_names, max_size=3).map(tuple)))


@given(old=_directories, new=_directories, generation=st.integers(1, 5))
def test_between_then_with_topology_reaches_the_new_directory(old, new, generation):
    slots = {name: i for i, name in enumerate(new.peers)}
    t = Topology.between(generation, old, new, slots)
    got = old.with_topology(t)
    assert got == msgspec.structs.replace(new, generation=generation)
    assert got.with_topology(t) == got
    assert set(t.slots) == set(new.peers) - set(old.peers)
    assert not set(t.removed) & set(new.peers)
