"""Messages of alysd's two internal channels, as tagged msgspec Structs.

System channel (a unix SOCK_SEQPACKET connection per actor to the root's
``system.sock``; see ``alysd.system_channel``)::

    actor → root   Hello      sockets are up; waiting for Go (ordered start)
    root  → actor  Go         run ``started()`` now
    actor → root   Ready      ``started()`` returned: the incarnation serves
    actor → root   Heartbeat  after every ``heartbeat_interval`` of uptime: depth,
                              counters, health (so each one stands for a healthy period)

Zygote channel (a SOCK_SEQPACKET socketpair between the root and its fork
server; one datagram per message)::

    zygote → root  Preloaded  actor classes imported (or the import errors)
    root → zygote  Spawn      fork one incarnation of an actor
    zygote → root  Spawned    its pid
    zygote → root  Exited     an actor process ended, with its waitpid status

Every actor process is a child of the zygote, so only the zygote can reap it;
``Exited`` is how the root learns of deaths, by event, never by polling.
"""

from __future__ import annotations

import msgspec

from alysd.config import ActorSpec, Config


class Hello(msgspec.Struct, tag=True, array_like=True):
    incarnation: int
    pid: int


class Go(msgspec.Struct, tag=True, array_like=True):
    pass


class Ready(msgspec.Struct, tag=True, array_like=True):
    incarnation: int
    health: str = "healthy"       # its health_check() right after started()
    health_reason: str | None = None


class Heartbeat(msgspec.Struct, tag=True, array_like=True):
    incarnation: int
    mailbox_depth: int
    handled: int
    errors: int
    health: str                  # healthy | degraded | unhealthy
    health_reason: str | None = None


SystemMessage = Hello | Go | Ready | Heartbeat


class ActorBoot(msgspec.Struct, array_like=True, kw_only=True):
    """What the root tells the zygote about one incarnation to fork."""

    spec: ActorSpec
    incarnation: int
    runtime_dir: str
    heartbeat_interval: float
    max_message_bytes: int
    wait_for_go: bool = True


class Directory(msgspec.Struct, frozen=True):
    """Who can be messaged: held by the zygote and inherited by every actor it forks,
    so a spawn never serialises the whole tree (that made starting 1000 actors
    quadratic)."""

    peers: frozenset[str]                  # every configured actor name
    subscribers: dict[str, tuple[str, ...]]  # event type -> subscribed actor names

    @classmethod
    def from_config(cls, config: Config) -> "Directory":
        table: dict[str, list[str]] = {}
        for name, spec in config.actors.items():
            for event in spec.subscribe:
                table.setdefault(event, []).append(name)
        return cls(frozenset(config.actors), {k: tuple(v) for k, v in table.items()})


class Preloaded(msgspec.Struct, tag=True, array_like=True):
    issues: list[tuple[str, str]]          # (config key path, message) per import failure


class Spawn(msgspec.Struct, tag=True, array_like=True):
    boot: ActorBoot


class Spawned(msgspec.Struct, tag=True, array_like=True):
    name: str
    incarnation: int
    pid: int


class SpawnFailed(msgspec.Struct, tag=True, array_like=True):
    name: str
    incarnation: int
    error: str


class Exited(msgspec.Struct, tag=True, array_like=True):
    pid: int
    status: int


ZygoteMessage = Preloaded | Spawn | Spawned | SpawnFailed | Exited

system_encoder = msgspec.msgpack.Encoder()
system_decoder = msgspec.msgpack.Decoder(SystemMessage)
zygote_decoder = msgspec.msgpack.Decoder(ZygoteMessage)
