"""Tests of alysd.permissions: what an actor's permissions let go (pure)."""

import msgspec
import pytest

from alysd import zmq_bus
from alysd.config import Permissions, parse_config
from alysd.permissions import denial, names_of, type_of, types_in
from alysd.zmq_bus import Kind


class Ping(msgspec.Struct, tag="ping"):
    n: int = 0


class Untagged(msgspec.Struct):
    n: int = 0


def test_types_of_messages_to_be_sent():
    assert type_of(Ping()) == "ping"
    assert type_of({"type": "transfer", "amount": 1}) == "transfer"
    assert [type_of(m) for m in (Untagged(), {"amount": 1}, {"type": 3}, "text", 5)] == [None] * 5


def test_types_as_the_receiver_sees_them():
    def env(kind, payload, **kw):
        return zmq_bus.decode_envelope(zmq_bus.encode_envelope(kind, 1, payload, sender="a",
                                                               target="b", **kw), 1 << 20)
    assert types_in(env(Kind.TELL, Ping())) == ["ping"]
    assert types_in(env(Kind.ASK, {"type": "x"})) == ["x"]
    assert types_in(env(Kind.BATCH, [Ping(), {"type": "y"}, "z"])) == ["ping", "y", None]
    assert types_in(env(Kind.EVENT, {"h": 1}, routing=zmq_bus.RoutingKind.BROADCAST,
                        route="block_imported")) == ["block_imported"]


def test_no_permissions_allow_everything():
    assert denial(None, ("b",), ["anything", None]) is None
    assert denial(Permissions(), ("b",), [None]) is None


def test_send_to_and_operations():
    perms = Permissions(send_to=("storage", "pool"), operations=("put", "get"))
    assert denial(perms, ("storage",), ["put"]) is None
    assert denial(perms, names_of("pool.3"), ["get"]) is None        # a member of an allowed pool
    assert denial(perms, ("engine",), ["put"]) == "may send only to storage, pool"
    assert denial(perms, ("storage",), ["put", "delete"]) == \
        "may send only put, get, not delete"
    assert denial(perms, ("storage",), [None]) == \
        "may send only put, get, not an untyped message"
    assert denial(Permissions(send_to=()), ("x",), ["put"]) == "may send only to no actor"


def test_names_of_a_receiver():
    assert names_of("engine") == ("engine",) and names_of("pool.12") == ("pool.12", "pool")


TREE = '[supervisors.r]\n[actors.b]\nsupervisor = "r"\nclass = "m:B"\n'


@pytest.mark.parametrize("environment, enforced", [("development", False), ("staging", True)])
def test_permissions_are_enforced_outside_development(environment, enforced):
    config = parse_config(f'environment = "{environment}"\n' + TREE + '[actors.a]\nsupervisor = "r"\n'
                          'class = "m:A"\n[actors.a.permissions]\nsend_to = ["b"]\n')
    assert config.actors["a"].permissions == Permissions(send_to=("b",), enforced=enforced)
    assert config.actors["b"].permissions is None


def test_send_to_must_name_configured_actors_or_pools():
    with pytest.raises(Exception) as refused:
        parse_config(TREE + '[actors.a]\nsupervisor = "r"\nclass = "m:A"\n'
                     'permissions = { send_to = ["b", "nobody"], resources = [] }\n')
    text = str(refused.value)
    assert "actors.a.permissions.send_to[1]: no actor or pool named 'nobody'" in text
    assert "actors.a.permissions.resources: unknown key" in text
