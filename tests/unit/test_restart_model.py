"""Model-based test of the restart planner.

A hypothesis state machine plays one supervisor with 1..5 children through random
events (crashes, clean exits, EX_CONFIG exits, healthy heartbeats, time passing,
operator starts, alysd being restarted after giving up). Each event goes through the
real planner pieces in the order ``alysd.supervisor`` uses them:

* an unexpected exit: ``ChildTrack.on_exit`` first (``_incarnation_ended``); only a
  RESTART verdict is counted against the supervisor's ``RestartWindow.record``
  (``_child_failed``); a refusal means the supervisor gives up (``_escalate``: this
  model's supervisor is the root, so everything stops); otherwise the restart happens
  now (``_restart_group`` via ``plan_group``) or after the verdict's delay;
* time passing: due delayed restarts run their group, then open breakers whose
  ``breaker_due`` says so get one trial incarnation (``_release_delayed``);
* a healthy heartbeat of a running child: ``ChildTrack.on_healthy``;
* an operator start: ``ChildTrack.reset`` and a start, not counted in the window.

An independent model of each child's restart policy (restart type, backoff counter,
breaker state) predicts every verdict, and a list of restart times checks the window.

Deliberate difference from the runtime: in a group restart, siblings that their own
policy left down (stopped, failed, circuit open) stay down, and a running temporary
sibling is stopped but not started again (OTP semantics); ``_restart_group`` in
``alysd/supervisor.py`` starts every sibling of the group that is not held.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from alysd.config import ActorSpec, BackoffSpec, BreakerSpec, ChildPolicy, Restart, Strategy
from alysd.exits import LastExit
from alysd.restart import JITTER, Action, BreakerState, ChildTrack, RestartWindow, plan_group
from tests.unit.test_restart import ABNORMAL, CLEAN, CONFIG

# Mostly crashes, sometimes a clean exit, rarely EX_CONFIG.
EXITS = st.sampled_from([*ABNORMAL, CLEAN, CONFIG])
# Dyadic time steps keep clock arithmetic exact.
DELTAS = st.sampled_from([0.0, 0.125, 0.5, 1.0, 2.0, 4.0, 16.0])


@st.composite
def actor_specs(draw, name: str) -> ActorSpec:
    initial = draw(st.sampled_from([0.125, 0.5, 1.0]))
    backoff = BackoffSpec(
        initial_delay=initial,
        max_delay=initial * draw(st.sampled_from([1, 4, 16])),
        multiplier=draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])),
        max_retries=draw(st.integers(0, 5)),
        reset_after=draw(st.sampled_from([0.5, 2.0, 8.0])),
    )
    breaker = BreakerSpec(
        failure_threshold=draw(st.integers(1, 4)),
        recovery_timeout=draw(st.sampled_from([0.5, 2.0, 8.0])),
        success_threshold=draw(st.integers(1, 3)),
    )
    return ActorSpec(
        name=name, supervisor="sup", class_path="m:C",
        strategy=draw(st.sampled_from([  # weighted to the policies with state
            ChildPolicy.ONE_FOR_ONE, ChildPolicy.EXPONENTIAL_BACKOFF,
            ChildPolicy.EXPONENTIAL_BACKOFF, ChildPolicy.CIRCUIT_BREAKER,
            ChildPolicy.CIRCUIT_BREAKER, ChildPolicy.CIRCUIT_BREAKER, ChildPolicy.NEVER])),
        restart=draw(st.sampled_from([Restart.PERMANENT, Restart.PERMANENT, Restart.TRANSIENT,
                                      Restart.TEMPORARY])),
        backoff=backoff, breaker=breaker)


def children(n: int):
    return st.tuples(*[actor_specs(f"c{i}") for i in range(n)])


@dataclass
class Expect:
    """The model's own bookkeeping for one child."""

    spec: ActorSpec
    status: str = "running"            # running | delayed | stopped | failed | open | down
    ready_at: float | None = 0.0
    attempts: int = 0                  # backoff: restarts since the last healthy stretch
    last_base: float = 0.0             # backoff: base delay of the previous restart
    breaker: str = "closed"            # closed | open | half_open
    failures: int = 0
    successes: int = 0
    opened_at: float | None = None
    auto_starts: int = 0               # starts by the supervisor (not by an operator)

    def forget(self) -> None:
        """``alysctl start``/``reset``: a fresh policy state."""
        self.attempts, self.last_base = 0, 0.0
        self.breaker, self.failures, self.successes, self.opened_at = "closed", 0, 0, None


