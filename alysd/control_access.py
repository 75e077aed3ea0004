"""Who may use the control socket, and which commands each caller may run.

Two checks, both made by alysd itself on credentials the kernel vouched for
(never on anything the client says):

1. **Connection** (ZeroMQ's ZAP handshake): libzmq appends the peer's
   ``SO_PEERCRED`` to the address of an ipc connection, so the ZAP request's
   Address frame reads ``"<host>:<uid>:<gid>:<pid>"``. The caller's ``Role`` is
   decided there, once per connection: ``OWNER`` for alysd's own euid and for
   root, ``GROUP`` for a member of ``[system] control_group``; anyone else is
   refused (ZAP status 400) before a single frame of theirs is read.
2. **Command**: the ZAP answer stamps ``"<uid>:<gid>:<role>"`` as the
   connection's User-Id, which libzmq attaches to every frame from it. An owner
   may run every command; a group member only the read-only ones
   (``Command.mutating`` is False).

The runtime dir's mode is the first line of defence (0700, or 0750 for the
group); these checks still hold when it is opened too wide by mistake.

Group membership is the group database's (the gid a process runs with, or
``getgrouplist`` of the uid's user: what ``id USER`` shows). A group given to
one process only as a supplementary group, without the database listing its
user, is not seen: ``SO_PEERCRED`` carries no supplementary groups.
"""

from __future__ import annotations

import enum
import grp
import logging
import os
import pwd
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from alysd.control import Command
from alysd.errors import ConfigError, ConfigIssue, PermissionDenied
from alysd.log_format import AUDIT
from alysd.log_throttle import LogThrottle

log = logging.getLogger("alysd.control")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
"""Where libzmq sends ZAP requests: the handler is bound there in the root's context."""
ZAP_DOMAIN = "alysd-control"
"""Set on the control socket: with the NULL mechanism libzmq asks ZAP only when a
domain is set."""
ZAP_VERSION = b"1.0"
GROUP_KEY = "system.control_group"
GROUPS_TTL = 60.0   # seconds a uid's groups, as the databases gave them, are used again


class Role(str, enum.Enum):
    OWNER = "owner"     # alysd's own user, or root: every command
    GROUP = "group"     # a member of control_group: read-only commands


class Peer(msgspec.Struct, frozen=True):
    """The credentials of a connected process, as the kernel gave them."""

    uid: int
    gid: int
    pid: int


class Caller(msgspec.Struct, frozen=True):
    """Who sent a control frame: decided at the connection's handshake."""

    uid: int
    gid: int
    role: Role


class AccessPolicy(msgspec.Struct, frozen=True):
    """Who may connect: the owner (alysd's euid) and root, and the members of
    ``group_gid`` when ``control_group`` names one."""

    owner_uid: int
    group_gid: int | None = None
    group_name: str | None = None


def role_of(policy: AccessPolicy, uid: int, gid: int, groups: Iterable[int]) -> Role | None:
    """The role of a process running as ``uid``/``gid`` whose user belongs to
    ``groups``; None when it may not connect at all."""
    if uid in (policy.owner_uid, 0):
        return Role.OWNER
    if policy.group_gid is not None and (gid == policy.group_gid or policy.group_gid in groups):
        return Role.GROUP
    return None


def may_run(role: Role, command: Command) -> bool:
    """Whether ``role`` may run ``command``: an owner anything, the group only
    what changes nothing."""
    return role is Role.OWNER or not command.mutating


def parse_peer(address: str) -> Peer | None:
    """The credentials in a ZAP Address of an ipc connection
    (``"<host>:<uid>:<gid>:<pid>"``); None for any other form (another
    transport, or a libzmq that does not append them)."""
    parts = address.rsplit(":", 3)
    if len(parts) != 4:
        return None
    try:
        uid, gid, pid = (int(p) for p in parts[1:])
    except ValueError:
        return None
    return Peer(uid, gid, pid)


def user_id(peer: Peer, role: Role) -> str:
    """The User-Id stamped on a connection's frames."""
    return f"{peer.uid}:{peer.gid}:{role.value}"


def parse_user_id(text: str) -> Caller | None:
    """The caller a User-Id from ``user_id`` names; None for anything else."""
    parts = text.split(":")
    if len(parts) != 3:
        return None
    try:
        return Caller(int(parts[0]), int(parts[1]), Role(parts[2]))
    except ValueError:
        return None


