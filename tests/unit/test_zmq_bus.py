"""Tests of alysd.zmq_bus: envelope encoding/decoding, typed errors, sizes, message ids."""

import os
import random
import time

import msgspec
import pytest
from hypothesis import example, given, settings, strategies as st

from alysd import zmq_bus
from alysd.errors import (ActorUnavailable, CommandError, HandlerError, MessageTooLarge,
                          ProtocolError, RemoteError, RequestTimeout, UnknownActor)
from alysd.zmq_bus import (Envelope, ErrorInfo, Kind, MessageIds, Metadata, Priority, Routing,
                           RoutingKind, check_size, decode_any, decode_envelope, decode_error,
                           encode, encode_envelope, encode_reply)

BIG = 1 << 30

# msgpack-encodable values that decode back equal (no NaN; ints in msgpack range).
leaves = (st.none() | st.booleans()
          | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
          | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20))
messages = st.recursive(
    leaves,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12)
names = st.text(min_size=1, max_size=20)


# --- envelopes ---------------------------------------------------------------------

def test_envelope_round_trip_every_field():
    message = {"op": "get", "args": [1, 2.5, None, b"\x00raw"], "nested": {"k": "v"}}
    before = time.time()
    frame = encode_envelope(Kind.ASK, 42, message, sender="alice", target="bob",
                            correlation_id=7, routing=RoutingKind.DIRECT,
                            priority=Priority.HIGH, timeout=2.5)
    after = time.time()
    env = decode_envelope(frame, BIG)
    assert isinstance(env, Envelope)
    assert env.kind is Kind.ASK
    assert env.message_id == 42
    assert env.correlation_id == 7
    assert env.routing == Routing(RoutingKind.DIRECT, "bob")
    assert env.priority is Priority.HIGH
    assert bytes(env.payload) == encode(message)
    assert decode_any(env.payload) == message
    md = env.metadata
    assert isinstance(md, Metadata)
    assert md.from_actor == "alice"
    assert md.to_actor == "bob"
    assert md.timeout == 2.5
    assert before <= md.created_at <= after
    assert md.trace_context is None
    assert md.retry_count == 0 and md.max_retries == 0


def test_envelope_defaults():
    env = decode_envelope(encode_envelope(Kind.TELL, 1, "hi", sender="a", target="b"), BIG)
    assert env.kind is Kind.TELL
    assert env.correlation_id is None
    assert env.routing.kind is RoutingKind.DIRECT
    assert env.priority is Priority.NORMAL
    assert env.metadata.timeout is None
    assert decode_any(env.payload) == "hi"


def test_broadcast_routing_targets_the_event_type():
    frame = encode_envelope(Kind.EVENT, 3, {"block": 1}, sender="chain", target="block_added",
                            routing=RoutingKind.BROADCAST, priority=Priority.LOW)
    env = decode_envelope(frame, BIG)
    assert env.kind is Kind.EVENT
    assert env.routing == Routing(RoutingKind.BROADCAST, "block_added")
    assert env.priority is Priority.LOW


def test_struct_messages_embed_and_decode_into_the_receivers_type():
    class Ping(msgspec.Struct):
        seq: int
        note: str = ""

    env = decode_envelope(encode_envelope(Kind.ASK, 1, Ping(5, "x"), sender="a", target="b"), BIG)
    assert msgspec.msgpack.decode(env.payload, type=Ping) == Ping(5, "x")


def test_unencodable_message_raises_type_error():
    with pytest.raises(TypeError):
        encode_envelope(Kind.TELL, 1, object(), sender="a", target="b")


@settings(max_examples=100, deadline=None, database=None)
@given(kind=st.sampled_from(Kind), message_id=st.integers(0, (1 << 63) - 1),
       message=messages, sender=names, target=names,
       correlation_id=st.none() | st.integers(0, (1 << 63) - 1),
       routing=st.sampled_from(RoutingKind), priority=st.sampled_from(Priority),
       timeout=st.none() | st.floats(min_value=0, max_value=1e6))
