"""Who may use alysctl, against a real daemon and clients run as other real uids:
a foreign uid is refused by alysd itself, a control_group member may look but not
change, a non-member cannot even reach the socket, and two commands never steer
the same actor at once."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading

import pytest

from alysd.ctl import ControlClient
from alysd.errors import Busy
from alysd.testing import wait_until
from tests.conftest import REPO, actor_toml, tree_toml

NOBODY = 65534
NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="runs alysctl as another uid: needs root and setpriv")


def as_user(d, uid: int, gid: int, *args: str) -> subprocess.CompletedProcess:
    """``alysctl ARGS`` against ``d``, run as ``uid``/``gid`` with no other group."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         sys.executable, "-m", "alysd.ctl", "--runtime-dir", d.rundir.path, *args],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))


@pytest.fixture(scope="module")
def foreign_python():
    """Skip unless a process run as nobody can import alysd from this checkout."""
    probe = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", "import alysd.ctl"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    if probe.returncode != 0:
        pytest.skip(f"uid {NOBODY} cannot run this checkout's Python: {probe.stderr.strip()}")


@pytest.fixture(scope="module")
def ops_group():
    """An existing group nobody is not in (the system is left as it is)."""
    try:
        nobody = pwd.getpwuid(NOBODY)
        nobody_groups = set(os.getgrouplist(nobody.pw_name, nobody.pw_gid))
    except KeyError:
        nobody_groups = {NOBODY}
    for name in ("users", "staff", "adm", "operator"):
        try:
            group = grp.getgrnam(name)
        except KeyError:
            continue
        if group.gr_gid not in nobody_groups:
            return group
    pytest.skip("no group on this host that uid 65534 is not in")


def traversable(d) -> None:
    """Let other uids walk to the runtime dir: its parent, a private test work
    dir, stands in for /run (0755)."""
    os.chmod(d.workdir, 0o711)


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@NEEDS_ROOT
def test_a_foreign_uid_is_refused_by_alysd_itself_through_a_socket_left_open(
        start_daemon, foreign_python):
    d = start_daemon(tree_toml(actor_toml("a")))
    assert mode(d.rundir.path) == 0o700
    # The mistake: the directory and socket opened to everyone.
    traversable(d)
    os.chmod(d.rundir.path, 0o711)
    os.chmod(d.rundir.control, 0o666)
    for command in (["status"], ["restart", "a"]):
        out = as_user(d, NOBODY, NOBODY, *command)
        assert out.returncode == 1, out
        assert "refused this connection: uid 65534" in out.stderr
    info = d.call("version")
    assert info["denied_control_connections"] >= 2   # a DEALER may have retried once
    assert info["denied_connections"] == 0           # the system channel's are apart
    assert "refused a control connection: uid 65534 gid 65534" in d.log()
    assert d.status()["a"]["restarts"] == 0 and d.status()["a"]["state"] == "running"


@NEEDS_ROOT
def test_a_control_group_member_may_look_but_not_change(start_daemon, foreign_python, ops_group):
    d = start_daemon(tree_toml(actor_toml("a"), system=f'control_group = "{ops_group.gr_name}"'))
    traversable(d)
    assert (mode(d.rundir.path), os.lstat(d.rundir.path).st_gid) == (0o750, ops_group.gr_gid)
    assert (mode(d.rundir.control), os.lstat(d.rundir.control).st_gid) == (0o660,
                                                                          ops_group.gr_gid)
    for private in (d.rundir.system, d.rundir.inbox("a")):
        assert mode(private) & 0o077 == 0, private
    pid = d.status()["a"]["pid"]

    member = (NOBODY, ops_group.gr_gid)
    status = as_user(d, *member, "status", "--json")
    assert status.returncode == 0, status
    assert f'"pid":{pid}' in status.stdout
    assert as_user(d, *member, "tree").returncode == 0
    assert as_user(d, *member, "version").returncode == 0
    for command in (["restart", "a"], ["send", "a", '{"op": "pid"}'], ["reload"]):
        out = as_user(d, *member, *command)
        assert out.returncode == 1, out
        assert f"permission denied: {command[0]} changes the node" in out.stderr
    assert d.status()["a"]["pid"] == pid
    assert d.call("version")["denied_control_commands"] == 3
    assert d.log().count("refused a control command: permission denied") == 3

    # Not in the group: the directory is closed to it before alysd is even asked.
    out = as_user(d, NOBODY, NOBODY, "status")
    assert out.returncode == 3, out
    assert "permission denied" in out.stderr
    assert d.call("version")["denied_control_connections"] == 0


def test_an_unknown_control_group_stops_alysd_at_start_naming_the_key(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a"), system='control_group = "no-such-alysd-group"'),
                     wait=False)
    assert d.proc.wait(30) == 78
    assert "system.control_group: no group named 'no-such-alysd-group'" in d.log()


def test_a_second_command_on_a_busy_actor_is_refused_and_the_loop_serves_on(start_daemon):
    d = start_daemon(tree_toml(
        actor_toml("slow", shutdown_timeout="3s", config={"ignore_term": True}),
        actor_toml("other")))
    before = d.status()["slow"]["pid"]
    # A dead letter for slow, to replay while it is busy.
    rule = d.call("filter_add", {"receiver": "slow", "action": "drop"})
    d.request("other", {"op": "send", "to": "slow", "msg": {"k": 1}})
    letter = wait_until(lambda: d.call("dead_letters")["letters"], message="a dead letter")[0]
    d.call("filter_remove", {"id": rule["id"]})
    first: dict = {}

    def restart():
        try:
            first["rows"] = ControlClient(d.rundir).call("restart", {"name": "slow"}, timeout=30)
        except Exception as exc:   # reported by the assertion below
            first["error"] = exc
    thread = threading.Thread(target=restart)
    thread.start()
    try:
        wait_until(lambda: d.status()["slow"]["state"] == "stopping",
                   message="slow stopping (it ignores SIGTERM)")
        for command in ("restart", "stop", "start"):
            with pytest.raises(Busy, match=r"actor 'slow' is busy: `restart slow` is in progress"):
                d.call(command, {"name": "slow"}, timeout=2)
        with pytest.raises(Busy, match="restart slow"):
            d.request("slow", {"op": "pid"}, timeout=1)
        with pytest.raises(Busy, match="restart slow"):
            d.call("reload", timeout=2)
        with pytest.raises(Busy, match="restart slow"):
            d.call("dead_letters_replay", {"id": letter["id"]}, timeout=2)
        assert d.call("dead_letters")["count"] == 1      # the letter stays
        # Reading, and other actors, are never busy, and the loop answers at once.
        assert d.call("status", timeout=2)
        assert d.request("other", {"op": "echo", "v": 1}, timeout=2) == 1
    finally:
        thread.join(30)
    assert "error" not in first, first
    assert first["rows"][0]["state"] == "running" and first["rows"][0]["pid"] != before
    assert d.request("slow", {"op": "pid"}) == first["rows"][0]["pid"]   # no longer busy
