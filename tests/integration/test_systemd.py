"""alysd under systemd: the shipped unit and sysusers files are valid, and a real
daemon speaks sd_notify (READY once the tree is up, STATUS on changes, the
watchdog from its loop, STOPPING on the way out) without leaking systemd's
variables to its actors."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alysd.config import load_config
from alysd.supervisor import ZYGOTE_EXIT_TIMEOUT
from alysd.testing import run_daemon
from alysd.units import parse_duration
from tests.conftest import REPO, actor_toml, tree_toml

UNIT = Path(REPO, "systemd", "alysd.service")
SYSUSERS = Path(REPO, "systemd", "alysd.sysusers")
SHIPPED_ALYSD = "/opt/alysd/bin/alysd"
SHIPPED_ALYSCTL = "/opt/alysd/bin/alysctl"
SYSTEMD_VARS = (b"NOTIFY_SOCKET=", b"WATCHDOG_USEC=", b"WATCHDOG_PID=")


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in file order]}}`` of a unit file (no line continuations)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# --- the unit file ---------------------------------------------------------------------

def _alysd_executable(workdir: str, program: str = "alysd") -> str:
    """The test environment's ``alysd`` (or ``alysctl``) script, or a stand-in that
    runs this Python's."""
    installed = shutil.which(program, path=os.path.dirname(sys.executable))
    if installed:
        return installed
    module = {"alysd": "alysd", "alysctl": "alysd.ctl"}[program]
    shim = os.path.join(workdir, program)
    Path(shim).write_text(f"#!/bin/sh\nexec {sys.executable} -m {module} \"$@\"\n")
    os.chmod(shim, 0o755)
    return shim


def test_the_unit_file_verifies(short_tmp):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    shipped = UNIT.read_text()
    assert shipped.count(f"ExecStart={SHIPPED_ALYSD} ") == 1
    # `verify` insists that ExecStart's binary exists, and the shipped path is
    # where an installation puts it, not where this test runs: verify a copy
    # that differs in that path alone.
    copy = Path(short_tmp, "alysd.service")
    assert shipped.count(f"ExecReload={SHIPPED_ALYSCTL} ") == 1
    copy.write_text(shipped.replace(f"ExecStart={SHIPPED_ALYSD} ",
                                    f"ExecStart={_alysd_executable(short_tmp)} ")
                           .replace(f"ExecReload={SHIPPED_ALYSCTL} ",
                                    f"ExecReload={_alysd_executable(short_tmp, 'alysctl')} "))
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], check=False,
                            capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # verify exits 0 after unknown keys and unparsable values ("..., ignoring"); they
    # are reported against the file, so any line naming it is a defect.
    assert [line for line in output.splitlines() if "alysd.service" in line] == []


def test_the_sysusers_snippet_creates_the_alysd_user_and_group(short_tmp):
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed")
    # --root: a scratch root with no users, so the host's accounts are never read or touched.
    result = subprocess.run([sysusers, "--dry-run", f"--root={short_tmp}", "-"],
                            input=SYSUSERS.read_text(), check=False, capture_output=True, text=True,
                            timeout=30)
    output = result.stdout + result.stderr
    if result.returncode != 0 and "--dry-run" in output:
        pytest.skip("this systemd-sysusers has no --dry-run")
    assert result.returncode == 0, output
    assert "Creating group 'alysd'" in output, output
    assert re.search(r"Creating user 'alysd' .*GID", output), output
    assert "ignoring" not in output.lower(), output   # how sysusers reports a bad line
    assert os.listdir(short_tmp) == []                  # dry run: nothing written


def service_settings() -> dict[str, str]:
    """The shipped unit's [Service] settings (the last value of each key, as systemd reads it)."""
    return {key: values[-1] for key, values in unit_settings(UNIT.read_text())["Service"].items()}


def test_the_unit_states_what_the_runtime_relies_on():
    s = service_settings()
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["ExecStart"] == f"{SHIPPED_ALYSD} --config /etc/alysd/alys.toml"
    assert s["Restart"] == "on-failure"
    assert "78" in s["RestartPreventExitStatus"].split()      # EX_CONFIG is never retried
    assert "1" not in s["RestartPreventExitStatus"].split()   # the tree gave up: retry
    assert s["KillMode"] == "mixed"
    assert s["User"] == s["Group"] == "alysd"
    assert (s["RuntimeDirectory"], s["StateDirectory"], s["ConfigurationDirectory"]) == (
        "alysd", "alysd", "alysd")
    assert s["RuntimeDirectoryMode"] == s["StateDirectoryMode"] == "0700"
    assert s["UMask"] == "0077"
    assert s["CapabilityBoundingSet"] == ""
    assert set(s["Delegate"].split()) >= {"cpu", "memory"}
    # Delegate= needs a writable cgroup tree; W+X memory may be needed by C extensions.
    assert "ProtectControlGroups" not in s and "MemoryDenyWriteExecute" not in s
    assert int(s["LimitNOFILE"]) >= 16384
    unit = unit_settings(UNIT.read_text())["Unit"]
    assert int(unit["StartLimitBurst"][-1]) >= 2
    assert parse_duration(unit["StartLimitIntervalSec"][-1]) > 0


def test_the_unit_waits_out_the_bundled_tree():
    """Stop and start timeouts cover conf/alys.toml's worst case: actors stop one at a
    time (each given its shutdown_timeout) and start one at a time (each its start_timeout)."""
    s = service_settings()
    config = load_config(Path(REPO, "conf", "alys.toml"))
    worst_stop = sum(a.shutdown_timeout or 0 for a in config.actors.values()) + ZYGOTE_EXIT_TIMEOUT
    worst_start = sum(a.start_timeout for a in config.actors.values())
    assert parse_duration(s["TimeoutStopSec"]) > worst_stop, (s["TimeoutStopSec"], worst_stop)
    assert parse_duration(s["TimeoutStartSec"]) > worst_start, (s["TimeoutStartSec"], worst_start)
    assert 1 <= parse_duration(s["WatchdogSec"]) < parse_duration(s["TimeoutStopSec"])


