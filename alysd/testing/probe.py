"""``Probed``: an actor that runs another one and answers a test-only query for
its state (what ``ActorPropertyTest`` reads after each message).

Configured like any actor, with the actor under test named in its config::

    [actors.counter]
    class = "alysd.testing.probe:Probed"
    [actors.counter.config]
    "$actor" = "actors.examples:Counter"     # the rest is that actor's config

Every hook but ``handle_batch``, ``config_changed`` and ``preserve_state`` is
handed to the wrapped actor, and messages are converted to its
``message_type`` first, so it behaves as it would configured directly. The
message ``{"type": "$alysd_state"}`` is answered with its ``test_state()`` when
it defines one, else with its public attributes (those msgspec can encode).

This module is imported by the fork server, so it imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

import msgspec

from alysd.actor import Actor, Health, overrides
from alysd.config import import_actor_class

STATE_QUERY = "$alysd_state"
ACTOR_KEY = "$actor"


class Probed(Actor):
    def __init__(self) -> None:
        self.inner: Actor | None = None
        self._type: Any = Any
        self._restored: bytes | None = None

    def restore_state(self, state: bytes) -> None:
        self._restored = state     # the wrapped actor is made in started(), given its ctx

    def started(self, ctx):
        cls = import_actor_class(ctx.config[ACTOR_KEY])
        self.inner, self._type = cls(), cls.message_type
        if self._restored is not None and overrides(self.inner, "restore_state"):
            self.inner.restore_state(self._restored)
        return self.inner.started(ctx)

    def stopped(self, ctx):
        return self.inner.stopped(ctx) if self.inner is not None else None

    def health_check(self) -> Health:
        return self.inner.health_check() if self.inner is not None else super().health_check()

    def commit(self, ctx) -> None:
        if self.inner is not None and overrides(self.inner, "commit"):
            self.inner.commit(ctx)

    def handle_message(self, message, ctx):
        if isinstance(message, dict) and message.get("type") == STATE_QUERY:
            return state_of(self.inner)
        if self._type is not Any:
            message = msgspec.convert(message, self._type)
        return self.inner.handle_message(message, ctx)


def state_of(actor: Actor) -> Any:
    """What a state query answers for ``actor``."""
    if hasattr(actor, "test_state"):
        return actor.test_state()
    state = {}
    for name, value in vars(actor).items():
        if name.startswith("_"):
            continue
        try:
            msgspec.msgpack.encode(value)
        except TypeError:
            continue
        state[name] = value
    return state
