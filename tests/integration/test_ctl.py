"""``alysctl``: every command, its output and its exit code, against a real daemon."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from alysd.ctl import main
from alysd.testing import gone, wait_until
from tests.conftest import actor_toml

STATUS_FIELDS = {"name", "supervisor", "pid", "state", "restarts", "uptime_s", "rss_bytes",
                 "cpu_percent", "mailbox_depth", "health", "last_exit"}


@pytest.fixture
def daemon(start_daemon):
    return start_daemon(
        "[supervisors.top]\nstrategy = \"one_for_all\"\n"
        "[supervisors.work]\nparent = \"top\"\n"
        + actor_toml("a", supervisor="work") + actor_toml("b", supervisor="work")
        + actor_toml("c", supervisor="top", strategy="circuit_breaker"))


def ctl(daemon, *args, input=None):
    runner = CliRunner()
    return runner.invoke(main, ["--runtime-dir", daemon.rundir.path, *args], input=input,
                         catch_exceptions=False)


def test_status_json_lists_every_actor_with_its_fields(daemon):
    out = ctl(daemon, "status", "--json")
    assert out.exit_code == 0
    rows = json.loads(out.output)
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    for row in rows:
        assert STATUS_FIELDS <= set(row)
        assert row["state"] == "running" and row["pid"] > 0
        assert row["rss_bytes"] > 0 and row["last_exit"] is None
    assert {r["supervisor"] for r in rows} == {"work", "top"}


def test_status_table_is_readable(daemon):
    out = ctl(daemon, "status")
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert lines[0] == "system: healthy (3/3 actors running)"
    assert lines[1].split()[:4] == ["NAME", "SUPERVISOR", "STATE", "PID"]
    assert [line.split()[0] for line in lines[2:]] == ["a", "b", "c"]
    assert all("running" in line for line in lines[2:])


def test_status_system_line_follows_the_actors(daemon):
    assert ctl(daemon, "stop", "b").exit_code == 0
    assert ctl(daemon, "status").output.splitlines()[0] == "system: degraded (2/3 actors running)"
    assert ctl(daemon, "start", "b").exit_code == 0
    daemon.request("a", {"op": "degrade", "reason": "db slow"})
    wait_until(lambda: daemon.status()["a"]["health"] == "degraded", message="a degraded")
    lines = ctl(daemon, "status").output.splitlines()
    assert lines[0] == "system: degraded (3/3 actors running)"
    assert "degraded (db slow)" in lines[2]


def test_tree_draws_the_supervision_tree(daemon):
    out = ctl(daemon, "tree")
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert lines[0] == "top (one_for_all)"
    assert lines[1].startswith("├── work (one_for_one)")
    assert lines[2].startswith("│   ├── a [running pid ")
    assert lines[3].startswith("│   └── b [running pid ")
    assert lines[4].startswith("└── c [running pid ") and lines[4].endswith("(circuit_breaker)")
    tree = json.loads(ctl(daemon, "tree", "--json").output)
    assert [k["name"] for k in tree["children"]] == ["work", "c"]


def test_restart_gives_a_new_process_once_it_is_ready(daemon):
    old = daemon.status()["a"]["pid"]
    out = ctl(daemon, "restart", "a")
    assert out.exit_code == 0
    row = daemon.status()["a"]
    assert row["state"] == "running" and row["pid"] != old
    assert out.output.strip() == f"a: running (pid {row['pid']})"
    assert daemon.status()["b"]["restarts"] == 0


def test_restart_of_a_supervisor_restarts_its_subtree_and_what_its_parent_ties_to_it(daemon):
    before = daemon.status()
    out = ctl(daemon, "restart", "work")
    assert out.exit_code == 0
    after = daemon.status()
    assert after["a"]["pid"] != before["a"]["pid"] and after["b"]["pid"] != before["b"]["pid"]
    # work's parent `top` is one_for_all, so its sibling c restarts with it (OTP restart_child)
    assert after["c"]["pid"] != before["c"]["pid"]
    assert [line.split(":")[0] for line in out.output.splitlines()] == ["a", "b", "c"]


def test_restart_under_one_for_one_leaves_siblings_alone(daemon):
    before = daemon.status()
    assert ctl(daemon, "restart", "a").exit_code == 0
    after = daemon.status()
    assert after["a"]["pid"] != before["a"]["pid"]
    assert after["b"]["pid"] == before["b"]["pid"] and after["c"]["pid"] == before["c"]["pid"]


def test_stop_keeps_the_actor_stopped_until_start(daemon):
    pid = daemon.status()["b"]["pid"]
    out = ctl(daemon, "stop", "b")
    assert out.exit_code == 0 and out.output.strip() == "b: stopped"
    row = daemon.status()["b"]
    assert row["state"] == "stopped" and row["pid"] is None and row["restarts"] == 0
    assert row["last_exit"]["reason"] == "clean"
    assert gone(pid)
    # it is not restarted behind the operator's back
    assert ctl(daemon, "send", "b", '"x"').exit_code == 1
    out = ctl(daemon, "start", "b")
    assert out.exit_code == 0
    assert daemon.status()["b"]["state"] == "running"
    assert ctl(daemon, "send", "b", '{"op": "echo", "v": 3}').output.strip() == "3"


def test_send_prints_the_reply_as_json(daemon):
    out = ctl(daemon, "send", "a", '{"op": "echo", "v": {"k": [1, 2.5, "s", null]}}')
    assert out.exit_code == 0
    assert json.loads(out.output) == {"k": [1, 2.5, "s", None]}


def test_send_reads_a_large_payload_from_stdin(daemon):
    blob = "z" * 300_000  # beyond what fits comfortably in argv
    out = ctl(daemon, "send", "a", "-", input=json.dumps({"op": "echo", "v": blob}))
    assert out.exit_code == 0
    assert json.loads(out.output) == blob


def test_send_errors_name_what_went_wrong(daemon):
    runner = CliRunner()
    out = runner.invoke(main, ["--runtime-dir", daemon.rundir.path, "send", "ghost", "1"])
    assert out.exit_code == 1 and "ghost" in out.output
    out = runner.invoke(main, ["--runtime-dir", daemon.rundir.path, "send", "a",
                               '{"op": "raise", "msg": "no such block"}'])
    assert out.exit_code == 1 and "no such block" in out.output
    out = runner.invoke(main, ["--runtime-dir", daemon.rundir.path, "send", "a", "{not json"])
    assert out.exit_code == 2 and "not valid JSON" in out.output


def test_send_timeout(daemon):
    ctl(daemon, "stop", "b")
    out = CliRunner().invoke(main, ["--runtime-dir", daemon.rundir.path, "send", "a",
                                    '{"op": "ask", "to": "b", "msg": 1, "timeout": 3}',
                                    "--timeout", "0.3"])
    assert out.exit_code == 1 and "no reply from 'a'" in out.output


def test_unknown_actor_for_every_mutating_command(daemon):
    for command in ("restart", "stop", "start"):
        out = CliRunner().invoke(main, ["--runtime-dir", daemon.rundir.path, command, "nope"])
        assert out.exit_code == 1
        assert "no actor or supervisor named 'nope'" in out.output


def test_version_shows_client_and_daemon(daemon):
    out = ctl(daemon, "version", "--json")
    assert out.exit_code == 0
    info = json.loads(out.output)
    assert info["daemon"]["pid"] == daemon.pid
    assert info["alysctl"]["alysd"] == info["daemon"]["alysd"]
    assert {"pyzmq", "libzmq", "msgspec", "psutil", "python"} <= set(info["daemon"])


def test_no_daemon_exits_3_and_names_the_path(short_tmp):
    rundir = short_tmp
    try:
        for args in (["status"], ["tree"], ["restart", "a"], ["send", "a", "1"]):
            out = CliRunner().invoke(main, ["--runtime-dir", rundir, *args])
            assert out.exit_code == 3, args
            assert f"no alysd at {rundir}/control.sock" in out.output
        out = CliRunner().invoke(main, ["--runtime-dir", rundir, "version"])
        assert out.exit_code == 0 and "daemon: not running" in out.output
    finally:
        shutil.rmtree(rundir)


def test_runtime_dir_from_the_environment(daemon):
    out = CliRunner().invoke(main, ["status", "--json"],
                             env={"ALYSD_RUNTIME_DIR": daemon.rundir.path})
    assert out.exit_code == 0 and len(json.loads(out.output)) == 3


def test_usage_errors_exit_2(daemon):
    assert ctl(daemon, "frobnicate").exit_code == 2
    assert ctl(daemon, "restart").exit_code == 2


@pytest.mark.skipif(shutil.which("alysctl") is None, reason="alysctl console script not installed")
def test_installed_console_script(daemon):
    out = subprocess.run(["alysctl", "--runtime-dir", daemon.rundir.path, "status", "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 3


def test_tell_sends_a_one_way_message_and_prints_its_id(daemon):
    out = ctl(daemon, "tell", "b", '{"op": "echo", "v": 1}')
    assert out.exit_code == 0 and int(out.output.strip()) > 0
    assert ctl(daemon, "tell", "nobody", "1").exit_code == 1
    assert ctl(daemon, "tell", "b", "{not json").exit_code == 2