def test_envelope_round_trip_property(kind, message_id, message, sender, target,
                                      correlation_id, routing, priority, timeout):
    frame = encode_envelope(kind, message_id, message, sender=sender, target=target,
                            correlation_id=correlation_id, routing=routing,
                            priority=priority, timeout=timeout)
    env = decode_envelope(frame, len(frame))
    assert env.kind == kind and type(env.kind) is Kind
    assert env.message_id == message_id
    assert env.correlation_id == correlation_id
    assert env.routing == Routing(routing, target)
    assert env.priority == priority and type(env.priority) is Priority
    assert decode_any(env.payload) == message
    assert env.metadata.from_actor == sender
    assert env.metadata.to_actor == target
    assert env.metadata.timeout == timeout


def test_reply_answers_the_request():
    req = decode_envelope(encode_envelope(Kind.ASK, 100, {"q": 1}, sender="client",
                                          target="server", priority=Priority.CRITICAL,
                                          timeout=1.0), BIG)
    env = decode_envelope(encode_reply(req, "server", {"a": 2}, message_id=555), BIG)
    assert env.kind is Kind.REPLY
    assert env.message_id == 555
    assert env.correlation_id == 100
    assert env.routing == Routing(RoutingKind.DIRECT, "client")
    assert env.metadata.from_actor == "server"
    assert env.metadata.to_actor == "client"
    assert env.priority is Priority.CRITICAL
    assert decode_any(env.payload) == {"a": 2}


def test_error_reply_carries_a_typed_error():
    req = decode_envelope(encode_envelope(Kind.ASK, 9, "x", sender="client", target="server"), BIG)
    info = ErrorInfo.from_exception(UnknownActor("no actor 'ghost'", actor="ghost"),
                                    actor="ghost", message_id=9)
    env = decode_envelope(encode_reply(req, "server", info, message_id=10, error=True), BIG)
    assert env.kind is Kind.ERROR
    assert env.correlation_id == 9
    exc = decode_error(env.payload)
    assert type(exc) is UnknownActor
    assert str(exc) == "no actor 'ghost'"
    assert exc.actor == "ghost" and exc.message_id == 9


def test_decode_error_of_garbage_is_a_remote_error_not_a_crash():
    exc = decode_error(msgspec.Raw(encode([1, 2, 3])))
    assert type(exc) is RemoteError
    assert "undecodable error reply" in str(exc)


# --- refusing frames ---------------------------------------------------------------

def test_oversized_frame_is_refused_before_decoding():
    frame = encode_envelope(Kind.TELL, 1, "x" * 100, sender="a", target="b")
    assert decode_envelope(frame, len(frame)).message_id == 1
    with pytest.raises(ProtocolError, match=f"{len(frame)} bytes exceeds the {len(frame) - 1}-byte"):
        decode_envelope(frame, len(frame) - 1)


@pytest.mark.parametrize("frame", [
    b"",
    b"\xc1",                                   # never-used msgpack byte
    encode([1, 2, 3]),                         # wrong arity
    encode({"kind": 1}),                       # map instead of array
    encode((99, 1, None, (0, "b"), "m", (0.0, "a", "b", None, 0, 0, None), 1)),  # bad Kind
    encode((1, 1, None, (7, "b"), "m", (0.0, "a", "b", None, 0, 0, None), 1)),   # bad routing
    encode((1, 1, None, (0, "b"), "m", (0.0, "a", "b", None, 0, 0, None), 9)),   # bad priority
    encode((1, "id", None, (0, "b"), "m", (0.0, "a", "b", None, 0, 0, None), 1)),  # bad id type
    encode_envelope(Kind.TELL, 1, "m", sender="a", target="b")[:-3],          # truncated
], ids=["empty", "reserved-byte", "arity", "map", "bad-kind", "bad-routing", "bad-priority",
        "bad-id-type", "truncated"])
