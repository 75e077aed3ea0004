"""Hot reload of a running tree: real daemons, real actor processes, the config
file rewritten under them, and `alysctl reload` / SIGHUP / a file watch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from alysd.errors import CommandError, UnknownActor
from alysd.testing import wait_until
from tests.conftest import REPO, actor_toml, tree_toml

FAST = 'health_interval = "200ms"\nhealth_timeout = "150ms"\nreload_timeout = "3s"'


def tree(*actors: str, system: str = FAST) -> str:
    return tree_toml(*actors, system=system)


BASE = tree(actor_toml("a"), actor_toml("b"),
            actor_toml("t", cls="tests.actors:Tunable", config={"level": 1}))


def rewrite(d, text: str) -> None:
    # A new inode, as editors and config management write files.
    temporary = d.config_path + ".new"
    Path(temporary).write_text(text)
    os.replace(temporary, d.config_path)


def reload(d, dry_run: bool = False) -> dict:
    return d.call("reload", {"dry_run": dry_run}, timeout=60)


def pids(d) -> dict[str, int]:
    return {name: row["pid"] for name, row in d.status().items()}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_change_to_one_actor_restarts_it_alone(start_daemon):
    d = start_daemon(BASE)
    before = pids(d)
    rewrite(d, BASE.replace('[actors.b]\nsupervisor = "root"\nclass = "tests.actors:Probe"',
                            '[actors.b]\nsupervisor = "root"\nclass = "tests.actors:Probe"\n'
                            'mailbox = { backpressure = "fail" }'))
    report = reload(d)
    assert report["outcome"] == "applied"
    assert report["restarted"] == {"b": ["mailbox.backpressure"]}
    assert (report["added"], report["removed"], report["updated_live"]) == ([], [], {})
    after = d.status()
    assert after["b"]["pid"] != before["b"] and after["b"]["state"] == "running"
    assert {n: after[n]["pid"] for n in ("a", "t")} == {n: before[n] for n in ("a", "t")}
    assert after["b"]["restarts"] == 0   # a reload restart is not a failure
    assert d.request("b", {"op": "echo", "v": 1}) == 1


def test_a_config_table_is_taken_live_by_an_actor_with_config_changed(start_daemon):
    d = start_daemon(BASE)
    before = pids(d)
    rewrite(d, BASE.replace("level = 1", 'level = 2\nmode = "fast"'))
    report = reload(d)
    assert report["updated_live"] == {"t": ["config"]} and report["restarted"] == {}
    assert pids(d) == before
    assert d.request("t", {"op": "config"}) == {"level": 2, "mode": "fast"}


def test_an_actor_without_config_changed_is_restarted_for_a_new_config(start_daemon):
    text = tree(actor_toml("a"), actor_toml("n", cls="tests.actors:NoLive", config={"x": 1}))
    d = start_daemon(text)
    before = pids(d)
    rewrite(d, text.replace("x = 1", "x = 2"))
    report = reload(d)
    assert report["restarted"] == {"n": ["config"]} and report["updated_live"] == {}
    after = pids(d)
    assert after["n"] != before["n"] and after["a"] == before["a"]
    assert d.request("n", {"op": "config"}) == {"x": 2}


COUNTED = tree(actor_toml("c", cls="tests.actors:Counter"), actor_toml("a"))


def start_counted(start_daemon, adds: int):
    """A daemon whose Counter ``c`` was sent ``adds`` messages; and its count."""
    d = start_daemon(COUNTED)
    for _ in range(adds):
        d.request("c", {"op": "add"})
    return d, d.request("c", {"op": "count"})


def test_state_is_carried_across_a_reload_restart(start_daemon):
    text = COUNTED
    d, counted = start_counted(start_daemon, 5)
    old_pid = pids(d)["c"]
    rewrite(d, text.replace('class = "tests.actors:Counter"',
                            'class = "tests.actors:Counter"\nmailbox = { max_retries = 5 }'))
    assert reload(d)["restarted"] == {"c": ["mailbox.max_retries"]}
    assert pids(d)["c"] != old_pid
    assert d.request("c", {"op": "count"}) == counted + 1   # the count request counts too
    assert not [f for f in os.listdir(d.rundir.path) if f.endswith(".state")]


def test_limits_and_mailbox_size_change_without_a_restart(start_daemon):
    text = tree(actor_toml("h", cls="tests.actors:Hog", memory_limit="1GiB"), actor_toml("a"),
                system=FAST + '\nsample_interval = "100ms"')
    d = start_daemon(text)
    before = pids(d)
    d.request("h", {"op": "leak", "mib": 64})
    rewrite(d, text.replace('memory_limit = "1GiB"', 'memory_limit = "48MiB"\nmax_mailbox_size = 5'))
    report = reload(d)
    assert report["updated_live"] == {"h": ["memory_limit", "mailbox.capacity"]}
    # Live: the same process now holds more than its new limit, and is killed for it.
    row = wait_until(lambda: (s := d.status()["h"])["last_exit"] and s, timeout=10,
                     message="h killed under its new memory limit")
    assert row["last_exit"]["reason"] == "memory_limit" and row["last_exit"]["pid"] == before["h"]
    assert pids(d)["a"] == before["a"]


def test_added_actors_start_removed_ones_stop_and_others_keep_their_pids(start_daemon):
    d = start_daemon(BASE)
    before = pids(d)
    rewrite(d, tree(actor_toml("a"), actor_toml("t", cls="tests.actors:Tunable",
                                                 config={"level": 1}), actor_toml("c")))
    report = reload(d)
    assert (report["added"], report["removed"]) == (["c"], ["b"])
    after = d.status()
    assert set(after) == {"a", "t", "c"} and after["c"]["state"] == "running"
    assert {n: after[n]["pid"] for n in ("a", "t")} == {n: before[n] for n in ("a", "t")}
    wait_until(lambda: _gone(before["b"]), timeout=5, message="b's process gone")
    # The running actors know the new directory: a reaches c, and b is unknown.
    assert d.request("a", {"op": "ask", "to": "c", "msg": {"op": "echo", "v": 7}}) == 7
    with pytest.raises(Exception, match="UnknownActor|no actor"):
        d.request("a", {"op": "ask", "to": "b", "msg": {"op": "echo", "v": 7}})
    with pytest.raises(UnknownActor):
        d.request("b", {"op": "echo", "v": 1})
    assert not os.path.exists(d.rundir.inbox("b"))


def test_a_pool_grows_and_shrinks(start_daemon):
    text = tree(actor_toml("p", instances=2), actor_toml("a"))
    d = start_daemon(text)
    before = pids(d)
    assert reload_to(d, text.replace("instances = 2", "instances = 3"))["added"] == ["p.2"]
    assert set(pids(d)) == {"p.0", "p.1", "p.2", "a"}
    grown = pids(d)
    assert reload_to(d, text)["removed"] == ["p.2"]
    assert pids(d) == {n: grown[n] for n in ("p.0", "p.1", "a")}
    assert grown["a"] == before["a"]
    wait_until(lambda: _gone(grown["p.2"]), timeout=5, message="p.2's process gone")


def reload_to(d, text: str) -> dict:
    rewrite(d, text)
    return reload(d)


def test_an_unhealthy_actor_after_a_live_change_rolls_the_reload_back(start_daemon):
    d = start_daemon(BASE)
    before = pids(d)
    rewrite(d, BASE.replace("level = 1", "level = 2\nsick = true"))
    with pytest.raises(CommandError) as failure:
        reload(d)
    message = str(failure.value)
    assert "actor t: it is unhealthy" in message and "rolled back" in message
    assert d.request("t", {"op": "config"}) == {"level": 1}
    assert pids(d) == before
    wait_until(lambda: d.status()["t"]["health"] == "healthy", timeout=5,
               message="t healthy again on its old config")


def test_a_config_changed_that_raises_rolls_back_at_once(start_daemon):
    d = start_daemon(BASE)
    rewrite(d, BASE.replace("level = 1", "level = 2\nrefuse = true"))
    with pytest.raises(CommandError, match=r"actor t: config_changed\(\) raised"):
        reload(d)
    assert d.request("t", {"op": "config"}) == {"level": 1}


def test_a_restarted_actor_that_fails_to_start_is_rolled_back_with_its_state(start_daemon):
    text = COUNTED
    d, counted = start_counted(start_daemon, 3)
    before = pids(d)
    rewrite(d, text.replace('class = "tests.actors:Counter"',
                            'class = "tests.actors:Counter"\nconfig = { fail_start = true }'))
    with pytest.raises(CommandError, match="actor c: it crashed.*rolled back"):
        reload(d)
    row = d.status()["c"]
    assert row["state"] == "running" and row["pid"] != before["c"]
    assert d.request("c", {"op": "count"}) == counted + 1   # the state from before the reload
    assert pids(d)["a"] == before["a"]


def test_an_invalid_file_is_rejected_and_nothing_changes(start_daemon):
    d = start_daemon(BASE)
    before = pids(d)
    rewrite(d, BASE.replace('class = "tests.actors:Tunable"',
                            'class = "tests.actors:Tunable"\nmemory_limit = "lots"'))
    with pytest.raises(CommandError, match=r"actors\.t\.memory_limit.*'lots'"):
        reload(d)
    assert pids(d) == before
    rewrite(d, BASE.replace('class = "tests.actors:Tunable"', 'class = "tests.actors:Missing"'))
    with pytest.raises(CommandError, match=r"actors\.t\.class: cannot load tests\.actors:Missing"):
        reload(d)
    assert pids(d) == before
    assert d.request("t", {"op": "config"}) == {"level": 1}


def test_a_key_that_needs_a_restart_of_alysd_refuses_the_reload(start_daemon):
    d = start_daemon(BASE)
    rewrite(d, BASE.replace(FAST, FAST + '\nheartbeat_interval = "2s"').replace(
        "level = 1", "level = 5"))
    with pytest.raises(CommandError, match=r"system\.heartbeat_interval: .*only when alysd "
                                           r"restarts"):
        reload(d)
    assert d.request("t", {"op": "config"}) == {"level": 1}   # nothing at all applied


def test_a_dry_run_reports_and_changes_nothing(start_daemon):
    d = start_daemon(BASE)
    rewrite(d, BASE.replace("level = 1", "level = 3") + actor_toml("c"))
    report = reload(d, dry_run=True)
    assert (report["outcome"], report["added"], report["updated_live"]) == (
        "dry_run", ["c"], {"t": ["config"]})
    assert "c" not in d.status() and d.request("t", {"op": "config"}) == {"level": 1}
    assert reload(d)["outcome"] == "applied"
    assert reload(d)["outcome"] == "unchanged"


def test_sighup_reloads(start_daemon):
    d = start_daemon(BASE)
    rewrite(d, BASE.replace("level = 1", "level = 4"))
    os.kill(d.pid, signal.SIGHUP)
    wait_until(lambda: d.request("t", {"op": "config"}) == {"level": 4}, timeout=10,
               message="the new config live after SIGHUP")


def test_a_watched_config_file_reloads_when_it_changes(start_daemon):
    text = tree(actor_toml("t", cls="tests.actors:Tunable", config={"level": 1}),
                system=FAST + "\nwatch_config = true")
    d = start_daemon(text)
    rewrite(d, text.replace("level = 1", "level = 6"))
    wait_until(lambda: d.request("t", {"op": "config"}) == {"level": 6}, timeout=10,
               message="the new config live after the file changed")
    assert "reload (file change) applied" in d.log()


def test_alysctl_reload_prints_what_changed_and_exits_1_when_refused(start_daemon):
    d = start_daemon(BASE)
    rewrite(d, BASE.replace("level = 1", "level = 2") + actor_toml("c"))
    ctl = [sys.executable, "-m", "alysd.ctl", "--runtime-dir", d.rundir.path, "reload"]
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run(ctl, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["  added: c", "  updated live: t (config)"]
    assert done.stdout.startswith(f"reloaded {d.config_path} in ")
    rewrite(d, "[supervisors.root]\nparent = 3\n")
    done = subprocess.run(ctl, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "supervisors.root.parent: expected a supervisor name, got 3" in done.stderr


def test_a_change_too_big_for_the_system_channel_is_refused(start_daemon):
    d = start_daemon(BASE)
    rewrite(d, BASE.replace("level = 1", f'level = 1\nblob = "{"x" * 70000}"'))
    with pytest.raises(CommandError, match=r"actors\.t: too large to send to the running actors"):
        reload(d)
    assert d.request("t", {"op": "config"}) == {"level": 1}
