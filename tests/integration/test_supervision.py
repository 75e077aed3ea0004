"""OTP semantics with real processes: strategies, policies, escalation, commanded stops."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from alysd.testing import wait_until
from tests.conftest import actor_toml, tree_toml


def _pids(d) -> dict[str, int]:
    return {name: row["pid"] for name, row in d.status().items()}


def _kill_and_wait(d, name: str, changed: set[str]) -> dict[str, dict]:
    """SIGKILL ``name``; wait until exactly ``changed`` have new running incarnations."""
    before = d.status()
    os.kill(before[name]["pid"], signal.SIGKILL)

    def settled():
        rows = d.status()
        if not all(rows[n]["state"] == "running" for n, r in before.items()
                   if r["state"] == "running"):
            return None
        moved = {n for n, r in rows.items() if r["incarnation"] != before[n]["incarnation"]}
        return rows if moved == changed else None
    return wait_until(settled, timeout=15, message=f"{sorted(changed)} restarted")


def test_one_for_all_restarts_every_sibling_in_start_order(start_daemon, tmp_path):
    journal = tmp_path / "journal"
    d = start_daemon(tree_toml(*(actor_toml(n, config={"journal": str(journal)}) for n in "abc"),
                               strategy="one_for_all", max_retries=10))
    journal.write_text("")
    rows = _kill_and_wait(d, "b", {"a", "b", "c"})
    assert rows["b"]["last_exit"]["signal"] == "SIGKILL"
    assert rows["a"]["last_exit"]["reason"] == "clean"  # stopped in order, not killed
    # siblings stop in reverse start order, then everything starts in start order
    assert journal.read_text().split("\n")[:-1] == [
        "stopped c", "stopped a", "started a", "started b", "started c"]


def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(start_daemon):
    d = start_daemon(tree_toml(*(actor_toml(n) for n in "abcd"), strategy="rest_for_one",
                               max_retries=10))
    before = _pids(d)
    rows = _kill_and_wait(d, "b", {"b", "c", "d"})
    assert rows["a"]["pid"] == before["a"]
    assert rows["a"]["restarts"] == 0 and rows["b"]["restarts"] == 1


def test_exponential_backoff_delays_the_restart_visibly(start_daemon):
    d = start_daemon(tree_toml(actor_toml("slow", strategy="exponential_backoff",
                                          initial_delay="1500ms", max_delay="5s"),
                               actor_toml("other"), max_retries=10))
    os.kill(d.status()["slow"]["pid"], signal.SIGKILL)
    row = wait_until(lambda: (r := d.status()["slow"])["restart_in_s"] and r,
                     message="restart scheduled")
    assert row["state"] == "restarting" and row["pid"] is None
    assert 0 < row["restart_in_s"] <= 1.5 * 1.2
    assert "backoff" in row["reason"]
    row = wait_until(lambda: (r := d.status()["slow"])["state"] == "running" and r, timeout=10,
                     message="restarted after the backoff")
    assert row["restarts"] == 1 and row["restart_in_s"] is None


def test_circuit_breaker_opens_half_opens_and_closes(start_daemon):
    d = start_daemon(tree_toml(
        actor_toml("flaky", strategy="circuit_breaker", failure_threshold=2,
                   recovery_timeout="1s", success_threshold=2),
        max_retries=20, system='health_interval = "300ms"'))
    assert d.status()["flaky"]["breaker"] == "closed"
    # Two failures with no healthy health report between them open the breaker.
    _kill_and_wait(d, "flaky", {"flaky"})          # first failure: restarted
    os.kill(d.status()["flaky"]["pid"], signal.SIGKILL)  # second, at once: it opens
    row = wait_until(lambda: (r := d.status()["flaky"])["breaker"] == "open" and r,
                     message="breaker open")
    assert row["state"] == "stopped" and row["pid"] is None
    assert "circuit open" in row["reason"]
    # after recovery_timeout one trial incarnation runs; healthy health reports close it
    row = wait_until(lambda: (r := d.status()["flaky"])["breaker"] == "closed"
                     and r["state"] == "running" and r, timeout=10, message="breaker closed")
    assert d.request("flaky", {"op": "echo", "v": 1}) == 1


def test_reset_closes_an_open_breaker_at_once(start_daemon):
    d = start_daemon(tree_toml(actor_toml("flaky", strategy="circuit_breaker",
                                          failure_threshold=1, recovery_timeout="1h"),
                               max_retries=20))
    os.kill(d.status()["flaky"]["pid"], signal.SIGKILL)
    wait_until(lambda: d.status()["flaky"]["breaker"] == "open", message="breaker open")
    rows = d.call("reset", {"name": "flaky"})
    assert rows[0]["state"] == "running" and rows[0]["breaker"] == "closed"


def nested_tree(inner_retries: int, *actors: str) -> str:
    """``top`` (one_for_one, 5 restarts in 30 s) over ``inner`` (``inner_retries``)."""
    return ('[supervisors.top]\nstrategy = "one_for_one"\nmax_retries = 5\nwithin_time = "30s"\n'
            f'[supervisors.inner]\nparent = "top"\nmax_retries = {inner_retries}\n'
            'within_time = "30s"\n' + "".join(actors))


def test_a_child_supervisor_that_gives_up_is_restarted_by_its_parent(start_daemon):
    d = start_daemon(nested_tree(1, actor_toml("x", supervisor="inner"),
                                 actor_toml("y", supervisor="inner"),
                                 actor_toml("z", supervisor="top")))
    before = d.status()
    _kill_and_wait(d, "x", {"x"})                  # inner absorbs one restart
    rows = _kill_and_wait(d, "x", {"x", "y"})       # the second exceeds inner's intensity
    assert rows["z"]["pid"] == before["z"]["pid"]   # top restarted inner's subtree only
    assert "supervisor inner gave up" in d.log()
    assert d.proc.poll() is None


def test_a_commanded_stop_is_not_restarted_by_a_sibling_group_restart(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), actor_toml("b"), actor_toml("c"),
                               strategy="one_for_all", max_retries=10))
    d.call("stop", {"name": "c"})
    _kill_and_wait(d, "a", {"a", "b"})
    status = d.status()
    assert status["c"]["state"] == "stopped" and status["c"]["reason"] == "stopped by command"


def test_temporary_child_is_not_restarted_by_a_group_restart_of_its_siblings(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), actor_toml("t", restart="temporary"),
                               strategy="one_for_all", max_retries=10))
    os.kill(d.status()["t"]["pid"], signal.SIGKILL)
    row = wait_until(lambda: (r := d.status()["t"])["state"] == "stopped" and r,
                     message="temporary left stopped")
    assert "temporary" in row["reason"]
    assert d.status()["a"]["restarts"] == 0  # not a restart: nothing for the group to do


GROUP = {"one_for_one": {"target"}, "one_for_all": {"first", "target", "last"},
         "rest_for_one": {"target", "last"}}


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
def test_otp_matrix_restart_type_by_exit_by_strategy(start_daemon, strategy, restart):
    d = start_daemon(tree_toml(actor_toml("first"), actor_toml("target", restart=restart),
                               actor_toml("last"), strategy=strategy, max_retries=10))
    incarnations = {n: r["incarnation"] for n, r in d.status().items()}

    def moved(rows):
        return {n for n, r in rows.items() if r["incarnation"] != incarnations[n]}

    # abnormal exit
    os.kill(d.status()["target"]["pid"], signal.SIGKILL)
    if restart == "temporary":
        rows = wait_until(lambda: (s := d.status())["target"]["state"] == "stopped" and s,
                          message="temporary left stopped")
        assert moved(rows) == set() and rows["first"]["state"] == rows["last"]["state"] == "running"
        return
    rows = wait_until(lambda: (s := d.status()) and moved(s) == GROUP[strategy]
                      and all(r["state"] == "running" for r in s.values()) and s,
                      message=f"{strategy} group restarted")
    incarnations = {n: r["incarnation"] for n, r in rows.items()}
    # clean exit (an orderly SIGTERM the supervisor did not ask for)
    os.kill(rows["target"]["pid"], signal.SIGTERM)
    if restart == "transient":
        rows = wait_until(lambda: (s := d.status())["target"]["state"] == "stopped" and s,
                          message="transient left stopped after a clean exit")
        assert rows["target"]["last_exit"]["reason"] == "clean" and moved(rows) == set()
    else:
        wait_until(lambda: (s := d.status()) and moved(s) == GROUP[strategy]
                   and all(r["state"] == "running" for r in s.values()),
                   message="permanent restarted after a clean exit")


def test_no_zombies_after_many_crashes(start_daemon):
    d = start_daemon(tree_toml(*(actor_toml(n) for n in "abc"), strategy="one_for_one",
                               max_retries=1000, within_time="1s"))
    for i in range(30):
        row = d.status()["abc"[i % 3]]
        os.kill(row["pid"], signal.SIGKILL)
        wait_until(lambda r=row: d.status()[r["name"]]["incarnation"] > r["incarnation"]
                   and d.status()[r["name"]]["state"] == "running", message="restarted")
    zombies = [p for p in d.descendants() if p.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []
    assert len(d.descendants()) <= 3 + 2  # the actors, the zygote and its warm spare


def test_a_group_restart_stops_a_temporary_sibling_and_does_not_revive_stopped_ones(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), actor_toml("temp", restart="temporary"),
                               actor_toml("open", strategy="circuit_breaker", failure_threshold=1,
                                          recovery_timeout="1h"),
                               actor_toml("b"), strategy="one_for_all", max_retries=10))
    os.kill(d.status()["open"]["pid"], signal.SIGKILL)      # its breaker opens: left stopped
    wait_until(lambda: d.status()["open"]["breaker"] == "open", message="breaker open")
    before = d.status()
    os.kill(before["b"]["pid"], signal.SIGKILL)
    rows = wait_until(lambda: (s := d.status())["b"]["incarnation"] > before["b"]["incarnation"]
                      and s["a"]["incarnation"] > before["a"]["incarnation"]
                      and s["a"]["state"] == s["b"]["state"] == "running"
                      and s["temp"]["state"] == "stopped" and s, message="group restarted")
    assert "temporary" in rows["temp"]["reason"] and rows["temp"]["pid"] is None
    assert rows["open"]["state"] == "stopped" and rows["open"]["breaker"] == "open"


def test_an_actor_stopped_by_command_stays_stopped_when_its_supervisor_is_restarted(start_daemon):
    d = start_daemon(nested_tree(0, actor_toml("x", supervisor="inner"),
                                 actor_toml("y", supervisor="inner"),
                                 actor_toml("quiet", supervisor="inner")))
    d.call("stop", {"name": "quiet"})
    _kill_and_wait(d, "x", {"x", "y"})  # inner allows no restart: top restarts its subtree
    assert "supervisor inner gave up" in d.log()
    row = d.status()["quiet"]
    assert row["state"] == "stopped" and row["reason"] == "stopped by command"
