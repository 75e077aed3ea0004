"""Tests of alysd.cgroup against a directory tree standing in for cgroupfs, plus
the real host: detection never raises, and a real OOM kill where a delegated
cgroup v2 exists."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from alysd.cgroup import CgroupError, KernelCaps
from alysd.errors import AlysdError

MiB = 1 << 20
OWN = "/system.slice/alysd.service"     # alysd's cgroup as /proc/self/cgroup names it
NOT_DELEGATED = "is not writable (no delegated cgroup; run under systemd with Delegate=cpu memory)"

V1_CGROUP = "4:memory:/system.slice/alysd.service\n1:cpu:/system.slice/alysd.service\n"
V1_MOUNTS = ("31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
             "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n"
             "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory\n")

_real_mkdir, _real_rmdir = os.mkdir, os.rmdir


class FakeCgroupFs:
    """Plain directories standing in for cgroupfs below ``own``: a mkdir there
    creates the interface files the kernel would (a controller's files only when
    the parent enabled it in ``cgroup.subtree_control``), and an rmdir removes
    them, or fails with EBUSY while ``cgroup.procs`` lists a process. Interface
    files start empty, so each holds the writes made to it, one a line."""

    def __init__(self, own: Path, controllers: str, swap: bool):
        self.own = own
        self.swap = swap
        own.parent.mkdir(parents=True)
        _real_mkdir(own)
        self._fill(own, set(controllers.split()))

    def mkdir(self, path, mode=0o777, **kw):
        _real_mkdir(path, mode, **kw)
        path = Path(path)
        if path.is_relative_to(self.own):
            self._fill(path, self.enabled(path.parent))

    def rmdir(self, path, **kw):
        path = Path(path)
        if not path.is_relative_to(self.own) or not path.is_dir():
            return _real_rmdir(path, **kw)
        if self.writes(path / "cgroup.procs"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        for file in path.iterdir():
            file.unlink()
        _real_rmdir(path, **kw)

    def enabled(self, cgroup: Path) -> set[str]:
        """The controllers ``cgroup`` enabled for its children (``+memory``, ``-cpu``, ...)."""
        enabled: set[str] = set()
        for token in " ".join(self.writes(cgroup / "cgroup.subtree_control")).split():
            (enabled.add if token.startswith("+") else enabled.discard)(token[1:])
        return enabled

    def exit(self, pid: int) -> None:
        """The process ``pid`` ended: it leaves every cgroup."""
        for procs in self.own.rglob("cgroup.procs"):
            procs.write_text("".join(f"{p}\n" for p in self.writes(procs) if p != str(pid)))

    @staticmethod
    def writes(path: Path) -> list[str]:
        return path.read_text().splitlines()

    def _fill(self, cgroup: Path, controllers: set[str]) -> None:
        files = {"cgroup.controllers": " ".join(sorted(controllers)) + "\n",
                 "cgroup.procs": "", "cgroup.subtree_control": ""}
        if "memory" in controllers:
            files.update({"memory.max": "", "memory.oom.group": "",
                          "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"})
            if self.swap:
                files["memory.swap.max"] = ""
        if "cpu" in controllers:
            files["cpu.max"] = ""
        for name, text in files.items():
            (cgroup / name).write_text(text)


class Host:
    """A stand-in host: a fake /proc naming alysd's cgroup ``OWN`` and a cgroup2
    mount (``FakeCgroupFs``) at ``mount``."""

    def __init__(self, tmp_path: Path, monkeypatch, *, controllers: str = "cpu memory pids",
                 swap: bool = True, mount: str = "sys fs cgroup", proc_cgroup: str | None = None,
                 mountinfo: str | None = None):
        self.mount = tmp_path / mount
        self.fs = FakeCgroupFs(self.mount / OWN.lstrip("/"), controllers, swap)
        self.own = str(self.fs.own)
        monkeypatch.setattr(os, "mkdir", self.fs.mkdir)
        monkeypatch.setattr(os, "rmdir", self.fs.rmdir)
        escaped_mount = str(self.mount).replace(" ", "\\040")
        self.proc = tmp_path / "proc"
        (self.proc / "self").mkdir(parents=True)
        (self.proc / "self" / "cgroup").write_text(
            proc_cgroup if proc_cgroup is not None else V1_CGROUP + f"0::{OWN}\n")
        (self.proc / "self" / "mountinfo").write_text(
            mountinfo if mountinfo is not None else
            V1_MOUNTS + f"41 31 0:38 / {escaped_mount} rw,relatime shared:4 - cgroup2 cgroup2 rw\n")

    def detect(self, **kw) -> tuple[KernelCaps | None, str]:
        return KernelCaps.detect(proc_root=str(self.proc), **kw)

    def caps(self) -> KernelCaps:
        caps, why = self.detect()
        assert caps is not None, why
        return caps

    def writes(self, relative: str) -> list[str]:
        return self.fs.writes(self.fs.own / relative)


@pytest.fixture
def host(tmp_path, monkeypatch) -> Host:
    return Host(tmp_path, monkeypatch)


@pytest.fixture
def adopted(host) -> KernelCaps:
    """Caps on a host where alysd (pids 101, 102) was adopted."""
    caps = host.caps()
    caps.adopt([101, 102])
    return caps


# --- detect ----------------------------------------------------------------------------

def test_detect_finds_the_delegated_cgroup_under_the_cgroup2_mount(host):
    caps, why = host.detect()
    assert why == ""
    assert caps.own == host.own     # the escaped mount point ("\040") read back with its spaces


def test_detect_on_cgroup_v1_only(tmp_path, monkeypatch):
    host = Host(tmp_path, monkeypatch, proc_cgroup=V1_CGROUP + "0::/\n", mountinfo=V1_MOUNTS)
    assert host.detect() == (None, "cgroup v2 is not mounted")


def test_detect_without_a_cgroup_v2_line(tmp_path, monkeypatch):
    host = Host(tmp_path, monkeypatch, proc_cgroup=V1_CGROUP)
    caps, why = host.detect()
    assert caps is None and "no '0::' line" in why


@pytest.mark.parametrize("controllers, missing", [("hugetlb", "memory"), ("memory pids", "cpu")])
def test_detect_on_a_hybrid_host_without_a_needed_controller(tmp_path, monkeypatch,
                                                              controllers, missing):
    host = Host(tmp_path, monkeypatch, controllers=controllers, mount="sys/fs/cgroup/unified")
    assert host.detect() == (None, f"the {missing} controller is not available in {host.own}")


def test_detect_without_write_access(host, monkeypatch):
    # As root every mode bit grants access: stand in for a cgroup not delegated to us.
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(host.own))
    assert host.detect() == (None, f"{host.own} {NOT_DELEGATED}")


def test_detect_reads_a_cgroup_under_a_mount_of_a_subtree(tmp_path, monkeypatch):
    # A container sees its own cgroup mounted as the root of the hierarchy.
    host = Host(tmp_path, monkeypatch)
    subtree = f"41 31 0:38 /system.slice {tmp_path}/sys\\040fs\\040cgroup/system.slice " \
              "rw - cgroup2 cgroup2 rw\n"
    (host.proc / "self" / "mountinfo").write_text(subtree)
    assert host.detect()[0].own == host.own
    (host.proc / "self" / "cgroup").write_text("0::/user.slice\n")
    assert host.detect() == (None, "this process's cgroup /user.slice is outside every cgroup v2 mount")


def test_detect_takes_cgroup_root_for_the_mount_point(host):
    (host.proc / "self" / "mountinfo").write_text(V1_MOUNTS)
    caps, why = host.detect(cgroup_root=str(host.mount))
    assert why == "" and caps.own == host.own


def test_detect_never_raises(tmp_path):
    caps, why = KernelCaps.detect(proc_root=str(tmp_path / "no-proc"))
    assert caps is None and why.startswith("cannot read the cgroup setup: ")


# --- adopt and place --------------------------------------------------------------------

def test_adopt_moves_alysd_into_a_leaf_then_enables_the_controllers(host, adopted):
    assert host.writes("alysd/cgroup.procs") == ["101", "102"]
    assert host.writes("cgroup.subtree_control") == ["+memory +cpu"]


def test_adopt_refused_while_other_processes_remain(host, monkeypatch):
    caps = host.caps()
    real_open = os.open

    def busy_open(path, flags, *args, **kw):   # the kernel's no-internal-processes rule
        if str(path).endswith("/alysd.service/cgroup.subtree_control"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", busy_open)
    with pytest.raises(CgroupError) as caught:
        caps.adopt([101])
    assert caught.value.errno == errno.EBUSY
    assert f"processes alysd did not adopt remain in {host.own}" in str(caught.value)


def test_place_writes_the_caps_then_the_pid(host, adopted):
    adopted.place("engine", 201, memory_max=512 * MiB, cpu_max=0.5)
    assert host.writes("actor.engine/memory.max") == [str(512 * MiB)]
    assert host.writes("actor.engine/memory.swap.max") == ["0"]
    assert host.writes("actor.engine/memory.oom.group") == ["1"]
    assert host.writes("actor.engine/cpu.max") == ["50000 100000"]
    assert host.writes("actor.engine/cgroup.procs") == ["201"]


def test_place_without_caps_writes_max(host, adopted):
    adopted.place("engine", 201, memory_max=None, cpu_max=None)
    assert host.writes("actor.engine/memory.max") == ["max"]
    assert host.writes("actor.engine/memory.swap.max") == ["max"]
    assert host.writes("actor.engine/cpu.max") == ["max"]


@pytest.mark.parametrize("cores, line", [(2, "200000 100000"), (0.25, "25000 100000"),
                                         (0.001, "1000 100000")])
def test_cpu_max_is_a_quota_per_100ms_period(host, adopted, cores, line):
    adopted.place("engine", 201, memory_max=None, cpu_max=cores)
    assert host.writes("actor.engine/cpu.max") == [line]


def test_place_without_swap_accounting(tmp_path, monkeypatch):
    host = Host(tmp_path, monkeypatch, swap=False)
    caps = host.caps()
    caps.adopt([101])
    caps.place("engine", 201, memory_max=64 * MiB, cpu_max=None)
    assert host.writes("actor.engine/memory.max") == [str(64 * MiB)]
    assert not (host.fs.own / "actor.engine" / "memory.swap.max").exists()


def test_a_restart_reuses_the_cgroup(host, adopted):
    adopted.place("engine", 201, memory_max=64 * MiB, cpu_max=None)
    host.fs.exit(201)
    adopted.place("engine", 202, memory_max=64 * MiB, cpu_max=None)
    assert host.writes("actor.engine/cgroup.procs") == ["202"]
    # One left by an earlier alysd is reused too.
    KernelCaps(host.own).place("engine", 203, memory_max=None, cpu_max=None)
    assert host.writes("actor.engine/cgroup.procs") == ["202", "203"]


def test_any_actor_name_maps_to_one_safe_directory(host, adopted):
    names = {"pool.3": "actor.pool.3", "a/b": "actor.a%2Fb", "a%2Fb": "actor.a%252Fb",
             "..": "actor...", "../x": "actor...%2Fx", "ü": "actor.%C3%BC"}
    for pid, name in enumerate(names, start=201):
        adopted.place(name, pid, memory_max=None, cpu_max=None)
    actors = sorted(p.name for p in host.fs.own.iterdir() if p.is_dir() and p.name != "alysd")
    assert actors == sorted(names.values())


def test_a_failed_write_names_the_file_the_value_and_the_actor(host):
    caps = host.caps()      # not adopted: the memory controller is not enabled for actors
    with pytest.raises(CgroupError) as caught:
        caps.place("engine", 201, memory_max=64 * MiB, cpu_max=None)
    error = caught.value
    assert isinstance(error, AlysdError)
    path = os.path.join(host.own, "actor.engine", "memory.max")
    assert (error.actor, error.path, error.value, error.errno) == (
        "engine", path, str(64 * MiB), errno.ENOENT)
    assert str(error) == (f"cgroup: cannot write '{64 * MiB}' to {path} "
                          "(for actor 'engine'): No such file or directory")


def test_a_failed_mkdir_names_the_cgroup_and_the_actor(tmp_path):
    caps = KernelCaps(str(tmp_path / "gone"))
    with pytest.raises(CgroupError) as caught:
        caps.place("engine", 201, memory_max=None, cpu_max=None)
    path = str(tmp_path / "gone" / "actor.engine")
    assert (caught.value.actor, caught.value.path, caught.value.value) == ("engine", path, None)
    assert str(caught.value) == (f"cgroup: cannot create {path} (for actor 'engine'): "
                                 "No such file or directory")


# --- oom_kills, remove, close ----------------------------------------------------------

def test_oom_kills_reads_memory_events(host, adopted):
    adopted.place("engine", 201, memory_max=64 * MiB, cpu_max=None)
    events = host.fs.own / "actor.engine" / "memory.events"
    assert adopted.oom_kills("engine") == 0
    events.write_text("low 0\nhigh 0\nmax 12\noom 2\noom_kill 3\noom_group_kill 1\n")
    assert adopted.oom_kills("engine") == 3
    events.write_text("oom_kill three\n")
    assert adopted.oom_kills("engine") == 0
    assert adopted.oom_kills("never-placed") == 0


def test_remove_waits_for_the_cgroup_to_empty(host, adopted):
    adopted.place("engine", 201, memory_max=None, cpu_max=None)
    adopted.remove("engine")                        # EBUSY: 201 is still in it
    assert (host.fs.own / "actor.engine").is_dir()
    host.fs.exit(201)
    adopted.remove("engine")
    assert not (host.fs.own / "actor.engine").exists()
    adopted.remove("engine")                        # ENOENT: already gone


def test_close_removes_every_actor_cgroup_it_made(host, adopted):
    for pid, name in enumerate(["engine", "pool.0", "pool.1"], start=201):
        adopted.place(name, pid, memory_max=None, cpu_max=None)
        host.fs.exit(pid)
    adopted.close()
    assert sorted(p.name for p in host.fs.own.iterdir() if p.is_dir()) == ["alysd"]


# --- the real host ---------------------------------------------------------------------

HOST_CAPS, HOST_WHY = KernelCaps.detect()


def test_detect_on_this_host_answers_without_raising():
    caps, why = KernelCaps.detect()
    assert (caps is None and why) or (caps is not None and why == "")


def _this_test_run() -> set[int]:
    """This process and, under pytest-xdist, its controller and sibling workers."""
    me = psutil.Process()
    run = {me.pid}
    if "PYTEST_XDIST_WORKER" in os.environ:
        controller = me.parent()
        run |= {controller.pid} | {p.pid for p in controller.children(recursive=True)}
    return run


@pytest.mark.skipif(HOST_CAPS is None, reason=f"no kernel caps on this host: {HOST_WHY}")
def test_the_kernel_oom_kills_an_actor_over_its_memory_max():
    caps = HOST_CAPS
    with open(os.path.join(caps.own, "cgroup.procs")) as f:
        present = {int(pid) for pid in f.read().split()}
    if not present <= _this_test_run():
        pytest.skip(f"processes outside this test run share {caps.own}")
    caps.adopt(present)
    hog = subprocess.Popen([sys.executable, "-c",
                            "import sys; sys.stdin.readline(); hog = b'1' * (512 << 20)"],
                           stdin=subprocess.PIPE)
    try:
        caps.place("hog", hog.pid, memory_max=64 * MiB, cpu_max=0.5)
        hog.stdin.write(b"go\n")        # allocate only once capped
        hog.stdin.flush()
        assert hog.wait(timeout=30) == -signal.SIGKILL
        assert caps.oom_kills("hog") >= 1
    finally:
        hog.kill()
        hog.wait()
        caps.close()
