"""Hypothesis strategies for alysd: messages of an actor's msgspec types,
envelopes as they travel on the bus, and configuration trees.

* ``messages(tp)``: values of any msgspec-decodable type ``tp`` (an actor's
  ``message_type``: Structs, tagged unions, containers, enums, literals,
  constrained numbers and strings), built from msgspec's own description of
  the type, so every value drawn round-trips through msgspec as ``tp``.
* ``envelopes()`` / ``envelope_frames()``: ``zmq_bus.Envelope`` values (every
  kind, priority and routing) and their encoded frames, as a receiver reads
  them.
* ``config_trees(classes)``: configuration documents (TOML text) that alysd
  accepts: a supervision tree of 1 to ``max_supervisors`` supervisors and 1 to
  ``max_actors`` actors of the given classes, with drawn strategies, restart
  types, policies, limits and mailboxes.
"""

from __future__ import annotations

import string
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from alysd import zmq_bus

_NAME = st.text(string.ascii_lowercase, min_size=1, max_size=1).flatmap(
    lambda head: st.text(string.ascii_lowercase + string.digits + "_-", max_size=12).map(
        lambda tail: head + tail))


def messages(tp: Any = Any) -> st.SearchStrategy:
    """Values of the msgspec type ``tp`` (``Any``: any msgpack-encodable value)."""
    return _strategy(mi.type_info(tp))


def _strategy(info: mi.Type) -> st.SearchStrategy:
    if isinstance(info, mi.AnyType):
        return _any_value()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else None)
        high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else None)
        return st.integers(low if low is not None else -(2 ** 63),
                           high if high is not None else 2 ** 64 - 1)
    if isinstance(info, mi.FloatType):
        return st.floats(min_value=info.ge if info.ge is not None else info.gt,
                         max_value=info.le if info.le is not None else info.lt,
                         exclude_min=info.gt is not None, exclude_max=info.lt is not None,
                         allow_nan=False, allow_infinity=False)
    if isinstance(info, mi.StrType):
        if info.pattern is not None:
            return st.from_regex(info.pattern, fullmatch=True).filter(
                lambda s: _length_ok(s, info))
        return st.text(min_size=info.min_length or 0,
                       max_size=info.max_length if info.max_length is not None else 32)
    if isinstance(info, (mi.BytesType, mi.ByteArrayType)):
        strategy = st.binary(min_size=info.min_length or 0,
                             max_size=info.max_length if info.max_length is not None else 32)
        return strategy.map(bytearray) if isinstance(info, mi.ByteArrayType) else strategy
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.EnumType):
        return st.sampled_from(list(info.cls))
    if isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        items = _strategy(info.item_type)
        size = dict(min_size=info.min_length or 0,
                    max_size=info.max_length if info.max_length is not None else 8)
        if isinstance(info, (mi.SetType, mi.FrozenSetType)):
            made = st.sets(items, **size)
            return made.map(frozenset) if isinstance(info, mi.FrozenSetType) else made
        made = st.lists(items, **size)
        return made.map(tuple) if isinstance(info, mi.VarTupleType) else made
    if isinstance(info, mi.TupleType):
        return st.tuples(*(_strategy(item) for item in info.item_types))
    if isinstance(info, mi.DictType):
        return st.dictionaries(_strategy(info.key_type), _strategy(info.value_type),
                               min_size=info.min_length or 0,
                               max_size=info.max_length if info.max_length is not None else 8)
    if isinstance(info, mi.StructType):
        return _struct(info)
    if isinstance(info, mi.UnionType):
        return st.one_of(*(_strategy(member) for member in info.types))
    if isinstance(info, mi.RawType):
        return _any_value().map(lambda v: msgspec.Raw(msgspec.msgpack.encode(v)))
    raise TypeError(f"no strategy for {info!r}: alysd messages are msgpack-encodable types")


def _length_ok(text: str, info: mi.StrType) -> bool:
    return ((info.min_length is None or len(text) >= info.min_length)
            and (info.max_length is None or len(text) <= info.max_length))


def _struct(info: mi.StructType) -> st.SearchStrategy:
    required = {f.name: _strategy(f.type) for f in info.fields if f.required}
    optional = {f.name: _strategy(f.type) for f in info.fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: info.cls(**kw))


