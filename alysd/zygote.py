"""The fork server: preloads actor code once, then forks one process per actor.

A fresh interpreter needs ~40 ms to import zmq and msgspec; ``os.fork`` of a
process that already has them is ~1-2 ms. The zygote is forked from the root
*before* the root creates any ZeroMQ context or thread (a forked context is
unusable, and forking a threaded process is unsafe), imports every configured
actor class, freezes the GC so that forked children share its pages, and then
waits for ``Spawn`` requests on a SOCK_SEQPACKET socketpair.

Actor processes are the zygote's children, so the zygote reaps them (on
SIGCHLD, never on a timer) and reports each ``Exited`` with its raw status. It is
a child subreaper too, so actors' orphaned descendants are reaped here rather
than by PID 1.

A reload reaches the zygote as ``CheckImports`` (the new actor classes are
imported here first; they stay loaded, so later forks share them) and
``Topology`` (the directory and actor-table slots every later fork inherits;
warm spares forked before it are replaced, since they hold the old ones).

Death chain: the zygote dies with the root (PR_SET_PDEATHSIG) and every actor
dies with the zygote, so SIGKILL of alysd leaves nothing behind. The flip side,
chosen on purpose: a zygote crash takes every actor with it, and the root
treats it as its own failure (it exits non-zero and lets systemd restart the
service) rather than forking a new zygote from a process that owns a ZeroMQ
context.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback

import msgspec


from alysd import zmq_bus
from alysd.actor_table import ActorTable
from alysd.config import Config, check_imports, import_actor_class
from alysd.exits import ExitCode
from alysd.process import become_subreaper, die_with_parent, reap_exited, set_title
from alysd.runtime_dir import RuntimeDir
from alysd.protocol import (SYSTEM_MAIL, ActorBoot, CheckImports, Directory, Exited, ImportsChecked,
                            Preloaded, Spawn, Spawned, SpawnFailed, Topology, system_encoder,
                            zygote_decoder)

_MAX_DATAGRAM = 1 << 22
WARM_SPARES = 1
SPARE_REFILL_DELAY = 0.03   # seconds after a spare is used before the next one is forked
log = logging.getLogger("alysd.zygote")
# The signals the zygote handles (through its wakeup fd); it ignores the others.
_HANDLED = (signal.SIGCHLD, signal.SIGTERM)


def _output_to(out_r: int, out_w: int) -> None:
    """In a forked child: stdout and stderr onto the output pipe, line by line
    (so the last lines before a crash are not left in a buffer)."""
    os.close(out_r)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.close(out_w)
    sys.stdout.reconfigure(line_buffering=True)


class ZygoteHandle:
    """The root's end of the zygote channel."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.send(system_encoder.encode(msg))
        finally:
            self.sock.setblocking(False)

    def receive(self) -> list:
        """Every message waiting on the channel, as (message, fds passed with it);
        ``(None, [])`` marks end of file."""
        out = []
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, _MAX_DATAGRAM, 4)
            except BlockingIOError:
                return out
            if not data:
                out.append((None, []))
                return out
            out.append((zygote_decoder.decode(data), fds))

    def close(self) -> None:
        self.sock.close()