def test_malformed_frames_raise_protocol_error(frame):
    with pytest.raises(ProtocolError):
        decode_envelope(frame, BIG)


# derandomize: the search is the same on every run, so a garbage input the
# decoder mishandles fails here every time or never (the known ones are pinned
# by the explicit tests below).
@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_error(data):
    try:
        env = decode_envelope(data, BIG)
    except ProtocolError:
        return
    assert isinstance(env, Envelope)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_envelopes_raise_only_protocol_error(edits):
    frame = bytearray(encode_envelope(Kind.ASK, 77, {"k": [1, "v"]}, sender="alice",
                                      target="bob", correlation_id=5, timeout=1.0))
    assert frame[6:10] == b"\xa3bob"
    for pos, value in edits:
        frame[pos % len(frame)] = value
    try:
        decode_envelope(bytes(frame), BIG)
    except ProtocolError:
        pass


def _frame_with(routing=b"\x92\x00\xa1b", payload=b"\xa1m", sender=b"\xa1a"):
    """An envelope frame assembled from raw msgpack pieces."""
    return (b"\x97" + encode(1) + encode(1) + encode(None) + routing + payload
            + b"\x97" + encode(0.0) + sender + encode("b") + encode(None) + encode(0)
            + encode(0) + encode(None) + encode(1))


def test_frame_helper_builds_a_valid_envelope():
    env = decode_envelope(_frame_with(), BIG)
    assert env.routing.target == "b" and env.metadata.from_actor == "a"
    assert decode_any(env.payload) == "m"


@pytest.mark.parametrize("frame", [
    _frame_with(routing=b"\x92\x00\xa1\x80"),   # routing target: 0x80 is not UTF-8
    _frame_with(sender=b"\xa1\x80"),               # from_actor
], ids=["routing_target", "from_actor"])
def test_invalid_utf8_string_field_is_a_protocol_error(frame):
    with pytest.raises(ProtocolError):
        decode_envelope(frame, BIG)


def test_deeply_nested_payload_is_a_protocol_error():
    frame = _frame_with(payload=b"\x91" * 10_000 + b"\xc0")
    assert len(frame) < BIG
    with pytest.raises(ProtocolError):
        decode_envelope(frame, BIG)


@settings(max_examples=150, deadline=None, database=None)
@example(b"\xa1\x80")                          # a str that is not UTF-8
@given(st.binary(max_size=200))
def test_decode_any_of_arbitrary_bytes_raises_only_protocol_error(data):
    try:
        decode_any(data)
    except ProtocolError:
        pass


def test_deeply_nested_decode_any_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        decode_any(b"\x91" * 10_000 + b"\xc0")


# --- typed errors across the wire ----------------------------------------------------

@pytest.mark.parametrize("cls", [UnknownActor, HandlerError, ActorUnavailable, RequestTimeout,
                                 MessageTooLarge, CommandError, RemoteError])
def test_error_info_round_trip_keeps_the_class(cls):
    original = cls("it went wrong", actor="engine", message_id=11, detail="tb")
    info = ErrorInfo.from_exception(original, actor="engine", message_id=11)
    wire = msgspec.msgpack.decode(encode(info), type=ErrorInfo)
    assert wire == info
    exc = wire.to_exception()
    assert type(exc) is cls
    assert str(exc) == "it went wrong"
    assert (exc.actor, exc.message_id, exc.detail) == ("engine", 11, "tb")


def test_plain_exception_becomes_handler_error_with_its_message():
    info = ErrorInfo.from_exception(ValueError("bad block 7"), actor="engine", message_id=3)
    assert info.kind == "HandlerError"
    exc = msgspec.msgpack.decode(encode(info), type=ErrorInfo).to_exception()
    assert type(exc) is HandlerError
    assert str(exc) == "ValueError: bad block 7"
    assert exc.actor == "engine" and exc.message_id == 3
    assert "bad block 7" in exc.detail