# --- the daemon speaks sd_notify ---------------------------------------------------------

class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET; keeps every datagram in arrival order."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.received: list[bytes] = []

    def wait_for(self, wanted: bytes, timeout: float = 30.0) -> bytes:
        """Receive until a datagram starting with ``wanted`` arrives; return it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {wanted!r} within {timeout:g}s; got {self.received}")
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append(message)
            if message.startswith(wanted):
                return message

    def close(self) -> None:
        self.sock.close()


def fields(message: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.decode().split("\n"))


def daemon_env(notify_path: str) -> dict[str, str]:
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "200000"}
    env.pop("WATCHDOG_PID", None)
    return env


@pytest.fixture
def fake_systemd(short_tmp):
    fake = FakeSystemd(os.path.join(short_tmp, "notify"))
    try:
        yield fake
    finally:
        fake.close()


def test_ready_after_the_whole_tree_then_watchdog_then_stopping(fake_systemd, short_tmp):
    journal = os.path.join(short_tmp, "journal")
    names = ["a", "b", "c"]
    config = tree_toml(*(actor_toml(n, config={"journal": journal}) for n in names))
    with run_daemon(config, python_path=[REPO], env=daemon_env(fake_systemd.path),
                    wait=False) as daemon:
        ready = fake_systemd.wait_for(b"READY=1")
        ready_seen = time.time()
        # Every actor's started() had returned before systemd heard READY.
        assert sorted(Path(journal).read_text().splitlines()) == [f"started {n}" for n in names]
        assert fields(ready) == {"READY": "1", "STATUS": "3 actors running, 0 restarting",
                                 "MAINPID": str(daemon.pid)}
        rows = daemon.status()
        assert all(row["state"] == "running" for row in rows.values()), rows
        assert all(row["ready_at"] <= ready_seen for row in rows.values()), (rows, ready_seen)
        # Nothing but watchdog pings may precede READY.
        assert set(fake_systemd.received[:-1]) <= {b"WATCHDOG=1"}, fake_systemd.received

        # The variables were removed before anything was forked, so nothing an actor
        # runs can speak to systemd in alysd's name. (/proc/<actor>/environ cannot show
        # that: a process forked without exec keeps the environment block it was
        # exec'd with, whatever os.environ says since; a process the actor execs
        # gets the actor's os.environ.)
        grandchild = daemon.request("a", {"op": "grandchild"})
        environ = Path(f"/proc/{grandchild}/environ").read_bytes().split(b"\0")
        assert [v for v in environ if v.startswith(SYSTEMD_VARS)] == []
        assert any(v.startswith(b"PYTHONPATH=") for v in environ)  # it did read an environment
        os.kill(grandchild, signal.SIGKILL)

        fake_systemd.wait_for(b"WATCHDOG=1", timeout=5)
        fake_systemd.wait_for(b"WATCHDOG=1", timeout=5)

        daemon.proc.send_signal(signal.SIGTERM)
        fake_systemd.wait_for(b"STOPPING=1")
        assert daemon.proc.wait(30) == 0
    after_ready = fake_systemd.received[fake_systemd.received.index(ready) + 1:]
    before_stopping = after_ready[:after_ready.index(b"STOPPING=1")]
    assert before_stopping.count(b"WATCHDOG=1") >= 2, after_ready
    assert [m for m in fake_systemd.received if m.startswith(b"READY=1")] == [ready]


def test_status_follows_a_restart(fake_systemd):
    config = tree_toml(actor_toml("steady"),
                       actor_toml("slow", strategy="exponential_backoff", initial_delay="1s",
                                  max_delay="2s"),
                       max_retries=10)
    with run_daemon(config, python_path=[REPO], env=daemon_env(fake_systemd.path),
                    wait=False) as daemon:
        fake_systemd.wait_for(b"READY=1")
        os.kill(daemon.status()["slow"]["pid"], signal.SIGKILL)
        # The backoff keeps "slow" restarting for a second: the change is seen.
        fake_systemd.wait_for(b"STATUS=1 actors running, 1 restarting", timeout=10)
        fake_systemd.wait_for(b"STATUS=2 actors running, 0 restarting", timeout=10)
        statuses = [m for m in fake_systemd.received if m.startswith(b"STATUS=")]
        # Only changes are sent, never the same line twice in a row.
        assert all(a != b for a, b in itertools.pairwise(statuses)), statuses


def test_a_reload_is_reloading_then_ready(fake_systemd):
    config = tree_toml(actor_toml("a", config={"v": 1}))
    with run_daemon(config, python_path=[REPO], env=daemon_env(fake_systemd.path),
                    wait=False) as daemon:
        fake_systemd.wait_for(b"READY=1")
        Path(daemon.config_path).write_text(config.replace("v = 1", "v = 2"))
        assert daemon.call("reload", {"dry_run": False})["restarted"] == {"a": ["config"]}
        reloading = fake_systemd.wait_for(b"RELOADING=1")
        # systemd (Type=notify-reload) matches it to the request by this clock.
        sent_at = int(fields(reloading)["MONOTONIC_USEC"])
        assert 0 < time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 - sent_at < 30_000_000
        assert fields(fake_systemd.wait_for(b"READY=1", timeout=5))["READY"] == "1"