def connection_refusal(policy: AccessPolicy, peer: Peer) -> str:
    """Why a peer may not connect, for the log."""
    who = f"the owner (uid {policy.owner_uid}) or root"
    if policy.group_name is not None:
        who += f", nor in {GROUP_KEY} {policy.group_name!r}"
    else:
        who += f", and {GROUP_KEY} is not set"
    return f"uid {peer.uid} gid {peer.gid} pid {peer.pid} is not {who}"


def command_refusal(policy: AccessPolicy, caller: Caller | None, command: Command) -> str:
    """Why ``caller`` may not run ``command``, for the log and the caller."""
    if caller is None:
        return f"permission denied: {command.name}: the connection has no verified identity"
    return (f"permission denied: {command.name} changes the node, and uid {caller.uid} may only "
            f"run read-only commands (as a member of {GROUP_KEY} {policy.group_name!r}); "
            f"run it as uid {policy.owner_uid} or root")


def busy_with(names: Iterable[str], pending: Iterable[tuple[str, Iterable[str]]]) -> str | None:
    """What keeps one of ``names`` busy: the first ``(what, its actors)`` of
    ``pending`` that shares an actor with them, described; None when none does."""
    wanted = set(names)
    for what, actors in pending:
        shared = [name for name in actors if name in wanted]
        if shared:
            return f"actor {shared[0]!r} is busy: {what} is in progress"
    return None


# --- reading the system's user and group databases ---------------------------------------

def resolve_group(name: str | None) -> int | None:
    """The gid of ``control_group`` (None when it is not set); ``ConfigError``
    naming the key when this host has no such group."""
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError([ConfigIssue(GROUP_KEY, f"no group named {name!r} on this host")]) \
            from None


