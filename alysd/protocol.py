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
    root  → actor  Reconfigure  a new spec to take live (reload), between two messages
    actor → root   Reconfigured what came of it: applied | needs_restart | failed
    root  → actor  PreserveOnStop  on the next orderly stop, write ``preserve_state()`` here
    root  → actor  Topology   who can be messaged changed (reload: actors added, removed,
                              mailboxes resized, pools and subscriptions changed)
    root  → actor  Inject     a fault to suffer: memory, cpu or hang (alysctl chaos)

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
    root → zygote  Topology   the directory every later fork inherits (reload)
    root → zygote  CheckImports  import these actor classes (reload, before anything changes)
    zygote → root  ImportsChecked  the import errors, if any

Every actor process is a child of the zygote, so only the zygote can reap it;
``Exited`` is how the root learns of deaths, by event, never by polling.

Both channels are ordered: a ``Spawn`` sent after a ``Topology`` forks with
that topology's directory, and an actor applies system mail in the order it
was sent.
"""

from __future__ import annotations

import signal

import msgspec

from alysd.config import ActorSpec, Backpressure, Config, Delivery, Permissions

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


class Inject(msgspec.Struct, tag=True, array_like=True):
    """A fault to suffer (``alysctl chaos``, with ``system.fault_injection``):
    ``memory`` (allocate ``mib`` MiB, held for ``duration``), ``cpu`` (burn a
    core for ``duration``) or ``hang`` (the loop stops serving for
    ``duration``; with ``gil``, holding the GIL, so even the heartbeat stops)."""

    fault: str
    duration: float
    mib: int = 0
    gil: bool = False


class Reconfigure(msgspec.Struct, tag=True, array_like=True):
    """The actor's spec changed in ways it may take without a restart (a reload):
    mailbox capacity, memory limit, its ``config`` table and the ``settings`` of
    the node sections it uses, and fields only the root reads. Applied between
    two messages; answered with ``Reconfigured`` echoing ``seq``.

    The actor keeps what its process was built from (class, supervisor,
    batching, mailbox policy and delivery): a spec that changes one of those
    is answered ``needs_restart`` with nothing applied."""

    seq: int
    spec: ActorSpec


APPLIED = "applied"              # everything applied (also: config and settings were unchanged)
NEEDS_RESTART = "needs_restart"  # a change only a new incarnation can take; nothing applied
FAILED = "failed"                # config_changed() raised: the old config and settings stay,
                                 # the rest of the spec was applied


class Reconfigured(msgspec.Struct, tag=True, array_like=True):
    incarnation: int
    seq: int
    outcome: str                 # APPLIED | NEEDS_RESTART | FAILED
    error: str | None            # for FAILED: the exception, on one line
    health: str                  # its health_check() after applying
    health_reason: str | None = None


class PreserveOnStop(msgspec.Struct, tag=True, array_like=True):
    """On its next orderly stop (after ``stopped()``), an actor whose class
    defines ``preserve_state()`` writes what it returns to ``path`` (mode 0600,
    atomically), for its next incarnation's ``restore_state()``."""

    path: str


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
    # A state blob written by the previous incarnation (``PreserveOnStop``): when
    # the file exists, ``restore_state()`` gets it before ``started()``.
    restore_from: str | None = None


class Peer(msgspec.Struct, frozen=True):
    """What a sender must know of a receiver to deliver to it."""

    capacity: int
    backpressure: Backpressure
    delivery: Delivery
    max_retries: int
    permissions: Permissions | None = None   # what it may send (checked by both ends)


class Directory(msgspec.Struct, frozen=True):
    """Who can be messaged: held by the zygote and inherited by every actor it forks,
    so a spawn never serialises the whole tree (that made starting 1000 actors
    quadratic). A reload changes it by ``Topology`` (``generation`` counts them)."""

    peers: dict[str, Peer]                   # every actor (pool members included)
    pools: dict[str, tuple[str, ...]]        # pool name -> member names
    least_loaded: frozenset[str]             # pools routed by mailbox depth, not round robin
    subscribers: dict[str, tuple[str, ...]]  # event type -> actor or pool names
    generation: int = 0                      # of the last Topology applied; 0 as configured

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
                            spec.mailbox.delivery, spec.mailbox.max_retries, spec.permissions)
                 for name, spec in config.actors.items()}
        least = frozenset(spec.pool for spec in config.actors.values()
                          if spec.pool and spec.routing.value == "least_loaded")
        return cls(peers, dict(config.pools), least, {k: tuple(v) for k, v in table.items()})

    def with_topology(self, topology: "Topology") -> "Directory":
        """This directory as ``topology`` leaves it. Applying the same topology
        again changes nothing; an older one than this directory's generation is
        ignored (it was sent to a process forked after it)."""
        if topology.generation < self.generation:
            return self
        removed = set(topology.removed)
        peers = {name: peer for name, peer in self.peers.items() if name not in removed}
        peers.update(topology.peers)
        return Directory(peers, dict(topology.pools), topology.least_loaded,
                         dict(topology.subscribers), topology.generation)


class Topology(msgspec.Struct, tag=True, array_like=True, frozen=True):
    """A change of the directory (a reload), sent to the zygote and to every
    running actor. ``peers`` holds the added and changed peers only, ``slots``
    the actor-table slot of each added one; the pool, routing and subscriber
    tables are complete. Applying it twice is harmless."""

    generation: int
    peers: dict[str, Peer]
    removed: tuple[str, ...]
    slots: dict[str, int]
    pools: dict[str, tuple[str, ...]]
    least_loaded: frozenset[str]
    subscribers: dict[str, tuple[str, ...]]

    @classmethod
    def between(cls, generation: int, old: Directory, new: Directory,
                slots: dict[str, int]) -> "Topology":
        """What turns ``old`` into ``new``: ``old.with_topology(result)`` equals
        ``new`` at ``generation``. ``slots`` must give a slot to every actor
        added (others in it are left out)."""
        added = [name for name in new.peers if name not in old.peers]
        missing = [name for name in added if name not in slots]
        if missing:
            raise ValueError(f"no actor-table slot for the added actor(s) {', '.join(missing)}")
        return cls(
            generation=generation,
            peers={name: peer for name, peer in new.peers.items() if old.peers.get(name) != peer},
            removed=tuple(name for name in old.peers if name not in new.peers),
            slots={name: slots[name] for name in added},
            pools=dict(new.pools),
            least_loaded=new.least_loaded,
            subscribers=dict(new.subscribers))


SystemMessage = (Hello | Go | Ready | HealthProbe | HealthReport | FilterHits | Subscribe | Filters
                 | Subscribers | Reconfigure | Reconfigured | PreserveOnStop | Topology | Inject)


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


class CheckImports(msgspec.Struct, tag=True, array_like=True):
    """Import these actor classes (a reload's new ones) before anything changes."""

    request: int                           # echoed in the answer
    class_paths: tuple[str, ...]


class ImportsChecked(msgspec.Struct, tag=True, array_like=True):
    request: int
    issues: list[tuple[str, str]]          # (class path, "ExceptionType: message") per failure


ZygoteMessage = (Preloaded | Spawn | Spawned | SpawnFailed | Exited | Topology | CheckImports
                 | ImportsChecked)

system_encoder = msgspec.msgpack.Encoder()
system_decoder = msgspec.msgpack.Decoder(SystemMessage)
zygote_decoder = msgspec.msgpack.Decoder(ZygoteMessage)
