"""The control plane's schema and command table (shared by alysd and alysctl).

Frames on the control ROUTER (``<rundir>/control.sock``)::

    alysctl DEALER → [CtlRequest: msgpack array]
    alysd          → [CtlReply:   msgpack array]   (same ``id``)

Each command is one entry below; the daemon implements it as
``Supervisor.cmd_<name>(args, reply)`` and may answer later (a restart answers
once the new incarnation is ready), so no command ever blocks the daemon's loop.
No command runs code or opens paths chosen by the client.

Who may connect and run what is ``alysd.control_access``: a command whose
``mutating`` is True (it changes actors, messages, dead letters or filters)
needs alysd's own user or root; the others are open to ``control_group`` too.
``restart``, ``stop``, ``start``, ``reset``, ``send`` or ``tell`` aimed at an actor an
earlier command is still changing answers ``Busy`` at once (the first four
also during a reload); ``id`` is the client's, echoed in the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from alysd.zmq_bus import ErrorInfo


class CtlRequest(msgspec.Struct, array_like=True):
    id: int
    command: str
    args: dict[str, Any] = {}


class CtlReply(msgspec.Struct, array_like=True):
    id: int
    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"\xc0")    # msgpack nil; raw so relays never re-encode
    error: ErrorInfo | None = None


@dataclass(frozen=True)
class Command:
    name: str
    mutating: bool   # changes something: the owner's and root's alone
    doc: str


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("status", False, "args {} -> list of one object per actor (name, supervisor, pid, "
            "state, restarts, uptime_s, rss_bytes, cpu_percent, mailbox_depth, health, last_exit, ...)"),
    Command("tree", False, "args {} -> the supervision tree: nested {name, kind, strategy, children}"),
    Command("restart", True, "args {name} -> stop then start an actor (or every actor under a "
            "supervisor); answers once the new incarnations are ready"),
    Command("stop", True, "args {name} -> commanded stop; the actor stays stopped until `start`"),
    Command("start", True, "args {name} -> start a stopped actor; answers once it is ready"),
    Command("reset", True, "args {name} -> close an open circuit breaker, forget backoff, and "
            "start the actor; answers once it is ready"),
    Command("send", True, "args {name, payload, timeout} -> the actor's reply to a request"),
    Command("tell", True, "args {name, payload} -> {message_id}: a one-way message to the "
            "actor, answered once handed to it (not once handled)"),
    Command("reload", True, "args {dry_run: bool} -> load the configuration again and apply what "
            "changed: {outcome: applied|unchanged|dry_run, added, removed, restarted: {actor: "
            "[keys]}, updated_live: {actor: [keys]}, supervisors, system, sections, seconds}; "
            "answers once the affected actors are healthy; CommandError when the new config is "
            "refused (nothing changed) or failed and was rolled back"),
    Command("inject", True, "args {name, fault: memory|cpu|hang, duration, mib, gil} -> "
            "{pid}: the actor suffers the fault (alysctl chaos); CommandError unless "
            "system.fault_injection is true"),
    Command("logs", False, "args {name: str|None, lines: int, after: int} -> {lines: [{seq, "
            "time, actor, pid, incarnation, line}], last}: an actor's (or every actor's, "
            "interleaved) latest output lines, or those after sequence number `after`"),
    Command("version", False, "args {} -> versions of alysd and its libraries, daemon pid"),
    Command("dead_letters", False, "args {limit: int|None} -> {letters: [dead_letters.describe() "
            "of each, newest first], count, evicted, by_reason: {reason: total ever put}}"),
    Command("dead_letters_replay", True, "args {id} -> {id, target, message_id: the id it was "
            "re-sent as}; CommandError when there is no such dead letter, UnknownActor when "
            "its target is gone"),
    Command("dead_letters_purge", True, "args {} -> {purged: how many dead letters were removed}"),
    Command("filter_add", True, "args {sender, receiver, message_type: str|None (None matches "
            "any), action: drop|delay|duplicate, rate: 0<rate<=1, delay: seconds|None "
            "(required for delay)} -> {id}"),
    Command("filter_list", False, "args {} -> {filters: [{id, sender, receiver, message_type, "
            "action, rate, delay, matched}]}"),
    Command("filter_remove", True, "args {id: int|None, all: bool} -> {removed: how many}"),
)}

request_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(CtlRequest)
reply_decoder = msgspec.msgpack.Decoder(CtlReply)
