"""The wire: envelopes, frames and sockets of the alysd bus (the only zmq importer
besides the programs' own loops).

Topology (no broker on the data path; a broker hop in Python roughly doubles a
round trip)::

    actor A                                   actor B
    DEALER (routing id "a") ──ipc──▶ ROUTER bound at <rundir>/b.inbox
        ◀──────────── reply routed back by the identity frame

    alysctl:     DEALER ──▶ root ROUTER <rundir>/control.sock
    (the root ↔ actor system channel is a plain unix socket: alysd.system_channel)

Frames on an inbox ROUTER::

    [sender identity][envelope: msgpack array]

The receiver stamps ``metadata.from_actor`` from the identity frame, never from
the payload: an actor cannot claim to be another. The envelope is the seed's
``MessageEnvelope``; the payload travels as raw msgpack inside it so that a
receiver can decode it into its own declared message type.

Socket options are set here once, for every socket: a 2 ms reconnect interval
(the 100 ms default is paid by every client of a restarted actor), a bounded
linger (``linger=0`` would silently drop queued replies at close) and
``ROUTER_HANDOVER`` so a new incarnation takes over its peers' connections.
"""

from __future__ import annotations

import enum
import itertools
import os
import random
import time
import traceback
from typing import Any

import msgspec
import zmq

from alysd.errors import MessageTooLarge, ProtocolError, RemoteError, remote_error

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
RECONNECT_IVL_MS = 2
RECONNECT_IVL_MAX_MS = 50
CLOSE_LINGER_MS = 1000
CTL_IDENTITY = "$ctl"    # from_actor of requests relayed for alysctl
OVERSIZE_SLACK = 64 * 1024  # oversized frames up to this much over the limit get a clear refusal


class Priority(enum.IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


class Kind(enum.IntEnum):
    """What an envelope is: a one-way message, a request, an answer to one, a
    receipt, or several one-way messages in one frame."""

    TELL = 0
    ASK = 1
    REPLY = 2
    ERROR = 3
    EVENT = 4
    ACK = 5      # receiver → sender: these message ids were handled or dead-lettered
    BATCH = 6    # a TELL whose payload is a msgpack array of messages


class RoutingKind(enum.IntEnum):
    DIRECT = 0
    BROADCAST = 1


class Routing(msgspec.Struct, array_like=True, frozen=True, gc=False):
    kind: RoutingKind
    target: str          # actor name, or the event type of a broadcast


class Metadata(msgspec.Struct, array_like=True, kw_only=True, gc=False):
    created_at: float
    from_actor: str
    to_actor: str | None = None
    trace_context: dict[str, str] | None = None
    retry_count: int = 0
    max_retries: int = 0
    timeout: float | None = None
    # "actor@node" for a message that came from another host: stamped by the
    # host link (``alysd.host_link``), which is then ``from_actor``.
    origin: str | None = None


class Envelope(msgspec.Struct, array_like=True, kw_only=True, gc=False):
    """The seed's ``MessageEnvelope``, plus ``kind`` to tell requests from replies."""

    kind: Kind
    message_id: int
    correlation_id: int | None
    routing: Routing
    payload: msgspec.Raw
    metadata: Metadata
    priority: Priority = Priority.NORMAL


class ErrorInfo(msgspec.Struct, array_like=True, kw_only=True):
    """The payload of a ``Kind.ERROR`` envelope."""

    kind: str
    message: str
    actor: str | None = None
    message_id: int | None = None
    detail: str | None = None

    def to_exception(self) -> RemoteError:
        return remote_error(self.kind, self.message, actor=self.actor,
                            message_id=self.message_id, detail=self.detail)

    @classmethod
    def from_exception(cls, exc: BaseException, *, actor: str | None,
                       message_id: int | None) -> "ErrorInfo":
        """The wire form of an error raised by the runtime itself (its kind is kept)."""
        if isinstance(exc, RemoteError):
            return cls(kind=exc.kind, message=str(exc), actor=actor, message_id=message_id,
                       detail=exc.detail)
        return cls.handler_failed(exc, actor=actor, message_id=message_id)

    @classmethod
    def handler_failed(cls, exc: BaseException, *, actor: str | None,
                       message_id: int | None) -> "ErrorInfo":
        """The wire form of an exception that escaped a handler: always ``HandlerError``,
        naming the original type, so the requester is never told that *it* made an
        error the handler made (e.g. an ``UnknownActor`` raised deeper down)."""
        return cls(kind="HandlerError", message=f"{type(exc).__name__}: {exc}", actor=actor,
                   message_id=message_id,
                   detail="".join(traceback.format_exception_only(exc)).strip())


# What decoding hostile bytes can raise: msgspec's own errors, invalid UTF-8 in a
# string, and nesting deep enough to exhaust the recursion limit.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_any_decoder = msgspec.msgpack.Decoder()
_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)


