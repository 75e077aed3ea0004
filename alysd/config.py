"""Configuration of an alysd system: the specs, and the loader that builds them.

A config file (TOML) declares a supervision tree: ``[supervisors.NAME]`` tables
linked by ``parent``, ``[actors.NAME]`` tables linked by ``supervisor``, and
optional tables: ``[system]`` (runtime-wide defaults), ``[monitoring]``,
``[logging]`` and the node's sections (``alysd.node_sections``), plus the
top-level ``environment``. ``load_config`` turns it into a frozen
:class:`Config` or raises one :class:`ConfigError` listing every problem
found, each located by its dotted key path (``KEY[i]`` for an array's item).
Layering environment variables and flags on top is ``alysd.config_layers``;
``config_document`` is the way back, from a Config to the file's terms.

Choices that are not obvious from the code:

* Every key is checked by its own small checker rather than by one
  ``msgspec.convert`` per entry: msgspec stops at the first error of a struct,
  and an operator fixing a file wants all of them at once, each message
  showing the value found. The results are msgspec Structs.
* Loading has three phases: read every table (key-level issues), check the
  tree (names, references, root, cycles), then build the specs. A reference
  check is skipped when the key it depends on was already refused, so one
  mistake is reported once, not again as its consequences.
* An actor with ``instances`` > 1 is a pool: the last step replaces it by its
  members ``NAME.0`` .. ``NAME.<n-1>``, in its place in the start order. A
  configured name cannot contain ``.``, so member names never clash with
  configured ones; ``pool`` is set on members only and is not a TOML key.
  Warnings are computed before that step, once per configured actor.
* Children start in file order, but a supervisor's children come from two
  TOML tables, whose relative order ``tomllib`` loses. That order is recovered
  by scanning the raw text for ``[supervisors.NAME]`` / ``[actors.NAME]``
  headers; entries written without their own header (inline tables, dotted
  keys) and configs given as dicts fall back to supervisors before actors,
  each in dict order.
* Two keys are aliases of others: ``system.log_level`` of ``logging.level``
  and ``max_mailbox_size`` of ``mailbox.capacity``. Both spellings in one
  file must agree; the Specs hold the canonical key only.
* The environment's rules run last, on the built Config, so they judge what
  will actually run.
* The module is pure: besides reading the config file it only imports actor
  classes, and only when asked to (no zmq, no psutil, no process code).
"""

from __future__ import annotations

import enum
import importlib
import os
import re
import tomllib
from collections.abc import Iterable
from typing import Any

import msgspec

from alysd.config_checks import (REFUSED, ItemIssues, Schema, array, boolean, choice, duration,
                                 enum_of, integer, key_path, listen, number, show, size, spell,
                                 spelled_as, string, table)
from alysd.errors import ConfigError, ConfigIssue
from alysd.node_sections import (LOG_LEVELS, NODE_SECTIONS, SECTIONS, BridgeSpec, ChainSpec,
                                 Environment, GovernanceSpec, LoggingSpec, NetworkSpec,
                                 StorageSpec, SyncSpec, check_sections, environment_rules)
from alysd.runtime_dir import MAX_NAME
from alysd.units import format_duration

MiB = 1 << 20

NAME_PATTERN = re.compile(rf"[a-z][a-z0-9_-]{{0,{MAX_NAME - 1}}}")
"""Supervisor and actor names: they become socket file names and process titles."""

MAX_INSTANCES = 256
"""Most members a pool (an actor with ``instances`` > 1) may have."""


class Strategy(enum.Enum):
    """How a supervisor reacts when one of its children fails."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class ChildPolicy(enum.Enum):
    """How one actor is restarted (pacing and giving up), per child."""

    ONE_FOR_ONE = "one_for_one"
    EXPONENTIAL_BACKOFF = "exponential_backoff"
    CIRCUIT_BREAKER = "circuit_breaker"
    NEVER = "never"


class Restart(enum.Enum):
    """Which exits of an actor lead to a restart (as in OTP)."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Backpressure(enum.Enum):
    """What a full mailbox does with one more message."""

    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    BLOCK = "block"
    FAIL = "fail"


class Delivery(enum.Enum):
    """Which loss a mailbox risks when its actor crashes with a message in hand."""

    AT_LEAST_ONCE = "at_least_once"  # handed again after a crash (up to max_retries)
    AT_MOST_ONCE = "at_most_once"    # never handed twice; lost if the handler crashes


class PoolRouting(enum.Enum):
    """Which member of a pool a message to the pool's name goes to."""

    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"


class SystemSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Runtime-wide settings; durations in seconds, sizes in bytes.

    Resource limits are checked every ``sample_interval`` (actors without
    limits are sampled less often) and acted on after ``limit_breaches``
    readings in a row over a limit. Every ``health_interval`` each running
    actor is asked for its health; no answer within ``health_timeout`` counts
    as unhealthy. An actor silent for 3 ``heartbeat_interval`` is hung.

    ``runtime_dir`` and ``state_dir`` None mean "resolved by the daemon".
    ``delivery_timeout`` is how long a message waits for a receiver that is
    not running before it is dead-lettered as timed out; at most
    ``dead_letter_capacity`` dead letters are kept.

    ``reload_timeout`` is how long a configuration reload may take before it
    is abandoned; ``watch_config`` reloads when the config file changes.
    ``control_group`` names the group whose members may use the read-only
    control commands (None: the owner and root only). ``fault_injection`` lets
    ``alysctl chaos`` make actors allocate memory, burn CPU or hang. The
    log level is ``Config.logging.level`` (``log_level`` here is only accepted
    as its TOML alias).
    """

    runtime_dir: str | None = None
    state_dir: str | None = None
    heartbeat_interval: float = 1.0
    start_timeout: float = 10.0
    shutdown_timeout: float = 5.0
    max_message_bytes: int = 16 * MiB
    dead_letter_capacity: int = 10000
    delivery_timeout: float = 30.0
    sample_interval: float = 1.0
    limit_breaches: int = 2
    health_interval: float = 5.0
    health_timeout: float = 3.0
    reload_timeout: float = 30.0
    watch_config: bool = False
    control_group: str | None = None
    fault_injection: bool = False


class MonitoringSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The HTTP endpoint serving ``/metrics`` and ``/health``; ``listen`` is
    (host, port), or None (the default) for no endpoint."""

    listen: tuple[str, int] | None = None


class MailboxSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An actor's mailbox; ``max_retries`` is how many crashes of the handler
    on the same message are tolerated before that message is quarantined."""

    capacity: int = 10000
    backpressure: Backpressure = Backpressure.BLOCK
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    max_retries: int = 3


class BatchSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Batched handling: up to ``max_batch`` messages, waiting at most
    ``max_wait`` seconds for the batch to fill."""

    max_batch: int = 64
    max_wait: float = 0.005


class BackoffSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff parameters; ``reset_after`` is always a float
    once constructed (10 x ``initial_delay`` when not given)."""

    initial_delay: float = 0.1
    max_delay: float = 10.0
    multiplier: float = 2.0
    max_retries: int = 10
    reset_after: float | None = None

    def __post_init__(self) -> None:
        if self.reset_after is None:
            msgspec.structs.force_setattr(self, "reset_after", 10 * self.initial_delay)


class BreakerSpec(msgspec.Struct, frozen=True, kw_only=True):
    failure_threshold: int = 5
    recovery_timeout: float = 30.0
    success_threshold: int = 1


class SupervisorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A supervisor; ``parent`` is None for the root only."""

    name: str
    parent: str | None = None
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_retries: int = 3
    within_time: float = 5.0


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """What an actor may send: to the actors and pools in ``send_to``, messages
    whose type (a tagged Struct's tag, a dict's ``"type"``, an event type) is in
    ``operations``; None allows any. ``enforced`` is False in development, where
    what would be denied is only logged and counted."""

    send_to: tuple[str, ...] | None = None
    operations: tuple[str, ...] | None = None
    enforced: bool = True


class ActorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An actor; ``shutdown_timeout`` None means brutal_kill (no grace period).

    Limits: ``memory_limit`` bytes of RSS for the actor's whole process tree,
    ``cpu_limit`` cores averaged over ``cpu_window`` seconds, ``max_cpu_time``
    seconds of CPU for one message (None: no such limit).

    ``config`` is the actor's free-form ``[actors.NAME.config]`` table;
    ``batch`` is None when the actor has no ``[actors.NAME.batch]`` table.
    ``uses`` names the node sections the actor reads; the loader sets
    ``settings`` to {section: ``settings_of(section)``} for each of them (so
    a change of a used section is a change of this spec). It is not a TOML key.
    ``pool`` is set by the loader only, on the members of a pool (which carry
    the pool's ``instances`` and ``routing``); it is None otherwise.
    """

    name: str
    supervisor: str
    class_path: str
    strategy: ChildPolicy = ChildPolicy.ONE_FOR_ONE
    restart: Restart = Restart.PERMANENT
    memory_limit: int | None = None
    cpu_limit: float | None = None
    cpu_window: float = 5.0
    max_cpu_time: float | None = None
    start_timeout: float = 10.0
    shutdown_timeout: float | None = 5.0
    backoff: BackoffSpec = msgspec.field(default_factory=BackoffSpec)
    breaker: BreakerSpec = msgspec.field(default_factory=BreakerSpec)
    mailbox: MailboxSpec = msgspec.field(default_factory=MailboxSpec)
    batch: BatchSpec | None = None
    instances: int = 1
    routing: PoolRouting = PoolRouting.ROUND_ROBIN
    pool: str | None = None
    subscribe: tuple[str, ...] = ()
    permissions: Permissions | None = None
    uses: tuple[str, ...] = ()
    config: dict[str, Any] = {}
    settings: dict[str, Any] = {}


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """A validated supervision tree.

    Guarantees (for a Config made by this module): exactly one root
    supervisor, every parent/supervisor reference resolves to a supervisor,
    no cycles. ``supervisors`` and ``actors`` are in depth-first start order;
    ``start_order`` is the whole tree in that order as ("supervisor"|"actor",
    name) pairs, root first, which is what ``children`` reads.

    A pool (an actor configured with ``instances`` > 1) is not in ``actors``:
    its members ``NAME.0`` .. ``NAME.<n-1>`` are, in index order, where it
    would have been (likewise in ``start_order``), each with ``pool`` = NAME.
    ``pools`` maps each pool's name to its members' names in that order.

    The node sections (``chain`` .. ``sync``) and ``logging`` always hold
    every key (defaults filled in); ``environment``'s rules were applied:
    its refusals raised, its warnings are in ``warnings``.
    """

    environment: Environment = Environment.DEVELOPMENT
    system: SystemSpec
    supervisors: dict[str, SupervisorSpec]
    monitoring: MonitoringSpec = MonitoringSpec()
    actors: dict[str, ActorSpec]
    chain: ChainSpec = ChainSpec()
    network: NetworkSpec = NetworkSpec()
    bridge: BridgeSpec = BridgeSpec()
    storage: StorageSpec = StorageSpec()
    governance: GovernanceSpec = GovernanceSpec()
    sync: SyncSpec = SyncSpec()
    logging: LoggingSpec = LoggingSpec()
    root: str
    start_order: tuple[tuple[str, str], ...]
    source: str | None = None
    warnings: tuple[str, ...] = ()
    pools: dict[str, tuple[str, ...]] = {}

    def children(self, supervisor: str) -> list[tuple[str, str]]:
        """Direct children of ``supervisor`` as (kind, name), in start order.

        Raises KeyError when ``supervisor`` is not a supervisor.
        """
        if supervisor not in self.supervisors:
            raise KeyError(f"no supervisor named {supervisor!r}")
        return [(kind, name) for kind, name in self.start_order
                if self._parent(kind, name) == supervisor]

    def actors_under(self, supervisor: str) -> list[str]:
        """Every actor in the subtree of ``supervisor``, in start order."""
        if supervisor not in self.supervisors:
            raise KeyError(f"no supervisor named {supervisor!r}")
        return [name for name in self.actors if supervisor in self.path(name)]

    def resolve_actor(self, name: str) -> list[str]:
        """The actors a message to ``name`` may go to: a pool's members in
        index order, or ``[name]`` for an actor (a pool member included).

        Raises KeyError when ``name`` is neither (a supervisor included).
        """
        if name in self.pools:
            return list(self.pools[name])
        if name in self.actors:
            return [name]
        raise KeyError(f"no actor or pool named {name!r}")

    def path(self, name: str) -> list[str]:
        """Names from the root down to ``name`` (an actor or a supervisor), inclusive."""
        if name in self.actors:
            chain, up = [name], self.actors[name].supervisor
        elif name in self.supervisors:
            chain, up = [], name
        else:
            raise KeyError(f"no actor or supervisor named {name!r}")
        while up is not None:
            chain.append(up)
            up = self.supervisors[up].parent
        return chain[::-1]

    def _parent(self, kind: str, name: str) -> str | None:
        if kind == "actor":
            return self.actors[name].supervisor
        return self.supervisors[name].parent


# --- key checkers (the generic ones are in alysd.config_checks)

@spelled_as(lambda seconds: "brutal_kill" if seconds is None else spell(duration, seconds))
def _shutdown_timeout(value: Any) -> float | None:
    if value == "brutal_kill":
        return None
    try:
        return duration(value)
    except ValueError as e:
        raise ValueError('expected "brutal_kill" or ' + str(e).removeprefix("expected ")) from None


def _event_types(value: Any) -> tuple[str, ...]:
    if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
        raise ValueError(f"expected an array of event type names, got {show(value)}")
    return tuple(dict.fromkeys(value))


_section_names = array(choice(NODE_SECTIONS), "section names")
_names = array(string("an actor or pool name"), "actor or pool names")
_operations = array(string("a message type"), "message types")


def _uses(value: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_section_names(value)))


def _class_path(value: Any) -> str:
    module, colon, name = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not (colon and name.isidentifier() and all(p.isidentifier() for p in module.split("."))):
        raise ValueError(f'expected "module.path:ClassName", got {show(value)}')
    return value


# Defaults are not repeated in schemas: absent keys take the spec's default.
_SYSTEM: Schema = {
    "runtime_dir": string("a directory path"),
    "state_dir": string("a directory path"),
    "heartbeat_interval": duration,
    "start_timeout": duration,
    "shutdown_timeout": duration,
    "max_message_bytes": size,
    "log_level": choice(LOG_LEVELS),  # the alias of [logging] level
    "dead_letter_capacity": integer(1),
    "delivery_timeout": duration,
    "sample_interval": duration,
    "limit_breaches": integer(1),
    "health_interval": duration,
    "health_timeout": duration,
    "reload_timeout": duration,
    "watch_config": boolean,
    "fault_injection": boolean,
    "control_group": string("a group name"),
}
_MONITORING: Schema = {
    "listen": listen,
}
_SUPERVISOR: Schema = {
    "parent": string("a supervisor name"),
    "strategy": enum_of(Strategy),
    "max_retries": integer(0),
    "within_time": duration,
}
_BACKOFF: Schema = {
    "initial_delay": duration,
    "max_delay": duration,
    "multiplier": number(1, inclusive=True),
    "max_retries": integer(0),
    "reset_after": duration,
}
_BREAKER: Schema = {
    "failure_threshold": integer(1),
    "recovery_timeout": duration,
    "success_threshold": integer(1),
}
_MAILBOX: Schema = {
    "capacity": integer(1),
    "backpressure": enum_of(Backpressure),
    "delivery": enum_of(Delivery),
    "max_retries": integer(0),
}
_BATCH: Schema = {
    "max_batch": integer(1),
    "max_wait": duration,
}
_ACTOR: Schema = {
    "supervisor": string("a supervisor name"),
    "class": _class_path,
    "strategy": enum_of(ChildPolicy),
    "restart": enum_of(Restart),
    "memory_limit": size,
    "cpu_limit": number(0, inclusive=False),
    "cpu_window": duration,
    "max_cpu_time": duration,
    "max_mailbox_size": integer(1),  # the alias of mailbox.capacity
    "start_timeout": duration,
    "shutdown_timeout": _shutdown_timeout,
    **_BACKOFF,
    **_BREAKER,
    "mailbox": _MAILBOX,
    "batch": _BATCH,
    "instances": integer(1, MAX_INSTANCES),
    "routing": enum_of(PoolRouting),
    "subscribe": _event_types,
    "uses": _uses,
    "permissions": {"send_to": _names, "operations": _operations},
    "config": table,
}
_ACTOR_REQUIRED = ("supervisor", "class")
_TABLES: dict[str, Schema] = {"system": _SYSTEM, "monitoring": _MONITORING,
                              **{name: schema for name, (schema, _) in SECTIONS.items()}}
"""Top-level tables other than supervisors and actors."""
_ENVIRONMENT = enum_of(Environment)
_TOP_KEYS = ("environment", *_TABLES, "supervisors", "actors")
_DEFAULT_BACKOFF = BackoffSpec()


def _read(value: Any, schema: Schema, path: str, issues: list[ConfigIssue]) -> dict | None:
    """Check a table against ``schema``; return its accepted keys' decoded values.

    Refused keys are reported and map to ``REFUSED``, so later checks can
    tell "refused" from "absent"; unknown keys are reported and left out.
    Returns None (reported) when ``value`` is not a table at all.
    """
    if not isinstance(value, dict):
        issues.append(ConfigIssue(path, f"expected a table, got {show(value)}"))
        return None
    accepted: dict[str, Any] = {}
    for key, item in value.items():
        where = f"{path}.{key_path(key)}"
        rule = schema.get(key) if isinstance(key, str) else None
        if rule is None:
            issues.append(ConfigIssue(where, "unknown key"))
        elif isinstance(rule, dict):
            sub = _read(item, rule, where, issues)
            accepted[key] = REFUSED if sub is None else sub
        else:
            try:
                accepted[key] = rule(item)
            except ItemIssues as e:
                issues.extend(ConfigIssue(f"{where}[{index}]", message)
                              for index, message in e.items)
                accepted[key] = REFUSED
            except ValueError as e:
                issues.append(ConfigIssue(where, str(e)))
                accepted[key] = REFUSED
    return accepted


def _read_entries(data: dict, section: str, schema: Schema,
                  issues: list[ConfigIssue]) -> dict[Any, dict | None] | None:
    """Read every entry of ``[section.*]``: name -> accepted values (None when
    the entry is not a table). None when the section itself is not a table."""
    table = data.get(section, {})
    if not isinstance(table, dict):
        issues.append(ConfigIssue(section, f"expected a table of {section}, got {show(table)}"))
        return None
    entries = {}
    for name, entry in table.items():
        path = key_path(section, name)
        if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
            issues.append(ConfigIssue(path, f"invalid name {show(name)}: expected a lowercase "
                                      f"letter followed by at most {MAX_NAME - 1} lowercase "
                                      "letters, digits, '_' or '-'"))
        entries[name] = _read(entry, schema, path, issues)
    return entries


def _member_name(pool: str, index: int) -> str:
    return f"{pool}.{index}"


def _check_actor(name: Any, values: dict, issues: list[ConfigIssue]) -> None:
    """Actor checks beyond single keys: required keys, pool member names that
    fit in MAX_NAME, max_delay >= initial_delay."""
    path = key_path("actors", name)
    for key in _ACTOR_REQUIRED:
        if key not in values:
            issues.append(ConfigIssue(f"{path}.{key}", "required key missing"))
    instances = values.get("instances", 1)
    # An invalid name is reported already; a member name is only checked on a valid one.
    if (instances is not REFUSED and instances > 1 and isinstance(name, str)
            and NAME_PATTERN.fullmatch(name)):
        last = _member_name(name, instances - 1)
        if len(last) > MAX_NAME:
            room = MAX_NAME - len(name) - 1  # digits left after "NAME."
            fits = 1 if room < 1 else min(MAX_INSTANCES, 10 ** room)
            issues.append(ConfigIssue(f"{path}.instances", f"expected at most {fits} for this "
                                      f"name: member names must fit in {MAX_NAME} characters, "
                                      f"{last!r} has {len(last)}; got {instances}"))
    alias, mailbox = values.get("max_mailbox_size"), values.get("mailbox")
    capacity = mailbox.get("capacity") if isinstance(mailbox, dict) else None
    if None not in (alias, capacity) and REFUSED not in (alias, capacity) and alias != capacity:
        issues.append(ConfigIssue(f"{path}.max_mailbox_size", "conflicts with mailbox.capacity "
                                  f"({capacity}): give one of them, got {alias}"))
    initial = values.get("initial_delay", _DEFAULT_BACKOFF.initial_delay)
    maximum = values.get("max_delay", _DEFAULT_BACKOFF.max_delay)
    if REFUSED in (initial, maximum) or maximum >= initial:
        return
    if "max_delay" in values:
        issues.append(ConfigIssue(f"{path}.max_delay", "expected a duration >= initial_delay "
                                  f"({format_duration(initial)}), got {format_duration(maximum)}"))
    else:
        issues.append(ConfigIssue(f"{path}.initial_delay", "expected a duration <= max_delay "
                                  f"(default {format_duration(maximum)}), "
                                  f"got {format_duration(initial)}"))


def _no_supervisor(name: str, actors: dict) -> str:
    hint = f" ({name!r} is an actor)" if name in actors else ""
    return f"no supervisor named {name!r}{hint}"


def _cycles(parents: dict[Any, Any]) -> list[list[Any]]:
    """Each parent cycle once, as the list of its members."""
    walked_from: dict[Any, Any] = {}
    cycles = []
    for start in parents:
        trail, node = [], start
        while node in parents and node not in walked_from:
            walked_from[node] = start
            trail.append(node)
            node = parents[node]
        # Meeting a node of this very walk closes a cycle; meeting an older
        # walk's node means the cycle (if any) was already found from there.
        if node in walked_from and walked_from[node] == start:
            cycles.append(trail[trail.index(node):])
    return cycles


def _check_tree(supervisors: dict[Any, dict | None], actors: dict[Any, dict | None],
                issues: list[ConfigIssue]) -> None:
    """Unique names, resolvable references, exactly one root, no parent cycle."""
    for name in actors:
        if name in supervisors:
            issues.append(ConfigIssue(key_path("actors", name),
                                      f"name already used by supervisor {name}"))
    # Supervisors whose parent was refused are left out: their place in the
    # tree is unknown, and guessing would report the same mistake again.
    parents = {name: values.get("parent") for name, values in supervisors.items()
               if values is not None and values.get("parent") is not REFUSED}
    for name, parent in parents.items():
        if parent is not None and parent not in supervisors:
            issues.append(ConfigIssue(key_path("supervisors", name, "parent"),
                                      _no_supervisor(parent, actors)))
    for name, values in actors.items():
        supervisor = values.get("supervisor") if values else None
        if isinstance(supervisor, str) and supervisor not in supervisors:
            issues.append(ConfigIssue(key_path("actors", name, "supervisor"),
                                      _no_supervisor(supervisor, actors)))
        permissions = values.get("permissions") if values else None
        send_to = permissions.get("send_to") if isinstance(permissions, dict) else None
        for index, target in enumerate(send_to if isinstance(send_to, tuple) else ()):
            if target not in actors:
                issues.append(ConfigIssue(key_path("actors", name, "permissions", "send_to")
                                          + f"[{index}]", f"no actor or pool named {target!r}"))
    if not supervisors:
        issues.append(ConfigIssue("supervisors", "at least one supervisor is required"))
        return
    roots = [name for name, parent in parents.items() if parent is None]
    if len(roots) > 1:
        issues.append(ConfigIssue("supervisors", f"{len(roots)} root supervisors "
                                  f"({', '.join(map(str, roots))}): exactly one supervisor "
                                  "must have no parent"))
    elif not roots and len(parents) == len(supervisors):
        issues.append(ConfigIssue("supervisors", "no root supervisor: exactly one supervisor "
                                  "must have no parent"))
    for cycle in _cycles(parents):
        issues.append(ConfigIssue(key_path("supervisors", cycle[0], "parent"),
                                  "parent cycle: " + " -> ".join(map(str, cycle + cycle[:1]))))


def settings_of(section: msgspec.Struct) -> dict[str, Any]:
    """A node section as an actor sees it in ``ctx.settings``: plain data
    (dicts, lists, str, int, float, bool, None), as it arrives in the actor's
    process whatever the encoding."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(section))


def _actor_spec(name: str, values: dict, system: SystemSpec,
                sections: dict[str, msgspec.Struct], enforced: bool) -> ActorSpec:
    values = dict(values)

    def take(schema: Schema) -> dict:
        return {key: values.pop(key) for key in schema if key in values}

    batch = values.pop("batch", None)
    permissions = values.pop("permissions", None)
    mailbox = dict(values.pop("mailbox", {}))
    # The seed's ActorResourceLimits name for the mailbox's capacity.
    if "max_mailbox_size" in values:
        mailbox["capacity"] = values.pop("max_mailbox_size")
    return ActorSpec(
        name=name,
        supervisor=values.pop("supervisor"),
        class_path=values.pop("class"),
        backoff=BackoffSpec(**take(_BACKOFF)),
        breaker=BreakerSpec(**take(_BREAKER)),
        mailbox=MailboxSpec(**mailbox),
        batch=None if batch is None else BatchSpec(**batch),
        permissions=None if permissions is None else Permissions(**permissions,
                                                                 enforced=enforced),
        start_timeout=values.pop("start_timeout", system.start_timeout),
        shutdown_timeout=values.pop("shutdown_timeout", system.shutdown_timeout),
        settings={section: settings_of(sections[section]) for section in values.get("uses", ())},
        **values,  # strategy, restart, memory_limit, cpu_limit, instances, routing,
                   # subscribe, uses, config
    )


# Keys that only mean something under one child policy.
_POLICY_KEYS = {ChildPolicy.EXPONENTIAL_BACKOFF: _BACKOFF, ChildPolicy.CIRCUIT_BREAKER: _BREAKER}


def _actor_warnings(actor: ActorSpec, given: Iterable[str],
                    supervisor: SupervisorSpec) -> list[str]:
    """Non-fatal findings: ignored policy keys, routing without a pool, an
    unreachable intensity window."""
    where = key_path("actors", actor.name)
    found = []
    for policy, schema in _POLICY_KEYS.items():
        unused = [key for key in given if key in schema]
        if unused and actor.strategy is not policy:
            found.append(f"{where}: {', '.join(unused)} ignored: only used with strategy = "
                         f'"{policy.value}", not "{actor.strategy.value}"')
    if "routing" in given and actor.instances == 1:
        found.append(f"{where}: routing ignored: only used with instances > 1, not 1")
    span = actor.backoff.max_delay * supervisor.max_retries
    if actor.strategy is ChildPolicy.EXPONENTIAL_BACKOFF and span > supervisor.within_time:
        found.append(f"{where}: restart intensity window unreachable with this backoff: "
                     f"max_delay ({format_duration(actor.backoff.max_delay)}) x max_retries "
                     f"of supervisor {supervisor.name} ({supervisor.max_retries}) = "
                     f"{format_duration(span)} > its within_time "
                     f"({format_duration(supervisor.within_time)})")
    return found


# A table header naming an entry: [supervisors.NAME...] or [actors.NAME...]
# (bare, "quoted" or 'literal' NAME). A header-like line inside a multi-line
# string would count too; the only effect is on start order.
_HEADER = re.compile(r"""^[ \t]*\[[ \t]*(supervisors|actors)[ \t]*\.[ \t]*"""
                     r"""(?:"([^"\\\n]*)"|'([^'\n]*)'|([A-Za-z0-9_-]+))""", re.MULTILINE)


def _header_positions(text: str) -> dict[tuple[str, str], int]:
    """("supervisor"|"actor", name) -> rank of the first header naming it."""
    positions: dict[tuple[str, str], int] = {}
    for match in _HEADER.finditer(text):
        kind = "supervisor" if match[1] == "supervisors" else "actor"
        name = next(group for group in match.groups()[1:] if group is not None)
        positions.setdefault((kind, name), len(positions))
    return positions


def _start_order(supervisors: dict[str, SupervisorSpec], actors: dict[str, ActorSpec],
                 root: str, positions: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The whole tree depth-first, siblings in file order (see module doc)."""
    nodes = [("supervisor", name) for name in supervisors] + [("actor", name) for name in actors]
    # Stable sort: entries with a header by header rank, then the rest as listed.
    nodes.sort(key=lambda node: (node not in positions, positions.get(node, 0)))
    children: dict[str, list[tuple[str, str]]] = {name: [] for name in supervisors}
    for kind, name in nodes:
        parent = supervisors[name].parent if kind == "supervisor" else actors[name].supervisor
        if parent is not None:
            children[parent].append((kind, name))
    order, stack = [], [("supervisor", root)]
    while stack:  # iterative: a deep chain of supervisors must not hit the recursion limit
        node = stack.pop()
        order.append(node)
        if node[0] == "supervisor":
            stack.extend(reversed(children[node[1]]))
    return order


def _expand_pools(order: list[tuple[str, str]], actors: dict[str, ActorSpec]
                  ) -> tuple[list[tuple[str, str]], dict[str, tuple[str, ...]]]:
    """Replace each pool in ``order`` by its members, in index order, and add the
    members to ``actors`` (pools stay there); returns (order, pool -> members)."""
    expanded, pools = [], {}
    for kind, name in order:
        spec = actors[name] if kind == "actor" else None
        if spec is None or spec.instances == 1:
            expanded.append((kind, name))
            continue
        members = tuple(_member_name(name, index) for index in range(spec.instances))
        for member in members:
            actors[member] = msgspec.structs.replace(spec, name=member, pool=name)
            expanded.append(("actor", member))
        pools[name] = members
    return expanded, pools


def _check_log_level(system: dict, logging: dict, issues: list[ConfigIssue]) -> None:
    """``system.log_level`` is the alias of ``logging.level``: both may be given
    only with the same value."""
    alias, level = system.get("log_level"), logging.get("level")
    if None not in (alias, level) and REFUSED not in (alias, level) and alias != level:
        issues.append(ConfigIssue("system.log_level", f"conflicts with logging.level ({level!r}): "
                                  f"give one of them, got {alias!r}"))


def _build(data: Any, source: str | None, positions: dict[tuple[str, str], int]) -> Config:
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", f"expected a table, got {show(data)}")], source)
    issues: list[ConfigIssue] = []
    for key in data:
        if key not in _TOP_KEYS:
            issues.append(ConfigIssue(key_path(key), "unknown key"))
    environment = Environment.DEVELOPMENT
    if "environment" in data:
        try:
            environment = _ENVIRONMENT(data["environment"])
        except ValueError as e:
            issues.append(ConfigIssue("environment", str(e)))
    tables = {name: _read(data.get(name, {}), schema, name, issues) or {}
              for name, schema in _TABLES.items()}
    _check_log_level(tables["system"], tables["logging"], issues)
    check_sections(tables, issues)
    supervisor_values = _read_entries(data, "supervisors", _SUPERVISOR, issues)
    actor_values = _read_entries(data, "actors", _ACTOR, issues) or {}
    for name, values in actor_values.items():
        if values is not None:
            _check_actor(name, values, issues)
    if supervisor_values is not None:
        _check_tree(supervisor_values, actor_values, issues)
    if issues:
        raise ConfigError(issues, source)

    # From here on every value was accepted and the tree is sound.
    system_values = dict(tables["system"])
    if "log_level" in system_values:
        tables["logging"] = {"level": system_values.pop("log_level")}
    system = SystemSpec(**system_values)
    sections = {name: struct(**tables[name]) for name, (_, struct) in SECTIONS.items()}
    supervisors = {name: SupervisorSpec(name=name, **values)
                   for name, values in supervisor_values.items()}
    enforced = environment is not Environment.DEVELOPMENT
    actors = {name: _actor_spec(name, values, system, sections, enforced)
              for name, values in actor_values.items()}
    root = next(name for name, spec in supervisors.items() if spec.parent is None)
    order = _start_order(supervisors, actors, root, positions)
    warnings = [warning for name, actor in actors.items()
                for warning in _actor_warnings(actor, actor_values[name],
                                               supervisors[actor.supervisor])]
    order, pools = _expand_pools(order, actors)
    config = Config(
        environment=environment,
        system=system,
        monitoring=MonitoringSpec(**tables["monitoring"]),
        supervisors={name: supervisors[name] for kind, name in order if kind == "supervisor"},
        actors={name: actors[name] for kind, name in order if kind == "actor"},
        root=root,
        start_order=tuple(order),
        source=source,
        warnings=tuple(warnings),
        pools=pools,
        **sections,
    )
    refused, warned = environment_rules(config)
    if refused:
        raise ConfigError(refused, source)
    return msgspec.structs.replace(config, warnings=config.warnings + tuple(map(str, warned)))


def config_from_dict(data: dict, source: str | None = None, text: str | None = None) -> Config:
    """Validate already-parsed TOML data; raises ConfigError listing every issue.

    ``text`` is the TOML text the entries of ``data`` were read from, for
    their start order; without it, siblings start supervisors first, then
    actors, each in dict order.
    """
    return _build(data, source, {} if text is None else _header_positions(text))


def parse_toml(text: str, source: str | None = None) -> dict[str, Any]:
    """The TOML document in ``text``; a ConfigError (without key path) if it is not one."""
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as e:
        # ValueError covers TOMLDecodeError and integers too long to convert;
        # RecursionError comes from deeply nested arrays or inline tables.
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ConfigError([ConfigIssue("", f"not valid TOML: {why}")], source) from None


def parse_config(text: str, source: str | None = None) -> Config:
    """Parse and validate TOML text; raises ConfigError listing every issue."""
    return config_from_dict(parse_toml(text, source), source, text)


def read_config_file(path: str | os.PathLike) -> str:
    """The text of the file at ``path``; an unreadable or non-UTF-8 file is a
    ConfigError whose ``source`` is ``path``."""
    source = os.fsdecode(path)
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8")
    except OSError as e:
        raise ConfigError([ConfigIssue("", f"cannot read the file: {e.strerror or e}")],
                          source) from None
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigIssue("", f"not UTF-8 text: {e}")], source) from None


def load_config(path: str | os.PathLike) -> Config:
    """Read, parse and validate the file at ``path`` (no other layer: see
    ``alysd.config_layers`` for environment variables and flags).

    Every failure, including an unreadable or non-UTF-8 file, is a
    ConfigError whose ``source`` is ``path``.
    """
    return parse_config(read_config_file(path), os.fsdecode(path))


def _document_of(spec: msgspec.Struct, schema: Schema) -> dict[str, Any]:
    """The keys of ``schema`` that ``spec`` holds (aliases have no field), as
    the config spells them; None (unset) is left out, as TOML has no null."""
    document = {}
    for key, rule in schema.items():
        value = getattr(spec, key, None)
        if value is not None and not isinstance(rule, dict):
            document[key] = spell(rule, value)
    return document


def _actor_document(spec: ActorSpec) -> dict[str, Any]:
    """An actor's effective keys; of the policy keys only its policy's, and
    ``routing`` only for a pool (elsewhere they are ignored, with a warning)."""
    policy = _POLICY_KEYS.get(spec.strategy, {})
    document: dict[str, Any] = {"supervisor": spec.supervisor, "class": spec.class_path}
    for key, rule in _ACTOR.items():
        if (key in document or key in ("max_mailbox_size", "config")
                or (key == "routing" and spec.instances == 1)):  # routing is for pools
            continue
        if key in _BACKOFF or key in _BREAKER:
            if key in policy:
                document[key] = spell(rule, getattr(spec.backoff if key in _BACKOFF
                                                    else spec.breaker, key))
            continue
        value = getattr(spec, key)
        if isinstance(rule, dict):
            if value is not None:
                document[key] = _document_of(value, rule)
        elif value is not None or key == "shutdown_timeout":  # None there is brutal_kill
            document[key] = spell(rule, value)
    document["config"] = spec.config
    return document


def config_document(config: Config) -> dict[str, Any]:
    """The effective configuration in the config file's own terms: every key
    with its value after defaults (durations and sizes as strings with units,
    addresses as "host:port"), a pool once under its configured name. Keys
    that are unset (None) or aliases are absent; so are the keys an actor
    would ignore. Loading it gives ``config`` again (its source aside)."""
    document: dict[str, Any] = {"environment": config.environment.value}
    for name, schema in _TABLES.items():
        document[name] = _document_of(getattr(config, name), schema)
    document["supervisors"] = {name: _document_of(spec, _SUPERVISOR)
                               for name, spec in config.supervisors.items()}
    actors: dict[str, Any] = {}
    for name, spec in config.actors.items():
        configured = spec.pool or name
        if configured not in actors:
            actors[configured] = _actor_document(spec)
    document["actors"] = actors
    return document


def import_actor_class(class_path: str) -> type:
    """Import the class named by "package.module:ClassName".

    Raises ImportError (malformed path, module not importable), AttributeError
    (no such name in the module) or TypeError (not a subclass of
    alysd.actor.Actor); errors raised by the module's own code propagate.
    """
    # Imported here, not at the top: alysd.actor is a higher layer, and config
    # must stay importable on its own (no import cycle through the runtime).
    from alysd.actor import Actor

    module_name, colon, class_name = class_path.partition(":")
    if not (colon and module_name and class_name):
        raise ImportError(f'invalid class path {class_path!r}: expected "module.path:ClassName"')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ImportError(f"cannot import {class_path!r}: {e}") from e
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise AttributeError(f"cannot import {class_path!r}: module {module_name!r} "
                             f"has no attribute {class_name!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise TypeError(f"{class_path!r} is not a subclass of alysd.actor.Actor")
    return cls


def check_imports(config: Config) -> list[ConfigIssue]:
    """One issue per configured actor whose class cannot be imported, at
    ``actors.NAME.class`` (once per pool, under the pool's name)."""
    issues = []
    # Members share their pool's class: import it once, report it under the pool's name.
    configured = {actor.pool or name: actor.class_path for name, actor in config.actors.items()}
    for name, class_path in configured.items():
        try:
            import_actor_class(class_path)
        except Exception as e:  # importing runs arbitrary module code
            issues.append(ConfigIssue(key_path("actors", name, "class"),
                                      f"cannot load {class_path}: {type(e).__name__}: {e}"))
    return issues