def test_handler_failure_is_a_handler_error_even_for_a_remote_error_type():
    # An UnknownActor raised deeper down in a handler is the handler's failure,
    # not the requester's mistake.
    info = ErrorInfo.handler_failed(UnknownActor("no actor 'db'"), actor="engine", message_id=4)
    exc = info.to_exception()
    assert type(exc) is HandlerError
    assert str(exc) == "UnknownActor: no actor 'db'"


def test_unknown_error_kind_becomes_remote_error():
    exc = ErrorInfo(kind="SomethingNew", message="m").to_exception()
    assert type(exc) is RemoteError
    assert str(exc) == "m"


# --- sizes and ids ---------------------------------------------------------------------

def test_check_size():
    check_size(b"x" * 10, 10, target="engine")
    with pytest.raises(MessageTooLarge) as info:
        check_size(b"x" * 11, 10, target="engine")
    assert info.value.actor == "engine"
    assert "'engine'" in str(info.value) and "11 bytes" in str(info.value)
    assert "10-byte limit" in str(info.value)


def test_message_ids_unique_and_in_int64():
    ids = MessageIds()
    got = [ids.next() for _ in range(20_000)]
    assert len(set(got)) == len(got)
    assert all(0 < i < (1 << 63) for i in got)


def test_message_ids_of_two_instances_do_not_collide():
    a, b = MessageIds(), MessageIds()
    got_a = {a.next() for _ in range(5_000)}
    got_b = {b.next() for _ in range(5_000)}
    assert not got_a & got_b


def test_message_ids_differ_in_a_forked_child_with_the_same_random_state():
    # Actors are forked from one zygote: a child must not repeat its parent's ids
    # even though it inherits the parent's random state.
    saved = random.getstate()
    r, w = os.pipe()
    try:
        random.seed(1234)
        pid = os.fork()
        if pid == 0:
            try:
                os.write(w, str(MessageIds().next()).encode())
            finally:
                os._exit(0)
        os.close(w)
        w = -1
        mine = MessageIds().next()
        theirs = int(os.read(r, 64))
        os.waitpid(pid, 0)
    finally:
        random.setstate(saved)
        os.close(r)
        if w >= 0:
            os.close(w)
    assert mine != theirs


# --- delivery helpers ---------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 15, 16, 65535, 65536])
def test_batch_length_reads_the_array_header(n):
    frame = zmq_bus.encode_envelope(zmq_bus.Kind.BATCH, 1, [0] * n, sender="a", target="b")
    env = zmq_bus.decode_envelope(frame, 1 << 24)
    assert zmq_bus.batch_length(env.payload) == n


def test_batch_length_of_something_else_is_zero():
    assert zmq_bus.batch_length(b"") == 0
    assert zmq_bus.batch_length(zmq_bus.encode({"a": 1})) == 0


def test_a_redelivery_is_the_same_message_with_one_more_retry():
    frame = zmq_bus.encode_envelope(zmq_bus.Kind.TELL, 77, {"x": [1, 2]}, sender="a", target="b",
                                    priority=zmq_bus.Priority.HIGH)
    again, env = zmq_bus.redelivery(frame)
    first = zmq_bus.decode_envelope(frame, 1 << 20)
    second = zmq_bus.decode_envelope(again, 1 << 20)
    assert second.metadata.retry_count == first.metadata.retry_count + 1 == env.metadata.retry_count
    assert (second.message_id, second.priority, second.metadata.created_at) == (
        77, zmq_bus.Priority.HIGH, first.metadata.created_at)
    assert zmq_bus.decode_any(second.payload) == {"x": [1, 2]}
    assert zmq_bus.redelivery(again)[1].metadata.retry_count == 2


def test_an_ack_carries_message_ids():
    env = zmq_bus.decode_envelope(zmq_bus.encode_ack("b", "a", [5, 6], message_id=9), 1 << 20)
    assert env.kind == zmq_bus.Kind.ACK and zmq_bus.decode_any(env.payload) == [5, 6]
