"""Chaos scenarios: what to break, when, and what must still hold (pure).

A scenario is TOML::

    name = "random kills"
    duration = "60s"              # how long the run lasts (faults and traffic)
    recover_within = "10s"        # after the last fault: every actor running and healthy

    [traffic]                     # optional: requests sent all along, to count losses
    to = "echo"
    every = "20ms"
    message = {ping = true}
    timeout = "2s"

    [[faults]]
    kind = "kill"                 # kill | pause | partition | drop | delay | duplicate
                                  # | memory | cpu | hang | slow_endpoint
    target = "random"             # an actor, a supervisor (any actor under it), or "random"
    at = "0s"                     # when it starts
    every = "200ms"               # kill: again this often...
    duration = "60s"              # ...for this long (pause, partition, filters: how long)
    signal = "SIGKILL"            # kill: SIGKILL (default) or SIGTERM

    [[faults]]
    kind = "partition"
    groups = [["chain_supervisor"], ["network_supervisor"]]
    at = "5s"
    duration = "10s"

    [[faults]]
    kind = "memory"               # memory | cpu | hang: the actor suffers it (needs
    target = "engine"             # system.fault_injection = true in alysd's config)
    mib = 600                     # memory: how much it allocates (and holds for duration)
    gil = false                   # hang: true = wedged holding the GIL (heartbeats stop)
    at = "20s"
    duration = "5s"

    [[faults]]
    kind = "slow_endpoint"        # an external endpoint (the engine API, bitcoind) answers
    listen = "127.0.0.1:18551"    #   late: a proxy at `listen` in front of `upstream`, which
    upstream = "127.0.0.1:8551"   #   the actor is configured to reach through `listen`;
    delay = "2s"                  #   each response chunk held `delay` during the fault
    at = "30s"
    duration = "10s"

    [[faults]]
    kind = "drop"                 # drop | delay | duplicate: a bus filter
    from = "chain"                # optional, like `alysctl filter add`
    to = "storage"
    rate = 0.2
    delay = "100ms"               # delay only

Invariants, judged by ``judge`` from a ``Report``: every actor is running
and healthy within ``recover_within`` after the last fault ends; no request
of the traffic was lost (``no_message_lost``, default true when there is
traffic): a lost request is one that got no answer at all, neither a reply
nor an error saying why (a refusal, such as ``ActorUnavailable`` while the
actor restarts, is counted apart, not as a loss); optionally at most
``max_restarts`` restarts in all.
"""

from __future__ import annotations

import enum
import random
import signal
import tomllib
from typing import Any

import msgspec

from alysd.config_checks import key_path, listen
from alysd.errors import ConfigError, ConfigIssue
from alysd.units import parse_duration


class FaultKind(enum.Enum):
    KILL = "kill"
    PAUSE = "pause"
    PARTITION = "partition"
    DROP = "drop"
    DELAY = "delay"
    DUPLICATE = "duplicate"
    MEMORY = "memory"       # the actor allocates `mib` MiB (system.fault_injection)
    CPU = "cpu"             # the actor burns a core
    HANG = "hang"           # the actor's loop stops serving (`gil`: holding the GIL)
    SLOW_ENDPOINT = "slow_endpoint"   # responses of an external endpoint held `delay`


FILTER_FAULTS = (FaultKind.DROP, FaultKind.DELAY, FaultKind.DUPLICATE)
INJECTED_FAULTS = (FaultKind.MEMORY, FaultKind.CPU, FaultKind.HANG)
TARGETED_FAULTS = (FaultKind.KILL, FaultKind.PAUSE, *INJECTED_FAULTS)
KILL_SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}


class Fault(msgspec.Struct, frozen=True, kw_only=True, rename={"sender": "from",
                                                                "receiver": "to"}):
    kind: FaultKind
    at: float = 0.0
    duration: float = 0.0
    target: str | None = None          # kill, pause
    every: float | None = None         # kill
    signal: str = "SIGKILL"            # kill
    groups: tuple[tuple[str, ...], ...] = ()   # partition
    sender: str | None = None          # filters
    receiver: str | None = None
    type: str | None = None
    rate: float = 1.0
    delay: float | None = None
    mib: int = 0                       # memory
    gil: bool = False                  # hang
    listen: tuple[str, int] | None = None     # slow_endpoint: the proxy's address...
    upstream: tuple[str, int] | None = None   # ...in front of the endpoint's

    @property
    def ends(self) -> float:
        return self.at + self.duration