def _any_value() -> st.SearchStrategy:
    scalars = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1)
               | st.floats(allow_nan=False) | st.text(max_size=32) | st.binary(max_size=32))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=16)


# --- envelopes --------------------------------------------------------------------------

def envelopes(payloads: st.SearchStrategy | None = None,
              names: st.SearchStrategy = _NAME) -> st.SearchStrategy:
    """``zmq_bus.Envelope`` values: every kind, priority and routing, ids in
    range, and a payload drawn from ``payloads`` (default: any value)."""
    payloads = payloads if payloads is not None else _any_value()
    metadata = st.builds(
        zmq_bus.Metadata, created_at=st.floats(0, 2e9), from_actor=names,
        to_actor=st.none() | names, retry_count=st.integers(0, 10),
        max_retries=st.integers(0, 10), timeout=st.none() | st.floats(0.001, 3600),
        origin=st.none() | st.tuples(names, names).map("@".join))
    return st.builds(
        zmq_bus.Envelope, kind=st.sampled_from(zmq_bus.Kind),
        message_id=st.integers(0, 2 ** 63 - 1),
        correlation_id=st.none() | st.integers(0, 2 ** 63 - 1),
        routing=st.builds(zmq_bus.Routing, st.sampled_from(zmq_bus.RoutingKind), names),
        payload=payloads.map(lambda v: msgspec.Raw(msgspec.msgpack.encode(v))),
        metadata=metadata, priority=st.sampled_from(zmq_bus.Priority))


def envelope_frames(payloads: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """Encoded envelopes, as they arrive on an inbox."""
    return envelopes(payloads).map(msgspec.msgpack.encode)


# --- configuration trees ------------------------------------------------------------------

_SUPERVISOR_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
_RESTARTS = ("permanent", "transient", "temporary")
_BACKPRESSURE = ("block", "fail", "drop_newest", "drop_oldest")


@st.composite
def config_trees(draw, classes: tuple[str, ...] = ("actors.examples:Echo",), *,
                 max_supervisors: int = 4, max_actors: int = 8) -> str:
    """A configuration document alysd accepts (TOML text)."""
    names = draw(st.lists(_NAME, min_size=2, max_size=max_supervisors + max_actors,
                          unique=True))
    count = draw(st.integers(1, min(max_supervisors, len(names) - 1)))
    supervisors, actor_names = names[:count], names[count:][:max_actors]
    document: dict[str, Any] = {"supervisors": {}, "actors": {}}
    for index, name in enumerate(supervisors):
        table = {"strategy": draw(st.sampled_from(_SUPERVISOR_STRATEGIES)),
                 "max_retries": draw(st.integers(1, 10)),
                 "within_time": f"{draw(st.integers(1, 60))}s"}
        if index:
            table["parent"] = supervisors[draw(st.integers(0, index - 1))]
        document["supervisors"][name] = table
    for name in actor_names:
        table = {"supervisor": draw(st.sampled_from(supervisors)),
                 "class": draw(st.sampled_from(classes)),
                 "restart": draw(st.sampled_from(_RESTARTS))}
        policy = draw(st.sampled_from(("one_for_one", "exponential_backoff",
                                       "circuit_breaker", "never")))
        table["strategy"] = policy
        if policy == "exponential_backoff":
            table.update(initial_delay=f"{draw(st.integers(1, 500))}ms",
                         max_delay=f"{draw(st.integers(1, 60))}s")
        elif policy == "circuit_breaker":
            table.update(failure_threshold=draw(st.integers(1, 10)),
                         recovery_timeout=f"{draw(st.integers(1, 60))}s")
        if draw(st.booleans()):
            table["memory_limit"] = f"{draw(st.integers(64, 4096))}MiB"
        if draw(st.booleans()):
            table["cpu_limit"] = draw(st.sampled_from((0.25, 0.5, 1.0, 2.0)))
        if draw(st.booleans()):
            table["mailbox"] = {"capacity": draw(st.integers(1, 100_000)),
                                "backpressure": draw(st.sampled_from(_BACKPRESSURE))}
        if draw(st.booleans()):
            table["instances"] = draw(st.integers(1, 4))
        document["actors"][name] = table
    return msgspec.toml.encode(document).decode()


__all__ = ["config_trees", "envelope_frames", "envelopes", "messages"]