def groups_of(uid: int, gid: int) -> list[int]:
    """The groups the group database gives ``uid``'s user (with ``gid``); just
    ``[gid]`` for a uid without a passwd entry."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return [gid]
    return os.getgrouplist(name, gid)


# --- the gate: decisions, counted and logged ---------------------------------------------

class DenialLog:
    """Warning lines for refusals, at most ``burst`` per ``per`` seconds for each
    ``who`` (a uid), so that a client retrying in a loop cannot flood the
    journal. A line over the limit is not logged but counted: the next line for
    the same ``who`` says how many were left out (the exact totals are in
    ``alysctl version``)."""

    def __init__(self, logger: logging.Logger, burst: int = 5, per: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.throttle = LogThrottle(burst=burst, per=per, clock=clock)

    def refused(self, who: str, text: str) -> None:
        left_out = self.throttle.admit(who)
        if left_out is None:
            return
        more = f" ({left_out} more refusals of {who} were not logged)" if left_out else ""
        self.logger.warning("%s%s", text, more)


class GroupLookups:
    """Group database lookups on a thread of their own: a lookup may go to a
    directory service (LDAP, sssd) and take seconds, and the root's loop must
    not wait on it. ``ask`` queues one; once ``fileno()`` is readable,
    ``done()`` gives what was looked up. A failed lookup answers the uid's
    primary gid alone (the caller is then judged by that)."""

    def __init__(self, groups: Callable[[int, int], list[int]] = groups_of):
        self._groups = groups
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._asks: queue.SimpleQueue = queue.SimpleQueue()
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def fileno(self) -> int:
        return self._r.fileno()

    def ask(self, uid: int, gid: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="group-lookups", daemon=True)
            self._thread.start()
        self._asks.put((uid, gid))

    def done(self) -> list[tuple[tuple[int, int], list[int]]]:
        try:
            while self._r.recv(4096):
                pass
        except BlockingIOError:
            pass
        answers = []
        while True:
            try:
                answers.append(self._answers.get_nowait())
            except queue.Empty:
                return answers

    def close(self) -> None:
        if self._thread is not None:
            self._asks.put(None)
        self._r.close()
        self._w.close()

    def _run(self) -> None:
        # Signals are the main thread's business (its poll wakes on them).
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while (key := self._asks.get()) is not None:
            try:
                groups = self._groups(*key)
            except Exception:   # an NSS error: judged by the primary gid alone
                log.exception("looking up the groups of uid %d failed", key[0])
                groups = [key[1]]
            self._answers.put((key, groups))
            try:
                self._w.send(b"\0")
            except OSError:
                pass   # a wake byte is waiting already, or the gate closed


class ControlGate:
    """The control plane's access checks, with their counters and their log.

    ``zap_reply`` answers one ZAP request, or returns None when the answer
    waits for a group lookup (made on another thread, ``GroupLookups``: only
    for a caller that is neither the owner nor root, at most once per
    ``GROUPS_TTL`` seconds for each uid); ``looked_up`` then gives the answers
    that waited. ``authorise`` checks one command and logs each mutating one
    it lets through (an audit trail of who changed what). Nothing here blocks
    the root's loop.
    """

    def __init__(self, policy: AccessPolicy, logger: logging.Logger,
                 groups: Callable[[int, int], list[int]] = groups_of,
                 clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.logger = logger
        self.log = DenialLog(logger)
        self.lookups = GroupLookups(groups)
        self._clock = clock
        self._known: dict[tuple[int, int], tuple[float, list[int]]] = {}
        self._waiting: dict[tuple[int, int], list[tuple[Any, bytes, Peer]]] = {}
        self.refused_connections = 0
        self.refused_commands = 0

    @classmethod
    def for_group(cls, control_group: str | None, logger: logging.Logger) -> "ControlGate":
        """The gate of this process (owner: its euid); ``ConfigError`` for an
        unknown ``control_group``."""
        return cls(AccessPolicy(os.geteuid(), resolve_group(control_group), control_group),
                   logger)

    def close(self) -> None:
        self.lookups.close()

    def zap_reply(self, request: list[bytes], token: Any = None) -> list[bytes] | None:
        """The reply frames to one ZAP request (RFC 27): 200 with the caller's
        User-Id, or 400 (refused; counted and logged); None while the caller's
        groups are being looked up: ``looked_up`` hands the reply back with
        ``token`` then (libzmq gives every request the same id, so the caller
        tells them apart by its token)."""
        request_id = request[1] if len(request) > 1 else b""
        if len(request) < 6 or request[0] != ZAP_VERSION:
            return self._refuse(request_id, f"refused a control connection: malformed ZAP "
                                            f"request ({len(request)} frames)")
        peer = parse_peer(request[3].decode(errors="replace"))
        if peer is None:
            return self._refuse(request_id, "refused a control connection without peer "
                                            f"credentials (address {request[3]!r})")
        groups: Iterable[int] = ()
        # The databases are read only when the answer depends on them.
        if peer.uid not in (self.policy.owner_uid, 0) and self.policy.group_gid is not None:
            key = (peer.uid, peer.gid)
            known = self._known.get(key)
            if known is None or self._clock() - known[0] >= GROUPS_TTL:
                waiting = self._waiting.setdefault(key, [])
                if not waiting:
                    self.lookups.ask(*key)
                waiting.append((token, request_id, peer))
                return None
            groups = known[1]
        return self._answer(request_id, peer, groups)

    def looked_up(self) -> list[tuple[Any, list[bytes]]]:
        """(token, reply) for each ZAP request whose group lookup is done."""
        replies = []
        for key, groups in self.lookups.done():
            self._known[key] = (self._clock(), groups)
            for token, request_id, peer in self._waiting.pop(key, []):
                replies.append((token, self._answer(request_id, peer, groups)))
        return replies

    def _answer(self, request_id: bytes, peer: Peer, groups: Iterable[int]) -> list[bytes]:
        role = role_of(self.policy, peer.uid, peer.gid, groups)
        if role is None:
            return self._refuse(request_id, "refused a control connection: "
                                + connection_refusal(self.policy, peer), f"uid {peer.uid}")
        return [ZAP_VERSION, request_id, b"200", b"OK", user_id(peer, role).encode(), b""]

    def _refuse(self, request_id: bytes, text: str,
                who: str = "unidentified peers") -> list[bytes]:
        self.refused_connections += 1
        self.log.refused(who, text)
        return [ZAP_VERSION, request_id, b"400", b"not allowed", b"", b""]

    def authorise(self, user: str | None, command: Command,
                  target: str | None = None) -> PermissionDenied | None:
        """None when the connection stamped ``user`` may run ``command`` (on
        ``target``, for the audit line); else the error to answer (counted and
        logged)."""
        caller = parse_user_id(user) if user is not None else None
        if caller is not None and may_run(caller.role, command):
            if command.mutating:
                self.logger.info("control: uid %d (%s) runs %s%s", caller.uid,
                                 caller.role.value, command.name,
                                 f" {target}" if target is not None else "",
                                 extra={"event": AUDIT})
            return None
        self.refused_commands += 1
        why = command_refusal(self.policy, caller, command)
        self.log.refused(f"uid {caller.uid}" if caller else "unidentified peers",
                         f"refused a control command: {why}")
        return PermissionDenied(why)