class Traffic(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    every: float = 0.02
    message: Any = None
    timeout: float = 2.0


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    name: str = "scenario"
    duration: float
    recover_within: float = 10.0
    faults: tuple[Fault, ...] = ()
    traffic: Traffic | None = None
    no_message_lost: bool | None = None
    max_restarts: int | None = None

    @property
    def faults_end(self) -> float:
        return max((f.ends for f in self.faults), default=0.0)


_DURATIONS = {"duration", "recover_within", "at", "every", "delay", "timeout"}
_ADDRESSES = {"listen", "upstream"}


def _durations(value: Any, path: tuple, issues: list[ConfigIssue]) -> Any:
    """The document with durations ("200ms") turned into seconds."""
    if isinstance(value, dict):
        return {k: (_duration(v, (*path, k), issues) if k in _DURATIONS
                    else _address(v, (*path, k), issues) if k in _ADDRESSES
                    else _durations(v, (*path, k), issues)) for k, v in value.items()}
    if isinstance(value, list):
        return [_durations(v, (*path, i), issues) for i, v in enumerate(value)]
    return value


def _address(value: Any, path: tuple, issues: list[ConfigIssue]) -> Any:
    if isinstance(value, str):
        try:
            return list(listen(value))
        except ValueError as exc:
            issues.append(ConfigIssue(key_path(*path), str(exc)))
    return value


def _duration(value: Any, path: tuple, issues: list[ConfigIssue]) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            issues.append(ConfigIssue(key_path(*path), str(exc)))
    return value


def parse_scenario(text: str, source: str | None = None) -> Scenario:
    """A scenario from TOML; ``ConfigError`` listing every problem with its key."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue("", f"not valid TOML: {exc}")], source) from None
    issues: list[ConfigIssue] = []
    document = _durations(document, (), issues)
    if issues:
        raise ConfigError(issues, source)
    try:
        scenario = msgspec.convert(document, Scenario)
    except msgspec.ValidationError as exc:
        where, _, what = str(exc).rpartition(" - at `$")
        message, at = (where, what.rstrip("`")) if where else (str(exc), "")
        raise ConfigError([ConfigIssue(at.lstrip("."), message)], source) from None
    issues = check_scenario(scenario)
    if issues:
        raise ConfigError(issues, source)
    return scenario


def check_scenario(scenario: Scenario) -> list[ConfigIssue]:
    """What a decoded scenario says that cannot be done."""
    issues = []
    for index, fault in enumerate(scenario.faults):
        path = f"faults[{index}]"
        if fault.kind in TARGETED_FAULTS and not fault.target:
            issues.append(ConfigIssue(f"{path}.target", f"a {fault.kind.value} needs a target "
                                      "(an actor, a supervisor, or \"random\")"))
        if fault.kind is FaultKind.KILL and fault.signal not in KILL_SIGNALS:
            issues.append(ConfigIssue(f"{path}.signal", "expected SIGKILL or SIGTERM, got "
                                      f"{fault.signal!r}"))
        if fault.kind is FaultKind.PARTITION and len(fault.groups) != 2:
            issues.append(ConfigIssue(f"{path}.groups", "a partition needs two groups of "
                                      "actors or supervisors"))
        if fault.kind is FaultKind.MEMORY and fault.mib <= 0:
            issues.append(ConfigIssue(f"{path}.mib", "a memory fault needs how many MiB to "
                                      "allocate"))
        if fault.kind in FILTER_FAULTS and not 0 < fault.rate <= 1:
            issues.append(ConfigIssue(f"{path}.rate", f"expected 0 < rate <= 1, got {fault.rate}"))
        if fault.kind is FaultKind.SLOW_ENDPOINT and not (fault.listen and fault.upstream
                                                           and fault.delay):
            issues.append(ConfigIssue(path, "a slow_endpoint needs listen, upstream and delay"))
        if fault.kind is FaultKind.DELAY and not fault.delay:
            issues.append(ConfigIssue(f"{path}.delay", "a delay fault needs its delay"))
        if fault.kind is not FaultKind.KILL and fault.duration <= 0:
            issues.append(ConfigIssue(f"{path}.duration", f"a {fault.kind.value} needs a "
                                      "duration"))
        if fault.every is not None and fault.every <= 0:
            issues.append(ConfigIssue(f"{path}.every", "expected a positive duration"))
        if fault.ends > scenario.duration:
            issues.append(ConfigIssue(path, f"ends at {fault.ends:g}s, after the scenario "
                                      f"({scenario.duration:g}s)"))
    return issues


def kill_times(fault: Fault) -> list[float]:
    """When a kill fault strikes: once at ``at``, or every ``every`` until it ends."""
    if fault.every is None:
        return [fault.at]
    count = int(fault.duration / fault.every + 1e-9) + 1
    return [fault.at + i * fault.every for i in range(count) if i * fault.every <= fault.duration]


def pick(target: str, actors_under: dict[str, list[str]], running: list[str],
         rng: random.Random) -> str | None:
    """The actor a kill or pause strikes: the named one, one under the named
    supervisor, or any; None when nothing runs to strike."""
    if target == "random":
        pool = running
    elif target in actors_under:
        pool = [a for a in actors_under[target] if a in running]
    else:
        pool = [target] if target in running else []
    return rng.choice(sorted(pool)) if pool else None


class ActorOutcome(msgspec.Struct, kw_only=True):
    restarts: int = 0
    detected_s: float | None = None     # first fault -> first seen not running
    recovered_s: float | None = None    # last fault's end -> running and healthy again


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    seconds: float
    faults_applied: list[str]
    actors: dict[str, ActorOutcome]
    requests: int = 0
    answered: int = 0
    refused: dict[str, int] = {}         # error kind -> count (answered with a reason)
    lost: int = 0                        # no answer at all
    dead_letters: dict[str, int] = {}    # reason -> new during the run
    all_healthy_after_s: float | None = None
    failures: list[str] = []


def judge(scenario: Scenario, report: Report) -> list[str]:
    """The invariants the run broke (empty: it passed)."""
    failures = []
    if report.all_healthy_after_s is None or report.all_healthy_after_s > scenario.recover_within:
        late = sorted(name for name, o in report.actors.items()
                      if o.recovered_s is None or o.recovered_s > scenario.recover_within)
        failures.append(f"not every actor was running and healthy within "
                        f"{scenario.recover_within:g}s of the last fault"
                        + (f": {', '.join(late)}" if late else ""))
    no_loss = scenario.no_message_lost
    if no_loss is None:
        no_loss = scenario.traffic is not None
    if no_loss and report.lost:
        failures.append(f"{report.lost} of {report.requests} requests were lost (no reply, "
                        "no error)")
    restarts = sum(o.restarts for o in report.actors.values())
    if scenario.max_restarts is not None and restarts > scenario.max_restarts:
        failures.append(f"{restarts} restarts, over max_restarts = {scenario.max_restarts}")
    return failures


def format_report(report: Report) -> str:
    """The report as ``alysctl chaos run`` prints it."""
    lines = [f"chaos: {report.scenario} ({report.seconds:.1f}s, {len(report.faults_applied)} "
             "faults applied)"]
    lines.append(f"{'ACTOR':<20} {'RESTARTS':>8} {'DETECTED':>9} {'RECOVERED':>10}")
    for name, outcome in sorted(report.actors.items()):
        lines.append(f"{name:<20} {outcome.restarts:>8} {_secs(outcome.detected_s):>9} "
                     f"{_secs(outcome.recovered_s):>10}")
    if report.requests:
        refused = ", ".join(f"{k} {v}" for k, v in sorted(report.refused.items())) or "none"
        lines.append(f"requests: {report.requests} sent, {report.answered} answered, "
                     f"refused: {refused}, lost: {report.lost}")
    letters = ", ".join(f"{k} {v}" for k, v in sorted(report.dead_letters.items())) or "none"
    lines.append(f"dead letters during the run: {letters}")
    healthy = _secs(report.all_healthy_after_s)
    lines.append(f"all actors running and healthy {healthy} after the last fault")
    if report.failures:
        lines += [f"FAILED: {failure}" for failure in report.failures]
    else:
        lines.append("passed")
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"
