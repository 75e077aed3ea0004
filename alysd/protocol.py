"""Messages of alysd's two internal channels, as tagged msgspec Structs.

System channel (a unix SOCK_SEQPACKET connection per actor to the root's
``system.sock``; see ``alysd.system_channel``)::

    actor → root   Hello      sockets are up; waiting for Go (ordered start)
    root  → actor  Go         run ``started()`` now
    actor → root   Ready      ``started()`` returned: the incarnation serves
    root  → actor  HealthProbe  every ``health_interval``: how are you?
    actor → root   HealthReport its ``health_check()``, answered between two messages
    actor → root   FilterHits   what the installed filters matched, when that changed
                                (at most once per ``heartbeat_interval``)
    actor → root   Subscribe  ``ctx.subscribe(event_type)`` at run time
    root  → actor  Filters    the message filters now installed (``alysctl filter``)
    root  → actor  Subscribers  who subscribed to what at run time

The root follows every root → actor message with SIGUSR1 (``SYSTEM_MAIL``), which
breaks an idle actor's blocking receive so it reads the channel at once; a
busy one reads it when its handler returns. System traffic never queues
behind, or counts against, the user mailbox.

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

import signal

import msgspec

from alysd.config import ActorSpec, Backpressure, Config, Delivery

SYSTEM_MAIL = signal.SIGUSR1


class Hello(msgspec.Struct, tag=True, array_like=True):
    incarnation: int
    pid: int


class Go(msgspec.Struct, tag=True, array_like=True):
    pass


class Ready(msgspec.Struct, tag=True, array_like=True):
    incarnation: int
    health: str = "healthy"       # its health_check() right after started()
    health_reason: str | None = None


class HealthProbe(msgspec.Struct, tag=True, array_like=True):
    probe: int                   # echoed in the report, so a late answer is not taken for a new one


class HealthReport(msgspec.Struct, tag=True, array_like=True):
    incarnation: int
    probe: int
    health: str                  # healthy | degraded | unhealthy
    health_reason: str | None = None


class FilterHits(msgspec.Struct, tag=True, array_like=True):
    incarnation: int
    hits: dict[int, int]         # filter id -> messages it matched, this incarnation


class Subscribe(msgspec.Struct, tag=True, array_like=True):
    event_type: str


class FilterRule(msgspec.Struct, frozen=True, kw_only=True):
    """One installed message filter: messages matching every given field are
    dropped (and dead-lettered as ``filtered``), delayed, or duplicated, each
    with probability ``rate``. A field left None matches anything."""

    id: int
    action: str                    # drop | delay | duplicate
    sender: str | None = None
    receiver: str | None = None
    message_type: str | None = None
    rate: float = 1.0
    delay: float | None = None


class Filters(msgspec.Struct, tag=True, array_like=True):
    rules: tuple[FilterRule, ...]


class Subscribers(msgspec.Struct, tag=True, array_like=True):
    """Run-time subscriptions (event type → actor or pool names), on top of the
    configured ones."""

    table: dict[str, tuple[str, ...]]


SystemMessage = (Hello | Go | Ready | HealthProbe | HealthReport | FilterHits | Subscribe | Filters
                 | Subscribers)


class ActorBoot(msgspec.Struct, array_like=True, kw_only=True):
    """What the root tells the zygote about one incarnation to fork."""

    spec: ActorSpec
    incarnation: int
    runtime_dir: str
    heartbeat_interval: float
    max_message_bytes: int
    dead_letters: str                # the dead-letter queue's directory
    dead_letter_capacity: int
    delivery_timeout: float
    wait_for_go: bool = True


class Peer(msgspec.Struct, frozen=True):
    """What a sender must know of a receiver to deliver to it."""

    capacity: int
    backpressure: Backpressure
    delivery: Delivery
    max_retries: int


class Directory(msgspec.Struct, frozen=True):
    """Who can be messaged: held by the zygote and inherited by every actor it forks,
    so a spawn never serialises the whole tree (that made starting 1000 actors
    quadratic)."""

    peers: dict[str, Peer]                   # every actor (pool members included)
    pools: dict[str, tuple[str, ...]]        # pool name -> member names
    least_loaded: frozenset[str]             # pools routed by mailbox depth, not round robin
    subscribers: dict[str, tuple[str, ...]]  # event type -> actor or pool names

    @classmethod
    def from_config(cls, config: Config) -> "Directory":
        table: dict[str, list[str]] = {}
        for name, spec in config.actors.items():
            # A pool subscribes once: each event goes to one of its members.
            subscriber = spec.pool or name
            for event in spec.subscribe:
                if subscriber not in table.setdefault(event, []):
                    table[event].append(subscriber)
        peers = {name: Peer(spec.mailbox.capacity, spec.mailbox.backpressure,
                            spec.mailbox.delivery, spec.mailbox.max_retries)
                 for name, spec in config.actors.items()}
        least = frozenset(spec.pool for spec in config.actors.values()
                          if spec.pool and spec.routing.value == "least_loaded")
        return cls(peers, dict(config.pools), least, {k: tuple(v) for k, v in table.items()})


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