class SupervisorModel(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        self.names: list[str] = []
        self.gave_up = False

    @initialize(strategy=st.sampled_from(list(Strategy)),
                specs=st.integers(1, 5).flatmap(children),
                max_restarts=st.integers(0, 5),
                within=st.sampled_from([1.0, 4.0, 16.0]),
                seed=st.integers(0, 2**32 - 1))
    def boot(self, strategy, specs, max_restarts, within, seed):
        self.strategy, self.max_restarts, self.within = strategy, max_restarts, within
        self.now = 0.0
        self.names = [spec.name for spec in specs]
        self.tracks = {spec.name: ChildTrack(spec, random.Random(seed + i))
                       for i, spec in enumerate(specs)}
        self.expect = {spec.name: Expect(spec) for spec in specs}
        self.window = RestartWindow(max_restarts, within)
        self.accepted: list[float] = []      # times of restarts the window let through
        self.delayed: dict[str, float] = {}  # child -> when its delayed restart is due
        for name in self.names:
            self.tracks[name].on_ready(0.0)

    # --- helpers ----------------------------------------------------------------------

    def _with(self, *statuses: str) -> list[str]:
        return [n for n in self.names if self.expect[n].status in statuses]

    def _start(self, name: str, *, by: str = "group") -> None:
        """Start ``name`` now: ``by`` a group restart, a breaker ``trial`` or an ``operator``."""
        e = self.expect[name]
        if by == "group":
            assert e.spec.restart is not Restart.TEMPORARY, f"temporary {name} restarted"
            assert e.status not in ("open", "failed", "stopped"), f"{name} started while {e.status}"
        elif by == "trial":
            assert e.status == "open" and e.breaker == "half_open"
        if by != "operator":
            e.auto_starts += 1
        e.status, e.ready_at = "running", self.now
        self.tracks[name].on_ready(self.now)

    def _restart_group(self, failed: str) -> None:
        to_stop, to_start = plan_group(self.strategy, self.names, failed)
        at = self.names.index(failed)
        if self.strategy is Strategy.ONE_FOR_ONE:
            assert to_start == [failed]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            assert to_start == self.names
        else:
            assert to_start == self.names[at:]
            assert not set(to_start) & set(self.names[:at]), "rest_for_one restarted an elder"
        assert to_stop == [n for n in reversed(to_start) if n != failed]
        for name in to_start:
            e = self.expect[name]
            if name == failed or e.status == "delayed":
                self._start(name)
            elif e.status == "running":
                if e.spec.restart is Restart.TEMPORARY:
                    e.status = "stopped"     # terminated with the group, never restarted
                else:
                    self._start(name)
            # stopped / failed / open siblings stay as their own policy left them

    def _advance(self, delta: float) -> None:
        self.now += delta
        for name, due in list(self.delayed.items()):
            if self.now >= due:
                del self.delayed[name]
                self._restart_group(name)
        for name in self.names:
            e, track = self.expect[name], self.tracks[name]
            if e.status != "open":
                assert track.breaker_due(self.now) is False
                continue
            deadline = e.opened_at + e.spec.breaker.recovery_timeout
            assert track.breaker_deadline() == deadline
            due = track.breaker_due(self.now)
            assert due is (self.now >= deadline), (name, self.now, deadline)
            if due:
                assert track.breaker is BreakerState.HALF_OPEN
                e.breaker, e.successes = "half_open", 0
                self._start(name, by="trial")  # one trial incarnation; not a window restart
            else:
                assert track.breaker is BreakerState.OPEN

    def _predict(self, e: Expect, exit: LastExit) -> tuple[Action, float, str]:
        """(action, base delay, reason fragment) by the documented layers."""
        spec = e.spec
        if exit.reason == "config":
            return Action.FAIL, 0.0, "EX_CONFIG"
        if spec.strategy is ChildPolicy.NEVER:
            return Action.STAY_STOPPED, 0.0, "never"
        if spec.restart is Restart.TEMPORARY or (
                spec.restart is Restart.TRANSIENT and exit.reason == "clean"):
            return Action.STAY_STOPPED, 0.0, spec.restart.value
        if spec.strategy is ChildPolicy.CIRCUIT_BREAKER:
            e.failures += 1
            if e.breaker == "half_open" or e.failures >= spec.breaker.failure_threshold:
                e.breaker, e.opened_at = "open", self.now
                return Action.STAY_STOPPED, 0.0, "circuit open"
            return Action.RESTART, 0.0, ""
        if spec.strategy is ChildPolicy.EXPONENTIAL_BACKOFF:
            b = spec.backoff
            if e.attempts >= b.max_retries:
                return Action.FAIL, 0.0, "gave up"
            base = min(b.max_delay, b.initial_delay * b.multiplier ** e.attempts)
            assert base >= e.last_base, "backoff shrank without a reset"
            e.attempts, e.last_base = e.attempts + 1, base
            return Action.RESTART, base, ""
        return Action.RESTART, 0.0, ""

    def _exit(self, name: str, exit: LastExit) -> None:
        e, track = self.expect[name], self.tracks[name]
        assert e.status == "running"
        verdict = track.on_exit(exit, self.now)
        e.ready_at = None
        self.delayed.pop(name, None)
        action, base, why = self._predict(e, exit)
        assert verdict.action is action, (name, exit, verdict, e)
        assert track.breaker.value == e.breaker
        if action is not Action.RESTART:
            assert why in verdict.reason
            e.status = ("failed" if action is Action.FAIL
                        else "open" if e.breaker == "open" else "stopped")
            return
        assert base <= verdict.delay <= base * (1 + JITTER) * (1 + 1e-12), (verdict, base)
        # _child_failed: every restart counts against the supervisor's intensity.
        recent = [t for t in self.accepted if t >= self.now - self.within]
        allowed = len(recent) + 1 <= self.max_restarts
        assert self.window.record(self.now) is allowed
        if not allowed:
            # _escalate: the root gives up; alysd stops the tree and exits.
            self.gave_up = True
            self.delayed.clear()
            for n in self.names:
                self.expect[n].status = "down"
            return
        self.accepted.append(self.now)
        if verdict.delay > 0:
            e.status = "delayed"
            self.delayed[name] = self.now + verdict.delay
        else:
            self._restart_group(name)

    # --- events -----------------------------------------------------------------------

    @precondition(lambda self: self.names and not self.gave_up)
    @rule(delta=DELTAS)
    def time_passes(self, delta):
        self._advance(delta)

    @precondition(lambda self: self.names and not self.gave_up)
    @rule(delta=DELTAS, exit=EXITS, data=st.data())
    def child_exits(self, delta, exit, data):
        """A running child crashes, exits cleanly or exits with EX_CONFIG."""
        self._advance(delta)
        running = self._with("running")
        if running:
            self._exit(data.draw(st.sampled_from(running), label=f"exits ({exit.reason})"), exit)

    @precondition(lambda self: self.names and not self.gave_up)
    @rule(delta=DELTAS, beats=st.integers(1, 4), data=st.data())
    def healthy_heartbeats(self, delta, beats, data):
        """A running child reports healthy ``beats`` times, ``delta`` apart."""
        self._advance(delta)
        running = self._with("running")
        if not running:
            return
        name = data.draw(st.sampled_from(running), label="healthy")
        for beat in range(beats):
            if beat:
                self._advance(delta)
                if self.expect[name].status != "running":
                    return   # a temporary child stopped with its group meanwhile
            self._healthy(name)

    def _healthy(self, name: str) -> None:
        e, track = self.expect[name], self.tracks[name]
        track.on_healthy(self.now)
        if self.now - e.ready_at >= e.spec.backoff.reset_after:
            e.attempts, e.last_base = 0, 0.0
        if e.breaker == "half_open":
            e.successes += 1
            if e.successes >= e.spec.breaker.success_threshold:
                e.breaker, e.failures, e.successes = "closed", 0, 0
        elif e.breaker == "closed":
            e.failures = 0
        assert track.breaker.value == e.breaker
        if e.spec.strategy is ChildPolicy.EXPONENTIAL_BACKOFF:
            assert track.attempts == e.attempts

    @precondition(lambda self: self.names and not self.gave_up
                  and any(self.expect[n].status in ("stopped", "failed", "open")
                          for n in self.names))
    @rule(data=st.data())
    def operator_starts(self, data):
        name = data.draw(st.sampled_from(self._with("stopped", "failed", "open")),
                         label="alysctl start")
        self.tracks[name].reset()
        self.expect[name].forget()
        assert self.tracks[name].breaker is BreakerState.CLOSED
        assert self.tracks[name].breaker_deadline() is None
        self._start(name, by="operator")

    @precondition(lambda self: self.gave_up)
    @rule(delta=DELTAS)
    def alysd_restarted(self, delta):
        """systemd starts alysd again: a fresh window and fresh policy state."""
        self.now += delta
        self.window.clear()
        assert len(self.window) == 0
        self.accepted.clear()
        self.gave_up = False
        for name in self.names:
            self.tracks[name].reset()
            self.expect[name].forget()
            self._start(name, by="operator")

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def window_never_lets_more_than_max_restarts_through(self):
        if not self.names:
            return
        for t in self.accepted:
            in_window = [s for s in self.accepted if t - self.within <= s <= t]
            assert len(in_window) <= self.max_restarts, (t, self.accepted)
        if not self.gave_up:
            assert len(self.window) <= self.max_restarts

    @invariant()
    def policy_state_matches_the_model(self):
        for name in self.names:
            e, track = self.expect[name], self.tracks[name]
            assert track.breaker.value == e.breaker, name
            if e.status == "open":
                assert track.breaker is BreakerState.OPEN
                # Not due yet: time passing would have let its trial through.
                assert self.now < track.breaker_deadline()
                assert track.breaker_due(self.now) is False
            if e.spec.strategy is ChildPolicy.EXPONENTIAL_BACKOFF:
                assert track.attempts == e.attempts, name
                assert track.attempts <= e.spec.backoff.max_retries

    @invariant()
    def temporary_children_stay_down_and_delayed_restarts_are_pending(self):
        for name in self.names:
            e = self.expect[name]
            if e.spec.restart is Restart.TEMPORARY:
                assert e.auto_starts == 0, f"temporary {name} was restarted"
            if e.status == "delayed":
                assert name in self.delayed and self.delayed[name] > self.now


SupervisorModel.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None, derandomize=True, database=None)
test_restart_planner_model = SupervisorModel.TestCase
