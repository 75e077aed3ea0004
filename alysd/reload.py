"""What a new configuration changes in a running tree, and how each change is
applied with the least disruption. Pure: it compares two validated Configs and
touches no process (the supervisor acts on the plan).

Each field of an actor's spec is applied in one of three ways (``Treatment``):

* ``ROOT``: only the root uses it (restart policy, timeouts, CPU limits, pool
  routing, subscriptions): the root takes the new value in place; routing and
  subscriptions reach the other actors as a directory update.
* ``LIVE``: the actor's process uses it, and can take it between two messages
  (mailbox capacity, memory limit, its ``config`` table, the node sections it
  ``uses``). Whether a new ``config`` can be taken live depends on the actor's
  class (``config_changed``), which only the actor knows: it answers that it
  needs a restart, and the supervisor restarts it then.
* ``RESTART``: the process was built from it (class, supervisor, batching,
  mailbox policy and delivery): a new incarnation.

An actor's treatment is the strongest its changed fields need. Only the actors
whose spec changed are touched; a changed actor is restarted alone, not with
the siblings its supervisor's strategy ties it to (a new spec is not a
failure). Supervisors are the root's data only: every change to them applies
in place.

Some settings are built into every process or into the root's sockets
(``REFUSED_SYSTEM_KEYS``): a reload that changes one is refused as a whole,
naming the key, since applying the rest would leave the running tree on a
config that is neither the old one nor the new one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any

import msgspec

from alysd.config import ActorSpec, Config
from alysd.errors import ConfigIssue


class Treatment(enum.IntEnum):
    """How a changed field is applied, weakest first (the strongest wins)."""

    ROOT = 1
    LIVE = 2
    RESTART = 3


# Spec field (dotted for nested structs) -> treatment. A field missing here is
# applied by a restart: new fields are safe by default.
ACTOR_FIELDS: dict[str, Treatment] = {
    "strategy": Treatment.ROOT,
    "restart": Treatment.ROOT,
    "cpu_limit": Treatment.ROOT,
    "cpu_window": Treatment.ROOT,
    "max_cpu_time": Treatment.ROOT,
    "start_timeout": Treatment.ROOT,
    "shutdown_timeout": Treatment.ROOT,
    "backoff": Treatment.ROOT,
    "breaker": Treatment.ROOT,
    "instances": Treatment.ROOT,     # members come and go as actors of their own
    "routing": Treatment.ROOT,
    "subscribe": Treatment.ROOT,
    "uses": Treatment.ROOT,          # what it changes arrives as settings
    "permissions": Treatment.ROOT,   # reaches every process with the directory
    "memory_limit": Treatment.LIVE,  # the actor turns a MemoryError into an exit under one
    "mailbox.capacity": Treatment.LIVE,
    "config": Treatment.LIVE,
    "settings": Treatment.LIVE,
}

# Spec fields shown to operators under their TOML names.
_TOML_NAMES = {"class_path": "class"}

REFUSED_SYSTEM_KEYS = ("system.runtime_dir", "system.state_dir", "system.heartbeat_interval",
                       "system.max_message_bytes", "system.dead_letter_capacity",
                       "system.delivery_timeout", "system.control_group", "logging.level",
                       "logging.format", "logging.buffer_lines", "monitoring.listen")
"""Keys whose change needs a restart of alysd: sockets, the state dir, and
values every actor process was forked with."""

NODE_SECTIONS = ("chain", "network", "bridge", "storage", "governance", "sync")


class ActorChange(msgspec.Struct, frozen=True):
    """One configured actor whose spec changed, and how the change is applied."""

    name: str
    fields: tuple[str, ...]          # changed keys, as written in the config
    treatment: Treatment


class ReloadPlan(msgspec.Struct, frozen=True, kw_only=True):
    """The difference between the running config and a new one.

    Guarantees: ``added`` is in the new start order and ``removed`` in reverse
    old start order (stop order); ``changed`` holds only actors present in both
    configs, in the new start order, each with at least one field; an actor in
    none of the three is untouched by the reload. ``refused`` is empty when the
    plan may be applied.
    """

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[ActorChange, ...] = ()
    supervisors_added: tuple[str, ...] = ()
    supervisors_removed: tuple[str, ...] = ()
    supervisors_changed: tuple[str, ...] = ()
    system: tuple[str, ...] = ()     # changed keys applied in place (dotted)
    sections: tuple[str, ...] = ()   # node sections that changed
    refused: tuple[ConfigIssue, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to do: the new config is the running one."""
        return not (self.added or self.removed or self.changed or self.supervisors_added
                    or self.supervisors_removed or self.supervisors_changed or self.system
                    or self.sections or self.refused)

    def change(self, name: str) -> ActorChange | None:
        """How actor ``name``'s spec changed, or None when it did not."""
        return next((c for c in self.changed if c.name == name), None)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare the running config with a new one (both validated)."""
    changed = []
    for name, spec in new.actors.items():
        before = old.actors.get(name)
        if before is None:
            continue
        fields = changed_fields(before, spec)
        if fields:
            changed.append(ActorChange(name, tuple(_toml_name(f) for f in fields),
                                       max(treatment_of(f) for f in fields)))
    supervisors_changed = tuple(
        name for name, spec in new.supervisors.items()
        if name in old.supervisors and old.supervisors[name] != spec)
    system = _changed_keys("system", old.system, new.system) + _changed_keys(
        "monitoring", old.monitoring, new.monitoring) + _changed_keys(
        "logging", old.logging, new.logging)
    if old.environment != new.environment:
        system.append("environment")
    refused = tuple(
        ConfigIssue(key, f"changed from {_shown(old, key)} to {_shown(new, key)}; this takes "
                         "effect only when alysd restarts (systemctl restart alysd)")
        for key in system if key in REFUSED_SYSTEM_KEYS)
    return ReloadPlan(
        added=tuple(name for name in new.actors if name not in old.actors),
        removed=tuple(name for name in reversed(old.actors) if name not in new.actors),
        changed=tuple(changed),
        supervisors_added=tuple(n for n in new.supervisors if n not in old.supervisors),
        supervisors_removed=tuple(n for n in old.supervisors if n not in new.supervisors),
        supervisors_changed=supervisors_changed,
        system=tuple(key for key in system if key not in REFUSED_SYSTEM_KEYS),
        sections=tuple(s for s in NODE_SECTIONS if getattr(old, s) != getattr(new, s)),
        refused=refused,
    )


def changed_fields(old: ActorSpec, new: ActorSpec) -> list[str]:
    """Spec fields that differ, dotted for the mailbox's (which are treated
    one by one); ``name`` and ``pool`` never differ for the same actor."""
    before, after = dict(_leaves(old)), dict(_leaves(new))
    return [key for key in after if before.get(key) != after[key]]


def treatment_of(field: str) -> Treatment:
    """How a changed spec field is applied (see ``ACTOR_FIELDS``)."""
    return ACTOR_FIELDS.get(field, Treatment.RESTART)


def _leaves(spec: ActorSpec) -> Iterator[tuple[str, Any]]:
    for field in spec.__struct_fields__:
        value = getattr(spec, field)
        if field == "mailbox":
            for sub in value.__struct_fields__:
                yield f"mailbox.{sub}", getattr(value, sub)
        else:
            yield field, value


def _toml_name(field: str) -> str:
    return _TOML_NAMES.get(field, field)


def _changed_keys(section: str, old: msgspec.Struct, new: msgspec.Struct) -> list[str]:
    return [f"{section}.{field}" for field in new.__struct_fields__
            if getattr(old, field) != getattr(new, field)]


def _shown(config: Config, key: str) -> str:
    section, field = key.split(".")
    value = getattr(getattr(config, section), field)
    return "unset" if value is None else repr(value)


def describe(plan: ReloadPlan) -> dict[str, Any]:
    """The plan as alysctl prints it (JSON-ready)."""
    return {
        "added": list(plan.added),
        "removed": list(plan.removed),
        "restarted": {c.name: list(c.fields) for c in plan.changed
                      if c.treatment is Treatment.RESTART},
        "updated_live": {c.name: list(c.fields) for c in plan.changed
                         if c.treatment is not Treatment.RESTART},
        "supervisors": {"added": list(plan.supervisors_added),
                        "removed": list(plan.supervisors_removed),
                        "changed": list(plan.supervisors_changed)},
        "system": list(plan.system),
        "sections": list(plan.sections),
    }


def summary(report: dict[str, Any]) -> list[str]:
    """A report (``describe``, or the supervisor's after a reload) as lines for
    people: one per kind of change, none when nothing changed."""
    lines = [f"{label}: {', '.join(report[key])}"
             for key, label in (("added", "added"), ("removed", "removed")) if report[key]]
    lines += [f"{label}: " + ", ".join(f"{name} ({', '.join(keys)})"
                                       for name, keys in report[key].items())
              for key, label in (("restarted", "restarted"), ("updated_live", "updated live"))
              if report[key]]
    supervisors = [f"{what} {', '.join(names)}"
                   for what, names in report["supervisors"].items() if names]
    if supervisors:
        lines.append("supervisors: " + "; ".join(supervisors))
    if report["system"]:
        lines.append("settings: " + ", ".join(report["system"]))
    if report["sections"]:
        lines.append("sections: " + ", ".join(report["sections"]))
    return lines


class Awaiting(enum.Enum):
    """What a reload waits for from one affected actor."""

    INCARNATION = "incarnation"    # a new incarnation (restarted or added), running and healthy
    ANSWER = "answer"              # a Reconfigured answer that applied, then health
    GONE = "gone"                  # a removed actor: its last incarnation stopped


class Awaited(msgspec.Struct, kw_only=True):
    """One affected actor of a reload in progress, and what it answered so far."""

    name: str
    awaiting: Awaiting
    incarnation: int                 # its incarnation when the reload acted on it
    restarts: int                    # its restart count then: any rise is a crash
    health_before: str               # its health then: a reload may not make it worse
    seq: int = 0                     # the Reconfigure it must answer (ANSWER)
    outcome: str | None = None       # applied | needs_restart | failed, once answered
    error: str | None = None


class Facts(msgspec.Struct, frozen=True):
    """What the root knows of an actor now, as far as a reload cares."""

    state: str
    incarnation: int
    restarts: int
    health: str


SETTLED = "settled"
WAITING = "waiting"


def judge(awaited: Awaited, facts: Facts | None) -> str:
    """``SETTLED``, ``WAITING``, or why the actor failed the reload.

    An actor settles once what was awaited happened and it is healthy, or
    degraded when it already was before the reload. A crash (its restart count
    rose), a failed or stopped state, or a ``config_changed`` that raised fails
    it at once; an actor that is merely unhealthy keeps being waited for until
    the reload's deadline. ``facts`` None means the actor is gone (which is what
    a removed actor is waited for).
    """
    if awaited.awaiting is Awaiting.GONE:
        return SETTLED if facts is None else WAITING
    if facts is None:
        return "it is no longer configured"
    if facts.restarts > awaited.restarts:
        return "it crashed"
    if facts.state in ("failed", "stopped"):
        return f"it is {facts.state}"
    if awaited.awaiting is Awaiting.ANSWER:
        if awaited.outcome == "failed":
            return f"config_changed() raised: {awaited.error}"
        if awaited.outcome != "applied":
            return WAITING
    elif facts.state != "running" or facts.incarnation <= awaited.incarnation:
        return WAITING
    healthy = facts.health == "healthy" or (
        facts.health == "degraded" and awaited.health_before == "degraded")
    return SETTLED if healthy else WAITING


def unsettled_reason(awaited: Awaited, facts: Facts | None) -> str:
    """Why an actor still waited for at the deadline did not settle."""
    if awaited.awaiting is Awaiting.GONE:
        return "it is still stopping"
    if facts is None:
        return "it is no longer configured"
    if awaited.awaiting is Awaiting.ANSWER and awaited.outcome is None:
        return "it did not answer the new config"
    if facts.state != "running" or (awaited.awaiting is Awaiting.INCARNATION
                                    and facts.incarnation <= awaited.incarnation):
        return f"it is still {facts.state}"
    return f"it is {facts.health}"
