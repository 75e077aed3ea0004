"""Whether an actor's ``permissions`` let a message go (pure).

The sender's courier asks before sending, so the handler that tried gets
``PermissionDenied`` at once; the receiver asks again about every message
from a sender with permissions, since it does not take a sender's process at
its word. Both answer from the same ``Permissions`` (``alysd.config``), which
every process holds in its directory.

A message's type is what ``operations`` lists: a tagged msgspec Struct's tag,
a dict's ``"type"`` string, or an event type for a broadcast; a message with
none of these has no type, and ``operations`` (when given) never allows it.
A batch is allowed only when each of its messages is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from alysd import zmq_bus
from alysd.config import Permissions
from alysd.filters import message_type, payload_tag
from alysd.zmq_bus import Envelope, Kind

_batch = msgspec.msgpack.Decoder(list)


def type_of(message: Any) -> str | None:
    """The type a message to be sent goes by (see the module doc)."""
    if isinstance(message, msgspec.Struct):
        tag = type(message).__struct_config__.tag
        return tag if isinstance(tag, str) else None
    if isinstance(message, dict):
        tag = message.get("type")
        return tag if isinstance(tag, str) else None
    return None


def denial(permissions: Permissions | None, receiver: Iterable[str],
           types: Iterable[str | None]) -> str | None:
    """Why ``permissions`` do not let messages of ``types`` go to the receiver
    known by the names ``receiver`` (an actor's name, and its pool's for a
    member); None when they do (or there are no permissions)."""
    if permissions is None:
        return None
    if permissions.send_to is not None and not any(n in permissions.send_to for n in receiver):
        allowed = ", ".join(permissions.send_to) or "no actor"
        return f"may send only to {allowed}"
    if permissions.operations is not None:
        for kind in types:
            if kind not in permissions.operations:
                allowed = ", ".join(permissions.operations) or "nothing"
                return f"may send only {allowed}, not {kind or 'an untyped message'}"
    return None


def types_in(env: Envelope) -> list[str | None]:
    """The type of each message an envelope carries, as its receiver sees them."""
    if env.kind != Kind.BATCH:
        return [message_type(env)]
    try:
        messages = _batch.decode(env.payload)
    except zmq_bus.DECODE_ERRORS:
        return [None]
    return [payload_tag(m) for m in messages] or [None]


def names_of(actor: str) -> tuple[str, ...]:
    """The names a receiver is known by in ``send_to``: its own, and its pool's
    for a pool member ("pool.N"; a configured name never holds a dot)."""
    pool, dot, _ = actor.rpartition(".")
    return (actor, pool) if dot else (actor,)
