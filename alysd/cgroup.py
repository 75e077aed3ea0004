"""Kernel-enforced caps for actors: a cgroup v2 backstop under alysd's delegated cgroup.

The psutil sampler (``alysd.sampler``, ``alysd.limits``) is the enforcement
path of ``memory_limit`` and ``cpu_limit`` everywhere, with or without cgroups:
it decides when an actor is over a limit, kills it and records why. Where alysd
runs in a cgroup v2 it was delegated (systemd's ``Delegate=cpu memory``), and
only there, ``KernelCaps`` adds a backstop the kernel enforces between two
readings:

* alysd's own processes move to the leaf ``<own>/alysd`` and every actor gets a
  cgroup of its own, ``<own>/actor.<name>``, which its children inherit, so the
  cgroup holds the actor's whole process tree, as the sampler counts it;
* ``memory.max``: when the actor's cgroup is charged more than the cap and the
  kernel cannot reclaim enough, the kernel OOM-kills it; ``memory.oom.group``
  makes that kill take the whole actor, as the sampler's SIGKILL to its process
  group does, and ``oom_kills`` lets the supervisor record it as
  ``memory_limit``. A capped actor gets no swap, so it cannot page out instead
  of being capped. The kernel charges memory an actor touches after ``place``
  moved it there (earlier charges stay where they were made), and it counts
  what it cannot reclaim (anonymous memory, kernel memory, tmpfs), which is
  close to but not the same as RSS. It also kills at once, where the sampler
  waits for several readings in a row: what cap to pass, the limit itself or
  the limit with headroom, is the caller's choice;
* ``cpu.max`` throttles the actor to its cores in every 100 ms period. It never
  kills: a CPU hog is still the sampler's to judge.

``KernelCaps.detect`` says whether this host allows it and, if not, why (it
never raises). Any other refusal by the kernel raises ``CgroupError`` naming
the file, the value and the actor.
"""

from __future__ import annotations

import errno
import os
import re
import string
from collections.abc import Iterable

from alysd.errors import AlysdError

CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000     # the smallest quota the kernel accepts
ALYSD_LEAF = "alysd"
ACTOR_PREFIX = "actor."
NEEDED_CONTROLLERS = ("memory", "cpu")

_SAFE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-.")


class CgroupError(AlysdError):
    """The kernel refused a cgroup operation. ``path`` is the file or directory,
    ``value`` what was written (None for a mkdir or rmdir), ``actor`` whom it was
    for (None for alysd's own processes), ``errno`` and ``reason`` the kernel's
    answer."""

    def __init__(self, doing: str, path: str, error: OSError, *, actor: str | None = None,
                 value: str | None = None, hint: str = ""):
        self.path = path
        self.actor = actor
        self.value = value
        self.errno = error.errno
        self.reason = error.strerror or str(error)
        whose = f"actor {actor!r}" if actor is not None else "alysd's own processes"
        super().__init__(f"cgroup: cannot {doing} {path} (for {whose}): {self.reason}{hint}")


