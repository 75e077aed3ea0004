"""Resource limits and liveness with real processes: a leaking, spinning, hung or
stopped actor is killed with the reason shown in ``last_exit`` and restarted by
policy, and its neighbour is left alone."""

from __future__ import annotations

import os
import signal

import pytest

from alysd.errors import ActorExited, RemoteError
from alysd.testing import gone, wait_until
from tests.conftest import actor_toml, tree_toml

# Fast sampling; heartbeats at the default 1 s, so that a handler holding the GIL for a
# while on a loaded machine (e.g. filling 200 MiB) is not taken for a hung one.
FAST = 'sample_interval = "100ms"\nhealth_interval = "200ms"'
BEATING = FAST + '\nheartbeat_interval = "100ms"'


def _restarted(d, name: str, before: dict, reason: str) -> dict:
    """Wait for a new running incarnation of ``name`` whose predecessor ended for ``reason``."""
    def check():
        row = d.status()[name]
        return (row if row["state"] == "running" and row["incarnation"] > before["incarnation"]
                and row["last_exit"] and row["last_exit"]["reason"] == reason else None)
    return wait_until(check, timeout=20, message=f"{name} restarted after {reason}")


def _ask_dying(d, name: str, payload: dict, timeout: float = 5.0) -> None:
    """A request whose handler may be killed before it answers (that is the point)."""
    try:
        d.request(name, payload, timeout=timeout)
    except RemoteError:
        pass


def _hogs(start_daemon, hog: dict, system: str = FAST):
    return start_daemon(tree_toml(actor_toml("hog", "tests.actors:Hog", **hog),
                                  actor_toml("neighbour", "tests.actors:Hog",
                                             memory_limit="512MiB", cpu_limit=1.0),
                                  max_retries=10, system=system))


def test_a_leak_over_memory_limit_restarts_only_the_leaking_actor(start_daemon):
    d = _hogs(start_daemon, {"memory_limit": "150MiB"})
    before = d.status()
    _ask_dying(d, "hog", {"op": "leak", "mib": 200})
    row = _restarted(d, "hog", before["hog"], "memory_limit")
    assert row["last_exit"]["signal"] == "SIGKILL" and row["restarts"] == 1
    after = d.status()["neighbour"]
    assert after["pid"] == before["neighbour"]["pid"] and after["restarts"] == 0
    assert "over memory_limit" in d.log()


def test_memory_of_the_actors_children_counts_against_its_limit(start_daemon):
    d = _hogs(start_daemon, {"memory_limit": "150MiB"})
    before = d.status()["hog"]
    grandchild = d.request("hog", {"op": "leak_child", "mib": 200})   # answers at once
    _restarted(d, "hog", before, "memory_limit")
    # the helper process died with the incarnation that owned it
    wait_until(lambda: gone(grandchild), message="the actor's child gone")


def test_memory_error_in_a_handler_is_fatal_with_a_memory_limit(start_daemon):
    d = _hogs(start_daemon, {"memory_limit": "1GiB"})
    before = d.status()["hog"]
    with pytest.raises(ActorExited):    # the incarnation ended under the request
        d.request("hog", {"op": "oom"})
    row = _restarted(d, "hog", before, "memory_limit")
    assert row["last_exit"]["code"] == 4


def test_memory_error_without_a_memory_limit_is_a_handler_error(start_daemon):
    d = start_daemon(tree_toml(actor_toml("hog", "tests.actors:Hog")))
    before = d.status()["hog"]
    with pytest.raises(RemoteError, match="MemoryError"):
        d.request("hog", {"op": "oom"})
    row = wait_until(lambda: (r := d.status()["hog"])["errors"] == 1 and r,
                     message="the failure counted")
    assert row["pid"] == before["pid"]


def test_cpu_over_its_limit_across_the_window_restarts_the_actor(start_daemon):
    d = _hogs(start_daemon, {"cpu_limit": 0.3, "cpu_window": "1s"})
    before = d.status()
    # a request from alysctl is not redelivered to the next incarnation
    _ask_dying(d, "hog", {"op": "spin", "seconds": 30}, timeout=20)
    row = _restarted(d, "hog", before["hog"], "cpu_limit")
    assert row["last_exit"]["signal"] == "SIGKILL"
    assert d.status()["neighbour"]["pid"] == before["neighbour"]["pid"]


def test_a_handler_over_max_cpu_time_is_hung_and_its_message_is_poison(start_daemon):
    d = start_daemon(tree_toml(
        actor_toml("hog", "tests.actors:Hog", max_cpu_time="300ms"),
        actor_toml("sender", "tests.actors:Probe"), max_retries=10, system=FAST))
    before = d.status()["hog"]
    # one-way from an actor: the sender holds it, and quarantines it after the kill
    assert d.request("sender", {"op": "send", "to": "hog", "msg": {"op": "spin"}}) == "sent"
    row = _restarted(d, "hog", before, "hung")
    letters = wait_until(lambda: (r := d.call("dead_letters"))["count"] >= 1 and r,
                         message="the message dead-lettered")["letters"]
    assert letters[0]["reason"] == "poison" and "max_cpu_time" in letters[0]["detail"]
    # the next incarnation was not fed the same message again
    assert d.status()["hog"]["incarnation"] == row["incarnation"]
    assert d.request("hog", {"op": "pid"}) == d.status()["hog"]["pid"]


def test_a_slow_handler_that_does_not_use_cpu_is_not_killed(start_daemon):
    d = start_daemon(tree_toml(actor_toml("hog", "tests.actors:Hog", max_cpu_time="200ms"),
                               system=FAST))
    before = d.status()["hog"]
    assert d.request("hog", {"op": "sleep", "seconds": 1.0}, timeout=5) == "ok"
    assert d.status()["hog"]["pid"] == before["pid"]


def test_an_actor_whose_heartbeat_stops_is_hung_and_restarted(start_daemon):
    d = start_daemon(tree_toml(actor_toml("frozen", "tests.actors:Hog"),
                               actor_toml("neighbour", "tests.actors:Hog"), system=BEATING))
    before = d.status()
    os.kill(before["frozen"]["pid"], signal.SIGSTOP)
    row = _restarted(d, "frozen", before["frozen"], "hung")
    assert row["last_exit"]["signal"] == "SIGKILL"
    assert d.status()["neighbour"]["pid"] == before["neighbour"]["pid"]
    assert "no heartbeat" in d.log()


def test_a_long_handler_keeps_its_heartbeat(start_daemon):
    d = start_daemon(tree_toml(actor_toml("busy", "tests.actors:Hog"), system=BEATING))
    before = d.status()["busy"]
    # 1 s of CPU in one handler: ten heartbeat intervals, yet not hung
    assert d.request("busy", {"op": "spin", "seconds": 1.0}, timeout=5) == "ok"
    assert d.status()["busy"]["pid"] == before["pid"]