class MessageIds:
    """Message ids unique across processes: a random 31-bit prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = random.getrandbits(31) << 32
        self._counter = itertools.count(1)

    def next(self) -> int:
        return self._prefix | (next(self._counter) & 0xFFFFFFFF)


def encode(value: Any) -> bytes:
    """msgpack-encode any msgspec-encodable value (raises ``TypeError`` otherwise)."""
    return _encoder.encode(value)


def decode_any(data: bytes | msgspec.Raw) -> Any:
    """Decode msgpack into builtins; raises ``ProtocolError`` on garbage."""
    try:
        return _any_decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise ProtocolError(f"undecodable payload: {exc}") from exc


def decode_envelope(frame: bytes, max_bytes: int) -> Envelope:
    """Length-check then decode one envelope frame; raises ``ProtocolError``."""
    if len(frame) > max_bytes:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {max_bytes}-byte limit")
    try:
        return _envelope_decoder.decode(frame)
    except DECODE_ERRORS as exc:
        raise ProtocolError(f"malformed envelope: {exc}") from exc


def decode_error(payload: msgspec.Raw) -> RemoteError:
    """Rebuild the typed exception carried by a ``Kind.ERROR`` envelope."""
    try:
        return _error_decoder.decode(payload).to_exception()
    except DECODE_ERRORS as exc:
        return RemoteError(f"undecodable error reply: {exc}")


def encode_envelope(kind: int, message_id: int, message: Any, *, sender: str, target: str,
                    correlation_id: int | None = None, routing: int = RoutingKind.DIRECT,
                    priority: int = Priority.NORMAL, timeout: float | None = None,
                    route: str | None = None, max_retries: int = 0,
                    origin: str | None = None) -> bytes:
    """Encode one envelope with ``message`` embedded as its payload.

    The envelope is written as a plain tuple in ``Envelope``'s field order
    (``array_like``), which msgspec encodes ~5x faster than nested Structs with
    enum fields; ``decode_envelope`` reads it back as an ``Envelope``, and a unit
    test pins the two together. Raises ``TypeError`` for a message msgspec cannot
    encode.
    """
    return _encoder.encode((
        int(kind), message_id, correlation_id, (int(routing), route or target), message,
        (time.time(), sender, target, None, 0, max_retries, timeout, origin), int(priority)))


def encode_ack(sender: str, target: str, message_ids: list[int], *, message_id: int) -> bytes:
    """A receipt telling ``target`` that ``message_ids`` need no redelivery."""
    return encode_envelope(_ACK, message_id, message_ids, sender=sender, target=target)


def redelivery(frame: bytes) -> tuple[bytes, Envelope]:
    """``frame`` re-encoded for another delivery attempt: ``retry_count`` + 1.

    Everything else (message id, priority, creation time) stays, so the
    receiver sees the same message again and knows it is a redelivery.
    """
    env = _envelope_decoder.decode(frame)
    env.metadata.retry_count += 1
    return _encoder.encode(env), env


def batch_length(payload: msgspec.Raw | bytes) -> int:
    """How many messages a ``Kind.BATCH`` payload holds, read from its msgpack
    array header without decoding the messages (0 if it is not an array)."""
    data = memoryview(payload)
    if not data:
        return 0
    head = data[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(data) >= 3:
        return int.from_bytes(data[1:3], "big")
    if head == 0xDD and len(data) >= 5:
        return int.from_bytes(data[1:5], "big")
    return 0


def encode_reply(request: Envelope, sender: str, message: Any, *, message_id: int,
                 error: bool = False) -> bytes:
    """Encode the reply (or, with ``error``, the ``ErrorInfo``) answering ``request``."""
    return encode_envelope(_ERROR if error else _REPLY, message_id, message, sender=sender,
                           target=request.metadata.from_actor,
                           correlation_id=request.message_id, priority=request.priority)


_REPLY = int(Kind.REPLY)
_ERROR = int(Kind.ERROR)
_ACK = int(Kind.ACK)


def check_size(frame: bytes, max_bytes: int, *, target: str) -> None:
    """Refuse to send a frame the receiver would reject as too large."""
    if len(frame) > max_bytes:
        raise MessageTooLarge(
            f"message to {target!r} is {len(frame)} bytes, over the {max_bytes}-byte limit",
            actor=target)


# --- sockets -----------------------------------------------------------------

# pyzmq's sugar get/setsockopt cost ~2 us a call (they build enums); the backend
# calls do not, and the receive loop and the root's poller make several a message.
sockopt_get = zmq.backend.Socket.get
sockopt_set = zmq.backend.Socket.set
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)
RCVMORE = int(zmq.RCVMORE)
RCVTIMEO = int(zmq.RCVTIMEO)


def ipc(path: str) -> str:
    return f"ipc://{path}"


def _tune(sock: zmq.Socket) -> zmq.Socket:
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
    return sock


def bind_router(ctx: zmq.Context, path: str, *, max_message_bytes: int,
                zap_domain: str | None = None) -> zmq.Socket:
    """A ROUTER bound at a unix socket path, replacing a stale socket file.

    The caller holds the runtime dir's daemon lock (or owns the actor name), so a
    file already at ``path`` belongs to a dead process. A frame a little over
    ``max_message_bytes`` still arrives, to be refused with a clear error; a peer
    that sends one far over it is disconnected by libzmq before it is buffered,
    so a hostile peer cannot make the receiver hold gigabytes. With
    ``zap_domain``, every connection is first put to the ZAP handler of ``ctx``
    (the option only takes effect when set before the bind).
    """
    sock = _tune(ctx.socket(zmq.ROUTER))
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes + OVERSIZE_SLACK)
    if zap_domain is not None:
        sock.setsockopt(zmq.ZAP_DOMAIN, zap_domain.encode())
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock.bind(ipc(path))
    return sock


def connect_dealer(ctx: zmq.Context, path: str, identity: str) -> zmq.Socket:
    """A DEALER with routing id ``identity`` connected to a unix socket path."""
    return dealer(ctx, ipc(path), identity)


def dealer(ctx: zmq.Context, endpoint: str, identity: str) -> zmq.Socket:
    """A DEALER with routing id ``identity`` connected to ``endpoint``."""
    sock = _tune(ctx.socket(zmq.DEALER))
    sock.setsockopt(zmq.ROUTING_ID, identity.encode())
    sock.connect(endpoint)
    return sock