class KernelCaps:
    """Per-actor cgroup v2 caps under alysd's own delegated cgroup ``own`` (a
    directory of the cgroup2 mount)."""

    def __init__(self, own: str):
        self.own = own
        self._made: set[str] = set()    # actors whose cgroups this made (or found and reused)

    @classmethod
    def detect(cls, *, proc_root: str = "/proc",
               cgroup_root: str | None = None) -> tuple[KernelCaps | None, str]:
        """``(caps, "")`` when alysd can set caps, else ``(None, why not)``.

        Finds this process's cgroup v2 (the ``0::<path>`` line of
        ``<proc_root>/self/cgroup``) under the cgroup2 mount of
        ``<proc_root>/self/mountinfo`` (``/sys/fs/cgroup``, or e.g.
        ``/sys/fs/cgroup/unified`` on hybrid hosts); ``cgroup_root`` stands for
        that mount point when given. Requires the memory and cpu controllers in
        it and write access to it, its ``cgroup.procs`` and its
        ``cgroup.subtree_control`` (the kernel's definition of a delegated
        cgroup). Reads only; never raises.
        """
        try:
            with open(os.path.join(proc_root, "self", "cgroup")) as f:
                unified = [line[3:].rstrip("\n") for line in f if line.startswith("0::")]
            if not unified:
                return None, "this process is in no cgroup v2 (no '0::' line in /proc/self/cgroup)"
            if cgroup_root is not None:
                own = os.path.normpath(os.path.join(cgroup_root, unified[0].lstrip("/")))
            else:
                with open(os.path.join(proc_root, "self", "mountinfo")) as f:
                    own, why = _find_own_cgroup(f, unified[0])
                if own is None:
                    return None, why
            with open(os.path.join(own, "cgroup.controllers")) as f:
                available = f.read().split()
        except (OSError, ValueError, IndexError) as exc:
            return None, f"cannot read the cgroup setup: {exc}"
        for controller in NEEDED_CONTROLLERS:
            if controller not in available:
                return None, f"the {controller} controller is not available in {own}"
        for path in (own, os.path.join(own, "cgroup.procs"),
                     os.path.join(own, "cgroup.subtree_control")):
            if not os.access(path, os.W_OK):
                return None, (f"{own} is not writable (no delegated cgroup; run under "
                              "systemd with Delegate=cpu memory)")
        return cls(own), ""

    def adopt(self, pids: Iterable[int]) -> None:
        """Move alysd's own processes (root, zygote) into the leaf ``<own>/alysd``,
        then enable the memory and cpu controllers for ``own``'s children.

        The order is the kernel's: a cgroup that holds processes cannot enable
        controllers for its children. Every process left in ``own`` blocks it,
        so pass all of alysd's. Raises ``CgroupError``.
        """
        leaf = os.path.join(self.own, ALYSD_LEAF)
        _make_dir(leaf, None)
        for pid in pids:
            _write(os.path.join(leaf, "cgroup.procs"), str(pid), None)
        _write(os.path.join(self.own, "cgroup.subtree_control"),
               " ".join(f"+{c}" for c in NEEDED_CONTROLLERS), None,
               busy_hint=f" (processes alysd did not adopt remain in {self.own})")

    def place(self, actor: str, pid: int, *, memory_max: int | None,
              cpu_max: float | None) -> None:
        """Cap ``actor`` (``memory_max`` bytes, ``cpu_max`` cores; None: no cap)
        and move ``pid`` into its cgroup, made on first use (one left by an
        earlier run is reused). The caps are written before the move, so the
        process is never uncapped in there. Raises ``CgroupError``.
        """
        directory = self._directory(actor)
        if actor not in self._made:
            _make_dir(directory, actor)
            self._made.add(actor)
        self._set(actor, "memory.max", "max" if memory_max is None else str(memory_max))
        # Without swap accounting (no memory.swap.max) there is no swap to turn off.
        self._set(actor, "memory.swap.max", "max" if memory_max is None else "0", optional=True)
        self._set(actor, "memory.oom.group", "1", optional=True)    # since Linux 4.19
        if cpu_max is None:
            cpu = "max"
        else:
            # A quota under the kernel's minimum is refused; rounding up to it
            # loosens only a cap far below any real actor's need.
            quota = max(MIN_CPU_QUOTA_US, round(cpu_max * CPU_PERIOD_US))
            cpu = f"{quota} {CPU_PERIOD_US}"
        self._set(actor, "cpu.max", cpu)
        self._set(actor, "cgroup.procs", str(pid))

    def oom_kills(self, actor: str) -> int:
        """How many processes the kernel OOM-killed in ``actor``'s cgroup
        (``oom_kill`` of its ``memory.events``); 0 when unknown."""
        try:
            with open(os.path.join(self._directory(actor), "memory.events")) as f:
                counts = dict(line.split() for line in f if line.strip())
            return int(counts.get("oom_kill", 0))
        except (OSError, ValueError):
            return 0

    def remove(self, actor: str) -> None:
        """Remove ``actor``'s cgroup. One that still holds a process (EBUSY) is
        kept for a later ``remove`` or ``close``; one already gone is forgotten.
        Raises ``CgroupError`` on any other refusal."""
        directory = self._directory(actor)
        try:
            os.rmdir(directory)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return
            if exc.errno != errno.ENOENT:
                raise CgroupError("remove", directory, exc, actor=actor) from exc
        self._made.discard(actor)

    def close(self) -> None:
        """Remove every actor cgroup this made (``remove`` for each; all are
        tried before the first error is raised). alysd's own leaf stays: alysd
        is still in it, and systemd removes it with the unit."""
        failed: CgroupError | None = None
        for actor in sorted(self._made):
            try:
                self.remove(actor)
            except CgroupError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def _directory(self, actor: str) -> str:
        return os.path.join(self.own, _cgroup_name(actor))

    def _set(self, actor: str, file: str, value: str, *, optional: bool = False) -> None:
        path = os.path.join(self._directory(actor), file)
        if optional and not os.path.exists(path):
            return
        _write(path, value, actor)


def _cgroup_name(actor: str) -> str:
    """``actor.`` + the name, every byte outside ``[A-Za-z0-9_.-]`` as ``%XX``:
    distinct names never share a directory, and no name leaves ``own`` or
    meets alysd's leaf (``pool.3`` is ``actor.pool.3``, ``a/b`` is ``actor.a%2Fb``)."""
    return ACTOR_PREFIX + "".join(
        chr(byte) if chr(byte) in _SAFE_NAME_CHARS else f"%{byte:02X}"
        for byte in actor.encode())


def _find_own_cgroup(mountinfo: Iterable[str], cgroup: str) -> tuple[str | None, str]:
    """The directory of cgroup v2 path ``cgroup`` under a cgroup2 mount listed in
    ``mountinfo``, or (None, why not)."""
    mounted = False
    for line in mountinfo:
        fields = line.split()
        if "-" not in fields or fields[fields.index("-") + 1] != "cgroup2":
            continue
        mounted = True
        # A mount may show a subtree only (its root field); the cgroup must lie in it.
        relative = os.path.relpath(cgroup, _unescape(fields[3]))
        if relative != ".." and not relative.startswith("../"):
            return os.path.normpath(os.path.join(_unescape(fields[4]), relative)), ""
    if not mounted:
        return None, "cgroup v2 is not mounted"
    return None, f"this process's cgroup {cgroup} is outside every cgroup v2 mount"


def _unescape(field: str) -> str:
    """A mountinfo path field: the kernel writes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _make_dir(path: str, actor: str | None) -> None:
    """mkdir a cgroup (the kernel fills it with its interface files); one already there is reused."""
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise CgroupError("create", path, exc, actor=actor) from exc


def _write(path: str, value: str, actor: str | None, *, busy_hint: str = "") -> None:
    """Write ``value`` to a cgroup interface file in one write(), as the kernel
    takes each write as one command."""
    try:
        # cgroupfs ignores O_APPEND; on a plain file standing in for one, it keeps
        # every write visible instead of overwriting the last.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:
        hint = busy_hint if exc.errno == errno.EBUSY else ""
        raise CgroupError(f"write {value!r} to", path, exc, actor=actor, value=value,
                          hint=hint) from exc
