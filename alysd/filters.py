"""Message filters installed at run time (``alysctl filter``, the chaos engine's
partitions): which rule, if any, a message falls under.

Pure functions over ``FilterRule`` data; the receiving actor applies the
verdict (drop → dead-lettered as ``filtered``, delay, duplicate). A rule's
fields match by equality, or by a trailing ``*`` as a prefix; None matches
anything. The first matching rule whose ``rate`` draw succeeds wins.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import msgspec

from alysd import zmq_bus
from alysd.protocol import FilterRule
from alysd.zmq_bus import Envelope, Kind

ACTIONS = ("drop", "delay", "duplicate")
_type_decoder = msgspec.msgpack.Decoder()


def field_matches(pattern: str | None, value: str | None) -> bool:
    if pattern is None:
        return True
    if value is None:
        return False
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def message_type(env: Envelope) -> str | None:
    """What a filter's ``message_type`` is compared with: the event type of a
    broadcast, else the payload's tag (a msgspec tagged Struct's ``type`` field
    or first array element), else None."""
    if env.kind == Kind.EVENT:
        return env.routing.target
    try:
        payload: Any = _type_decoder.decode(env.payload)
    except zmq_bus.DECODE_ERRORS:
        return None
    return payload_tag(payload)


def payload_tag(payload: Any) -> str | None:
    """A decoded payload's tag: a tagged Struct arrives as a dict with its tag
    under ``"type"``, or (array_like) as a list whose first item is the tag."""
    if isinstance(payload, dict):
        tag = payload.get("type")
    elif isinstance(payload, list) and payload:
        tag = payload[0]
    else:
        return None
    return tag if isinstance(tag, str) else None


def verdict(rules: tuple[FilterRule, ...], env: Envelope, receiver: str,
            draw: Callable[[], float] = random.random) -> FilterRule | None:
    """The rule that applies to ``env`` arriving at ``receiver``, or None."""
    kind_type: str | None = None
    typed = False
    for rule in rules:
        if not (field_matches(rule.sender, env.metadata.from_actor)
                and field_matches(rule.receiver, receiver)):
            continue
        if rule.message_type is not None:
            if not typed:
                kind_type, typed = message_type(env), True
            if not field_matches(rule.message_type, kind_type):
                continue
        if rule.rate >= 1.0 or draw() < rule.rate:
            return rule
    return None
