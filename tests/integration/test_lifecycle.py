"""Start, stop, crash and death of real processes: what an operator relies on."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from alysd.errors import ActorExited, HandlerError
from alysd.testing import wait_until
from tests.conftest import REPO, actor_toml, tree_toml


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _alysd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "alysd", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_actors_in_reverse_start_order_and_exits_0(start_daemon, tmp_path, sig):
    journal = str(tmp_path / "journal")
    d = start_daemon(tree_toml(*(actor_toml(n, config={"journal": journal}) for n in "abc")))
    pids = [row["pid"] for row in d.status().values()]
    assert d.stop(sig) == 0
    assert Path(journal).read_text().split("\n")[:-1] == [
        "started a", "started b", "started c", "stopped c", "stopped b", "stopped a"]
    assert all(_gone(pid) for pid in pids)
    assert sorted(os.listdir(d.rundir.path)) == ["alysd.lock"]  # no stale sockets left


def test_sigkill_of_alysd_leaves_no_actor_alive_after_one_second(start_daemon):
    d = start_daemon(tree_toml(*(actor_toml(n) for n in "abcd")))
    tree = [p.pid for p in d.descendants()]
    actors = [row["pid"] for row in d.status().values()]
    assert set(actors) < set(tree)  # and the zygote, with its warm spare
    d.proc.kill()
    d.proc.wait()
    wait_until(lambda: all(_gone(pid) for pid in tree), timeout=1.0,
               message="every actor and the zygote gone within 1 s of SIGKILL")


def test_a_killed_actor_is_restarted_and_its_neighbours_are_untouched(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), actor_toml("b")))
    before = d.status()
    os.kill(before["a"]["pid"], signal.SIGKILL)
    after = wait_until(lambda: (s := d.status())["a"]["restarts"] == 1
                       and s["a"]["state"] == "running" and s, message="a restarted")
    assert after["a"]["pid"] != before["a"]["pid"]
    assert after["a"]["incarnation"] == 2
    assert after["a"]["last_exit"]["reason"] == "signal"
    assert after["a"]["last_exit"]["signal"] == "SIGKILL"
    assert after["b"]["pid"] == before["b"]["pid"] and after["b"]["restarts"] == 0
    assert d.request("a", {"op": "echo", "v": 1}) == 1
    report = next(line for line in d.log().splitlines() if "crash report: actor a " in line)
    assert f"pid {before['a']['pid']} incarnation 1" in report
    assert "killed by SIGKILL" in report and "decision: restart now" in report


def test_exit_code_is_recorded_and_temporary_actors_stay_stopped(start_daemon):
    d = start_daemon(tree_toml(actor_toml("perm"), actor_toml("temp", restart="temporary"),
                               actor_toml("never", strategy="never")))
    for name in ("perm", "temp", "never"):
        with pytest.raises(ActorExited, match="exit code 5"):  # at once, not after the timeout
            d.request(name, {"op": "exit", "code": 5}, timeout=30)
    rows = wait_until(lambda: (s := d.status())["perm"]["state"] == "running"
                      and s["perm"]["restarts"] == 1 and s["temp"]["state"] == "stopped"
                      and s["never"]["state"] == "stopped" and s, message="exits handled")
    for name in ("perm", "temp", "never"):
        assert rows[name]["last_exit"]["reason"] == "exit_code"
        assert rows[name]["last_exit"]["code"] == 5
    assert rows["temp"]["pid"] is None and rows["temp"]["restarts"] == 0


def test_transient_restarts_only_after_an_abnormal_exit(start_daemon):
    d = start_daemon(tree_toml(actor_toml("t", restart="transient")))
    os.kill(d.status()["t"]["pid"], signal.SIGKILL)
    wait_until(lambda: d.status()["t"]["restarts"] == 1 and d.status()["t"]["state"] == "running",
               message="transient restarted after SIGKILL")
    os.kill(d.status()["t"]["pid"], signal.SIGTERM)  # an orderly stop: exit code 0
    row = wait_until(lambda: (r := d.status()["t"])["state"] == "stopped" and r,
                     message="transient left stopped after a clean exit")
    assert row["last_exit"]["reason"] == "clean" and row["restarts"] == 1


def test_restart_intensity_exceeded_makes_alysd_exit_non_zero(start_daemon):
    d = start_daemon(tree_toml(actor_toml("ok"), actor_toml("bad", config={"fail_start": True}),
                               max_retries=2, within_time="30s"), wait=False)
    assert d.proc.wait(30) == 1
    log = d.log()
    assert "started() failed" in log
    assert "the root supervisor root gave up (2 restarts in 30s exceeded)" in log
    assert not os.path.exists(d.rundir.control)


def test_an_actor_ignoring_sigterm_is_killed_after_its_shutdown_timeout(start_daemon):
    d = start_daemon(tree_toml(actor_toml("stubborn", shutdown_timeout="300ms",
                                          config={"ignore_term": True})))
    pid = d.status()["stubborn"]["pid"]
    assert d.stop(timeout=10) == 0
    assert _gone(pid)
    assert "did not stop within 0.3s: SIGKILL" in d.log()


def test_stopping_an_actor_ends_its_whole_process_group(start_daemon):
    d = start_daemon(tree_toml(actor_toml("parent")))
    grandchild = d.request("parent", {"op": "grandchild"})
    assert psutil.pid_exists(grandchild)
    d.call("stop", {"name": "parent"})
    wait_until(lambda: _gone(grandchild), timeout=5, message="grandchild gone")


def test_unimportable_actor_class_is_refused_with_its_key(start_daemon):
    d = start_daemon(tree_toml(actor_toml("x", cls="tests.nonexistent:Nope")), wait=False)
    assert d.proc.wait(30) == 78
    assert "actors.x.class" in d.log() and "tests.nonexistent" in d.log()


@pytest.mark.parametrize("toml, key", [
    (tree_toml(actor_toml("a", strategy="sometimes")), "actors.a.strategy"),
    (tree_toml(actor_toml("a", colour="blue")), "actors.a.colour: unknown key"),
    (tree_toml(actor_toml("a", supervisor="ghost")), "actors.a.supervisor"),
    ('[supervisors.a]\n[supervisors.b]\n', "supervisors"),
    ("this is not toml", "line 1"),
])
def test_bad_config_refuses_to_start_and_names_the_key(tmp_path, short_tmp, toml, key):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    out = _alysd("--config", str(path), "--runtime-dir", short_tmp)
    assert out.returncode == 78
    assert key in out.stderr


def test_usage_errors_exit_2():
    assert _alysd("--dev", "--config", "x.toml").returncode == 2
    assert _alysd("--set", "no-equals-sign", "--dev").returncode == 2


def test_version_names_the_libraries():
    out = _alysd("--version")
    assert out.returncode == 0
    for lib in ("alysd 0.1.0", "pyzmq", "libzmq", "msgspec", "psutil", "python"):
        assert lib in out.stdout


def test_runtime_dir_and_sockets_are_private(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a")))
    assert stat.S_IMODE(os.stat(d.rundir.path).st_mode) & 0o077 == 0
    for path in (d.rundir.control, d.rundir.system, d.rundir.inbox("a")):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path


def test_a_second_daemon_on_the_same_runtime_dir_is_refused(start_daemon, tmp_path):
    d = start_daemon(tree_toml(actor_toml("a")))
    config = tmp_path / "c.toml"
    config.write_text(tree_toml(actor_toml("b")))
    out = _alysd("--config", str(config), "--runtime-dir", d.rundir.path)
    assert out.returncode == 1
    assert f"another alysd (pid {d.pid})" in out.stderr
    assert d.status()["a"]["state"] == "running"


def test_death_of_the_zygote_stops_everything_and_alysd_exits_1(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), actor_toml("b")))
    zygote = next(p for p in d.descendants() if "zygote" in " ".join(p.cmdline()))
    actors = [row["pid"] for row in d.status().values()]
    zygote.kill()
    assert d.proc.wait(15) == 1
    assert all(_gone(pid) for pid in actors)
    assert "zygote" in d.log()


def test_a_request_that_keeps_killing_its_target_is_quarantined_and_the_crash_report_says_why(
        start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), actor_toml("b", mailbox={"max_retries": 2}),
                               max_retries=5))
    with pytest.raises(HandlerError, match="PoisonMessage: request .* to 'b' was quarantined: "
                                           "2 incarnations in a row died handling it"):
        d.request("a", {"op": "ask", "to": "b", "msg": {"op": "exit", "code": 9},
                        "timeout": 30}, timeout=10)
    reports = wait_until(lambda: [line for line in d.log().splitlines()
                                  if "crash report: actor b " in line] or None,
                         message="crash report")
    assert "exit_code (exit code 9)" in reports[0] and "it was handling ask" in reports[0]
    assert "from a for" in reports[0]
    # a writes the dead letter once its handler is done.
    letters = wait_until(lambda: d.call("dead_letters")["letters"], message="the dead letter")
    assert [(x["reason"], x["sender"], x["target"]) for x in letters] == [("poison", "a", "b")]
    assert letters[0]["payload"] == {"op": "exit", "code": 9}
    # b serves the next message: the poison message is gone for good.
    assert d.request("b", {"op": "echo", "v": 1}) == 1