def start_zygote(config: Config, runtime_dir: str, table: ActorTable) -> ZygoteHandle:
    """Fork the zygote. Call before this process creates a ZeroMQ context or thread."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    root_pid = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = ExitCode.CRASH
        try:
            ours.close()
            code = _Zygote(theirs, root_pid, config, runtime_dir, table).run()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    theirs.close()
    return ZygoteHandle(pid, ours)


class _Zygote:
    def __init__(self, sock: socket.socket, root_pid: int, config: Config, runtime_dir: str,
                 table: ActorTable):
        self.sock = sock
        self.table = table
        self.root_pid = root_pid
        self.config = config
        self.runtime_dir = runtime_dir
        self.children: dict[int, tuple[str, int]] = {}
        # (pid, write end of its boot pipe, read end of its output pipe)
        self.spares: list[tuple[int, int, int]] = []
        self.refill_at: float | None = None         # when to fork the next warm spare

    def run(self) -> int:
        die_with_parent(self.root_pid)
        os.setpgid(0, 0)
        become_subreaper()
        set_title("alysd: zygote")
        keep = self.sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 16)
        # Ctrl-C reaches the whole foreground group; the root orders the stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # Inherited by every actor until it installs its own handler: system mail
        # that arrives before then must not kill it (SIGUSR1's default action).
        signal.signal(SYSTEM_MAIL, signal.SIG_IGN)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        # The handlers do nothing: the wakeup fd carries the signal number to the loop.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)

        import alysd.proc_actor  # noqa: F401  (preload: children must not pay the import)
        issues = check_imports(self.config)
        self.directory = Directory.from_config(self.config)
        # Collect once, then freeze: forked children never scan (and so never
        # copy-on-write) the zygote's objects during garbage collection.
        gc.collect()
        gc.freeze()
        self.sock.send(system_encoder.encode(Preloaded([(i.path, i.message) for i in issues])))
        if not issues:
            self._top_up_spares()

        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while True:
            timeout = None
            if self.refill_at is not None:
                timeout = max(0.0, self.refill_at - time.monotonic()) * 1000
            for fd, _ in poller.poll(timeout):
                if fd == self.wake_r.fileno():
                    if signal.SIGTERM in self._drain_wakeups():
                        return self._exit()
                    self._reap()
                elif not self._serve_one():
                    return self._exit()
            if self.refill_at is not None and time.monotonic() >= self.refill_at:
                self.refill_at = None
                self._top_up_spares()

    def _exit(self) -> int:
        """Leave without an orphan: spares are killed and reaped here (the actors are
        the root's to stop; any still alive die with us through PDEATHSIG)."""
        for pid, fd, out in self.spares:
            os.close(fd)
            os.close(out)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.spares = []
        return ExitCode.OK

    def _serve_one(self) -> bool:
        data = self.sock.recv(_MAX_DATAGRAM)
        if not data:
            return False  # the root is gone; our children follow us via PDEATHSIG
        try:
            msg = zygote_decoder.decode(data)
        except zmq_bus.DECODE_ERRORS as exc:
            log.error("ignored a malformed request from the root: %s", exc)
            return True
        if isinstance(msg, Spawn):
            self._spawn(msg)
        elif isinstance(msg, Topology):
            self._use_topology(msg)
        elif isinstance(msg, CheckImports):
            self._tell(ImportsChecked(msg.request, self._check_imports(msg.class_paths)))
        return True

    def _use_topology(self, topology: Topology) -> None:
        if topology.generation < self.directory.generation:
            return
        self.table.adopt(topology.slots)
        self.directory = self.directory.with_topology(topology)
        # A spare holds the directory and slots of its fork: it leaves (its boot
        # pipe closes) and a new one inherits the new ones.
        for _, fd, out in self.spares:
            os.close(fd)
            os.close(out)
        self.spares = []
        self._top_up_spares()

    def _check_imports(self, class_paths: tuple[str, ...]) -> list[tuple[str, str]]:
        issues = []
        for class_path in class_paths:
            try:
                import_actor_class(class_path)
            except Exception as exc:  # importing runs arbitrary module code
                issues.append((class_path, f"{type(exc).__name__}: {exc}"))
        # What was imported is shared by later forks, like the preloaded classes.
        gc.collect()
        gc.freeze()
        return issues

    def _spawn(self, msg: Spawn) -> None:
        boot = msg.boot
        # A spare saves latency, and only an incarnation that starts at once needs
        # that; one forked ahead to wait for its turn forks directly, which costs
        # less CPU in total (no rehearsal) and keeps a big ordered start fast.
        forked = None if boot.wait_for_go else self._assign_spare(boot)
        if forked is None:
            try:
                forked = self._fork(self._become_actor, boot, None)
            except OSError as exc:
                self._tell(SpawnFailed(boot.spec.name, boot.incarnation, f"fork failed: {exc}"))
                return
        pid, output = forked
        self.children[pid] = (boot.spec.name, boot.incarnation)
        # The read end of its stdout and stderr goes to the root, which reads them.
        try:
            self._tell(Spawned(boot.spec.name, boot.incarnation, pid), fds=[output])
        finally:
            os.close(output)
        if len(self.spares) < WARM_SPARES and self.refill_at is None:
            # Not now: forking the next spare would compete for the CPU with the
            # incarnation that is starting (p90 of a restart 5 ms -> 2.5 ms here).
            self.refill_at = time.monotonic() + SPARE_REFILL_DELAY

    def _fork(self, body, *args) -> tuple[int, int]:
        """Fork a child that runs ``body(*args)`` and exits with its result, its
        stdout and stderr on a pipe; (its pid, the pipe's read end)."""
        sys.stdout.flush()
        sys.stderr.flush()
        zygote_pid = os.getpid()
        out_r, out_w = os.pipe()
        # Until the child has dropped the zygote's handlers, a signal sent to it
        # (a stop of the actor it becomes) would run them and write to the
        # zygote's wakeup fd, and the zygote would take it for its own (a
        # SIGTERM meant for the new actor stopped the zygote). Held back until
        # then, it has the child's own effect.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(out_r)
            os.close(out_w)
            raise
        if pid == 0:
            code = ExitCode.CRASH
            try:
                _output_to(out_r, out_w)
                self._after_fork(zygote_pid)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                code = body(*args)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(out_w)
        try:
            os.setpgid(pid, pid)  # also done in the child: whichever runs first wins the race
        except OSError:
            pass
        return pid, out_r

    def _after_fork(self, zygote_pid: int) -> None:
        """Child hygiene: own process group, die with the zygote, none of its fds or handlers."""
        os.setpgid(0, 0)
        die_with_parent(zygote_pid)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        self.sock.close()
        self.wake_r.close()
        self.wake_w.close()
        for _, fd, out in self.spares:
            os.close(fd)
            os.close(out)
        self.spares = []

    # --- warm spares -------------------------------------------------------------
    # A spare is forked ahead of need and has already paid for the fork and for
    # its ZeroMQ context (IO thread included); it waits on a pipe for the boot of
    # the incarnation it becomes. That takes ~2 ms off every start and restart.

    def _top_up_spares(self) -> None:
        while len(self.spares) < WARM_SPARES:
            r, w = os.pipe()
            try:
                pid, out = self._fork(self._become_spare, r, w)
            except OSError as exc:
                os.close(r)
                os.close(w)
                log.warning("cannot fork a warm spare: %s", exc)
                return
            os.close(r)
            self.spares.append((pid, w, out))

    def _assign_spare(self, boot: ActorBoot) -> tuple[int, int] | None:
        """Hand ``boot`` to a waiting spare; (its pid, the read end of its output),
        or None when none is usable."""
        while self.spares:
            pid, fd, out = self.spares.pop(0)
            data = system_encoder.encode(boot)
            try:
                os.write(fd, len(data).to_bytes(4, "big") + data)
                return pid, out
            except OSError:
                os.close(out)
                continue  # that spare died; _reap() collects it
            finally:
                os.close(fd)
        return None

    def _become_spare(self, r: int, w: int) -> int:
        """Open an actor's sockets (context and threads, an inbox bound at a
        temporary path, the system link) before knowing which actor this becomes;
        then wait for the boot, move the inbox to its real path, and run."""
        os.close(w)
        set_title("alysd: zygote spare")
        from alysd.proc_actor import open_endpoints
        system = self.config.system
        temporary = os.path.join(self.runtime_dir, f".spare-{os.getpid()}")
        endpoints = open_endpoints(self.runtime_dir, temporary,
                                   max_message_bytes=system.max_message_bytes,
                                   heartbeat_interval=system.heartbeat_interval)
        data = _read_message(r)
        os.close(r)
        if data is None:
            os.unlink(temporary)
            return ExitCode.OK  # never used: the zygote is going away
        boot = msgspec.msgpack.decode(data, type=ActorBoot)
        # rename() swaps the socket file in atomically: peers reconnecting to the
        # actor's path reach this process from now on.
        os.rename(temporary, RuntimeDir(boot.runtime_dir).inbox(boot.spec.name))
        return self._become_actor(boot, endpoints)

    def _become_actor(self, boot: ActorBoot, endpoints) -> int:
        """Runs in the forked child; never returns into the zygote's loop."""
        set_title(f"alysd: {boot.spec.supervisor}/{boot.spec.name}")
        try:
            cls = import_actor_class(boot.spec.class_path)
        except Exception as exc:
            log.error("actor %s: cannot load %s: %s", boot.spec.name, boot.spec.class_path, exc)
            return ExitCode.CONFIG
        from alysd.proc_actor import run_actor
        return run_actor(boot, self.directory, self.table, cls, endpoints)

    def _tell(self, msg, fds: list[int] = ()) -> None:
        if fds:
            socket.send_fds(self.sock, [system_encoder.encode(msg)], fds)
        else:
            self.sock.send(system_encoder.encode(msg))

    def _drain_wakeups(self) -> set[int]:
        """The signal numbers that woke us."""
        seen: set[int] = set()
        try:
            while data := self.wake_r.recv(512):
                seen.update(data)
        except BlockingIOError:
            pass
        return seen

    def _reap(self) -> None:
        for pid, status in reap_exited():
            if self.children.pop(pid, None) is not None:
                self._tell(Exited(pid, status))
                continue
            spare = next((entry for entry in self.spares if entry[0] == pid), None)
            if spare is not None:
                self.spares.remove(spare)
                os.close(spare[1])
                os.close(spare[2])
                log.warning("a warm spare (pid %d) died before use (status %d)", pid, status)


def _read_message(fd: int) -> bytes | None:
    """Read one length-prefixed message from a pipe; None at end of file."""
    buf = b""
    while True:
        need = 4 if len(buf) < 4 else 4 + int.from_bytes(buf[:4], "big")
        if len(buf) >= need and len(buf) >= 4:
            return buf[4:need]
        chunk = os.read(fd, max(need - len(buf), 4096))
        if not chunk:
            return None
        buf += chunk

