"""The actor side of alysd: the loop that runs inside each actor process.

``run_actor(boot, cls)`` is called in a freshly forked child of the zygote. It
creates this process's own ZeroMQ context (never inherited across fork), binds
the actor's inbox, connects the system channel to the root, then:

1. sends ``Hello`` and, when the start is ordered, waits for ``Go``;
2. runs ``started(ctx)`` and sends ``Ready``;
3. serves the inbox until SIGTERM/SIGINT: messages are drained from the socket
   into the mailbox in batches and handled one at a time, in order;
4. runs ``stopped(ctx)``, closes its sockets with a bounded linger so replies
   already queued still leave, and returns the exit code.

A stop signal sets a flag; only while the loop idles in a blocking receive
does the handler also break that receive (by raising), so a message is never
abandoned half-handled. A blocking ``ctx.request`` in a sync handler
does not serve the inbox while it waits, so two actors that request each other
from their handlers wait out the timeout (use ``send``, or ``async`` handlers
and replies by message, for cycles).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from alysd import zmq_bus
from alysd.actor import Actor, Health
from alysd.actor_table import EXITED, RUNNING, ActorTable
from alysd.errors import (ActorExited, ActorUnavailable, HandlerError, MessageTooLarge,
                          ProtocolError, RequestTimeout, UnknownActor)
from alysd.exits import ExitCode
from alysd.protocol import ActorBoot, Directory, Go, Heartbeat, Hello, Ready
from alysd.system_channel import ActorLink
from alysd.runtime_dir import RuntimeDir
from alysd.zmq_bus import Envelope, Kind, Priority, RoutingKind

DEFAULT_REQUEST_TIMEOUT = 5.0
WATCH_SLICE_MS = 20         # a waiting requester notices its target's death this fast
SEND_TIMEOUT_MS = 5000      # how long a send may wait for room before it fails
DRAIN_BATCH = 256           # messages moved from the socket to the mailbox per pass
_get, _set = zmq_bus.sockopt_get, zmq_bus.sockopt_set
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)


class Context:
    """What a handler sees of the runtime: its identity, its config, the bus.

    ``send`` and ``request`` raise ``UnknownActor`` at once for a name that is
    not configured, and ``MessageTooLarge`` for an oversized message.
    """

    def __init__(self, process: "ActorProcess"):
        self._p = process
        self.name: str = process.name
        self.supervisor: str = process.boot.spec.supervisor
        self.incarnation: int = process.boot.incarnation
        self.config: dict = process.boot.spec.config
        self.log = logging.getLogger(f"alysd.actor.{self.name}")

    @property
    def message(self) -> Envelope | None:
        """The envelope being handled (ids, sender, metadata), or None."""
        return self._p.current

    def send(self, to: str, message: Any, *, priority: Priority = Priority.NORMAL) -> None:
        """Fire-and-forget ``message`` to actor ``to``."""
        self._p.send(to, Kind.TELL, message, priority=priority)

    def request(self, to: str, message: Any, *, timeout: float = DEFAULT_REQUEST_TIMEOUT,
                priority: Priority = Priority.NORMAL) -> Any:
        """Send a request and return the reply.

        Blocks in a sync handler; in an ``async`` handler returns an awaitable.
        Raises ``RequestTimeout`` when no reply comes within ``timeout`` seconds,
        and the typed remote error (``HandlerError``, ...) when the receiver
        answered with one.
        """
        if asyncio._get_running_loop() is not None:
            return self._p.request_async(to, message, timeout=timeout, priority=priority)
        return self._p.request(to, message, timeout=timeout, priority=priority)

    def publish(self, event_type: str, message: Any) -> int:
        """Send ``message`` to every actor subscribed to ``event_type``; returns how many."""
        return self._p.publish(event_type, message)


@dataclass
class Endpoints:
    """The sockets of one actor process: its own ZeroMQ context, its inbox, its
    system link. A warm spare opens them before it knows which actor it becomes."""

    zctx: zmq.Context
    inbox: zmq.Socket
    system: ActorLink


def open_endpoints(runtime_dir: str, inbox_path: str, *, max_message_bytes: int,
                   heartbeat_interval: float, zctx: zmq.Context | None = None) -> Endpoints:
    """Create this process's context, bind an inbox at ``inbox_path`` and connect
    the system channel."""
    zctx = zctx or zmq.Context(io_threads=1)
    inbox = zmq_bus.bind_router(zctx, inbox_path, max_message_bytes=max_message_bytes)
    # An idle actor wakes once per heartbeat interval, when its heartbeat is due.
    _set(inbox, zmq_bus.RCVTIMEO, max(1, int(heartbeat_interval * 1000)))
    return Endpoints(zctx, inbox, ActorLink(RuntimeDir(runtime_dir).system))


class _StopRequested(Exception):
    """Raised by the stop-signal handler to break out of an idle blocking receive."""


class ActorProcess:
    """One incarnation of one actor, from sockets up to exit code."""

    def __init__(self, boot: ActorBoot, directory: Directory, table: ActorTable,
                 actor_cls: type[Actor]):
        self.boot = boot
        self.name = boot.spec.name
        self.table = table
        self.slot = table.index[self.name]
        self.rundir = RuntimeDir(boot.runtime_dir)
        self.max_bytes = boot.max_message_bytes
        self.peers = directory.peers
        self.subscribers = directory.subscribers
        self.ids = zmq_bus.MessageIds()
        self.log = logging.getLogger(f"alysd.actor.{self.name}")
        self.actor = actor_cls()
        self.ctx = Context(self)
        self.current: Envelope | None = None
        self.mailbox: collections.deque[tuple[bytes, Envelope]] = collections.deque()
        self.handled = 0
        self.errors = 0
        self._stopping = False
        self._idle = False
        self._next_beat = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dealers: dict[str, zmq.Socket] = {}
        self._async_handler = inspect.iscoroutinefunction(self.actor.handle_message)
        if actor_cls.message_type is Any:
            self._payload_decoder = msgspec.msgpack.Decoder()
        else:
            self._payload_decoder = msgspec.msgpack.Decoder(actor_cls.message_type)

    # --- lifecycle ---------------------------------------------------------

    def run(self, endpoints: Endpoints | None = None) -> int:
        """Serve until told to stop; returns the process exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        try:
            endpoints = endpoints or open_endpoints(
                self.boot.runtime_dir, self.rundir.inbox(self.name),
                max_message_bytes=self.max_bytes, heartbeat_interval=self.boot.heartbeat_interval)
        except Exception:
            self.log.critical("cannot open its sockets:\n%s", traceback.format_exc().rstrip())
            return ExitCode.CRASH
        self.zctx, self.inbox, self.system = endpoints.zctx, endpoints.inbox, endpoints.system
        try:
            self.system.send(Hello(self.boot.incarnation, os.getpid()))
            if self.boot.wait_for_go and not self._await_go():
                return ExitCode.OK
            try:
                self._call(self.actor.started, self.ctx)
            except Exception:
                self.log.error("started() failed:\n%s", traceback.format_exc().rstrip())
                return ExitCode.START_FAILED
            health = self._health()
            self.system.send(Ready(self.boot.incarnation, health.status, health.reason))
            self._serve()
            try:
                self._call(self.actor.stopped, self.ctx)
            except Exception:
                self.log.error("stopped() failed:\n%s", traceback.format_exc().rstrip())
            return ExitCode.OK
        finally:
            self.system.close()
            self.zctx.destroy(linger=zmq_bus.CLOSE_LINGER_MS)
            if self._loop is not None:
                self._loop.close()

    def _on_stop_signal(self, signum, frame) -> None:
        self._stopping = True
        # Only an idle wait is interrupted; a handler in progress runs to completion.
        if self._idle:
            self._idle = False
            raise _StopRequested

    def _await_go(self) -> bool:
        """Wait for the root's Go (an ordered start); False if told to stop first."""
        while not self._stopping:
            try:
                msg = self._idle_receive(lambda: self.system.receive(1.0))
            except ProtocolError as exc:
                self.log.warning("ignored a malformed system message: %s", exc)
                continue
            if isinstance(msg, Go):
                return True
        return False

    def _idle_receive(self, receive):
        """Run a blocking ``receive()``; None on its timeout or on a stop signal.

        A blocking receive is ~30 us faster per message than poll-then-receive,
        which is why the loop has no poller: a stop signal breaks the wait by
        raising from its handler, and only while ``_idle`` is set.
        """
        got = None
        self._idle = True
        try:
            if not self._stopping:
                got = receive()
            # Cleared inside the try: a signal landing right here is still caught.
            self._idle = False
        except (zmq.Again, _StopRequested):
            self._idle = False
        return got

    # --- the receive loop ----------------------------------------------------

    def _serve(self) -> None:
        # Ready carried the first health report; the next one is due an interval on.
        self._next_beat = time.monotonic() + self.boot.heartbeat_interval
        mailbox = self.mailbox
        inbox = self.inbox
        while not self._stopping:
            self._heartbeat_if_due()
            # Up to one heartbeat interval (the inbox's receive timeout).
            ident = self._idle_receive(inbox.recv)
            if ident is None:
                continue
            self._accept(ident)
            # Move whatever else is already queued into the mailbox, so that its
            # depth is real. One ZMQ_EVENTS query tells a lone request (the
            # common case) from a burst; only a burst pays for the exception
            # that ends a run of non-blocking receives (~6 us).
            if _get(inbox, zmq_bus.EVENTS) & zmq_bus.POLLIN:
                for _ in range(DRAIN_BATCH):
                    try:
                        ident = inbox.recv(_NOBLOCK)
                    except zmq.Again:
                        break
                    self._accept(ident)
            while mailbox and not self._stopping:
                ident, env = mailbox.popleft()
                self._handle(ident, env)

    def _accept(self, ident: bytes) -> None:
        """Read the rest of the message whose identity frame was just received,
        validate it and put it in the mailbox.

        ZeroMQ delivers the frames of a message together, so these receives
        never wait. ``recv`` twice beats ``recv_multipart`` by ~5 us here.
        """
        data = self.inbox.recv()
        if _get(self.inbox, zmq_bus.RCVMORE):
            frames = 2
            while _get(self.inbox, zmq_bus.RCVMORE):
                self.inbox.recv()
                frames += 1
            self._reject(ident, f"expected 2 frames, got {frames}")
            return
        try:
            env = zmq_bus.decode_envelope(data, self.max_bytes)
        except ProtocolError as exc:
            self._reject(ident, str(exc))
            return
        # The sender is who the socket says it is, whatever the envelope claims.
        env.metadata.from_actor = ident.decode(errors="replace")
        self.mailbox.append((ident, env))

    def _reject(self, ident: bytes, why: str) -> None:
        self.errors += 1
        self.log.warning("rejected a frame from %r: %s", ident.decode(errors="replace"), why)

    def _handle(self, ident: bytes, env: Envelope) -> None:
        self.current = env
        table = self.table
        table.handling(self.slot, env.kind, table.sender_index(env.metadata.from_actor),
                       env.message_id)
        try:
            try:
                message = self._payload_decoder.decode(env.payload)
            except zmq_bus.DECODE_ERRORS as exc:
                raise ProtocolError(f"payload does not match {self.actor.message_type!r}: {exc}") from exc
            result = self.actor.handle_message(message, self.ctx)
            if self._async_handler:
                result = self._run_async(result)
        except Exception as exc:
            self.errors += 1
            self.log.error("handler failed on message %d from %s:\n%s", env.message_id,
                           env.metadata.from_actor, traceback.format_exc().rstrip())
            if env.kind == Kind.ASK:
                self._reply(ident, env, zmq_bus.ErrorInfo.handler_failed(
                    exc, actor=self.name, message_id=env.message_id), error=True)
            return
        finally:
            self.current = None
            table.idle(self.slot)
        self.handled += 1
        if env.kind == Kind.ASK:
            self._reply(ident, env, result)

    def _reply(self, ident: bytes, env: Envelope, result: Any, error: bool = False) -> None:
        """Answer a request; a reply that cannot travel becomes an error reply."""
        try:
            frame = zmq_bus.encode_reply(env, self.name, result, message_id=self.ids.next(),
                                         error=error)
            zmq_bus.check_size(frame, self.max_bytes, target=env.metadata.from_actor)
        except (TypeError, MessageTooLarge) as exc:
            self.errors += 1
            self.log.error("cannot reply to message %d from %s: %s", env.message_id,
                           env.metadata.from_actor, exc)
            info = zmq_bus.ErrorInfo.from_exception(
                exc if isinstance(exc, MessageTooLarge) else HandlerError(f"unencodable reply: {exc}"),
                actor=self.name, message_id=env.message_id)
            frame = zmq_bus.encode_reply(env, self.name, info, message_id=self.ids.next(),
                                         error=True)
        self.inbox.send(ident, _SNDMORE)
        self.inbox.send(frame)

    # --- system channel --------------------------------------------------------

    def _health(self) -> Health:
        try:
            health = self._call(self.actor.health_check)
        except Exception as exc:
            return Health("unhealthy", f"health_check() raised {type(exc).__name__}: {exc}")
        if not isinstance(health, Health):
            return Health("unhealthy", f"health_check() returned {health!r}")
        return health

    def _heartbeat_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:
            self._heartbeat()
            self._next_beat = now + self.boot.heartbeat_interval

    def _heartbeat(self) -> None:
        health = self._health()
        # Best effort: a root that is not keeping up is not waited for.
        self.system.send_nowait(Heartbeat(self.boot.incarnation, len(self.mailbox), self.handled,
                                          self.errors, health.status, health.reason))

    # --- sending ---------------------------------------------------------------

    def _dealer(self, to: str) -> zmq.Socket:
        sock = self._dealers.get(to)
        if sock is None:
            if to not in self.peers:
                raise UnknownActor(f"no actor named {to!r}", actor=to)
            sock = zmq_bus.connect_dealer(self.zctx, self.rundir.inbox(to), self.name)
            sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
            self._dealers[to] = sock
        return sock

    def _frame(self, to: str, kind: int, message: Any, priority: int = Priority.NORMAL,
               timeout: float | None = None,
               routing: int = RoutingKind.DIRECT) -> tuple[int, bytes]:
        mid = self.ids.next()
        frame = zmq_bus.encode_envelope(kind, mid, message, sender=self.name, target=to,
                                        priority=priority, timeout=timeout, routing=routing)
        zmq_bus.check_size(frame, self.max_bytes, target=to)
        return mid, frame

    def _push(self, sock: zmq.Socket, to: str, frame: bytes) -> None:
        try:
            sock.send(frame)
        except zmq.Again:
            raise ActorUnavailable(
                f"actor {to!r} accepted nothing for {SEND_TIMEOUT_MS} ms", actor=to) from None

    def send(self, to: str, kind: int, message: Any, *, priority: int) -> None:
        sock = self._dealer(to)
        self._push(sock, to, self._frame(to, kind, message, priority)[1])

    def publish(self, event_type: str, message: Any) -> int:
        targets = self.subscribers.get(event_type, ())
        for to in targets:
            _, frame = self._frame(to, Kind.EVENT, message, routing=RoutingKind.BROADCAST)
            self._push(self._dealer(to), to, frame)
        return len(targets)

    def request(self, to: str, message: Any, *, timeout: float, priority: int) -> Any:
        sock = self._dealer(to)
        watch = _TargetWatch(self.table, to)
        mid, frame = self._frame(to, Kind.ASK, message, priority, timeout)
        self._push(sock, to, frame)
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                raise RequestTimeout(f"no reply from {to!r} within {timeout:g}s",
                                     actor=to, message_id=mid)
            # Block in recv (not poll: ~30 us faster), waking every WATCH_SLICE to
            # see whether the target died, and to heartbeat when due: waiting for
            # a reply is not being hung.
            _set(sock, zmq_bus.RCVTIMEO, max(1, min(int(remaining * 1000), WATCH_SLICE_MS)))
            try:
                data = sock.recv()
            except zmq.Again:
                watch.check(mid)
                self._heartbeat_if_due()
                continue
            reply = self._match_reply(data, mid)
            if reply is not None:
                return reply.value

    async def request_async(self, to: str, message: Any, *, timeout: float,
                            priority: int) -> Any:
        sock = zmq.asyncio.Socket.from_socket(self._dealer(to))
        watch = _TargetWatch(self.table, to)
        mid, frame = self._frame(to, Kind.ASK, message, priority, timeout)
        self._push(sock, to, frame)
        deadline = time.monotonic() + timeout
        receiving = asyncio.ensure_future(sock.recv())
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimeout(f"no reply from {to!r} within {timeout:g}s",
                                         actor=to, message_id=mid)
                done, _ = await asyncio.wait({receiving}, timeout=min(remaining, WATCH_SLICE_MS / 1000))
                if not done:
                    watch.check(mid)
                    continue
                reply = self._match_reply(receiving.result(), mid)
                if reply is not None:
                    return reply.value
                receiving = asyncio.ensure_future(sock.recv())
        finally:
            receiving.cancel()

    def _match_reply(self, data: bytes, mid: int) -> "_Reply | None":
        """The decoded reply if ``data`` answers ``mid``; None for a stale reply.

        Raises the remote error when the answer is an error.
        """
        try:
            env = zmq_bus.decode_envelope(data, self.max_bytes)
        except ProtocolError as exc:
            self._reject(b"reply", str(exc))
            return None
        if env.correlation_id != mid:
            return None  # the late answer to an earlier request that timed out
        if env.kind == Kind.ERROR:
            raise zmq_bus.decode_error(env.payload)
        return _Reply(zmq_bus.decode_any(env.payload))

    # --- sync/async hooks ------------------------------------------------------

    def _call(self, fn, *args):
        result = fn(*args)
        if inspect.isawaitable(result):
            result = self._run_async(result)
        return result

    def _run_async(self, awaitable):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)


class _TargetWatch:
    """Tells a waiting requester that the incarnation its request went to is gone.

    The root records every incarnation's start and end in the shared actor
    table; a request sent while the target was down goes to the next
    incarnation, so the watch latches onto that one when it appears.
    """

    def __init__(self, table: ActorTable, target: str):
        self.table, self.target = table, target
        incarnation, state, _, _ = table.liveness(target)
        self.incarnation = incarnation if state == RUNNING else None

    def check(self, message_id: int) -> None:
        """Raise ``ActorExited`` if the incarnation holding the request has ended."""
        incarnation, state, reason, detail = self.table.liveness(self.target)
        if self.incarnation is None:
            if state == RUNNING:
                self.incarnation = incarnation
            return
        if incarnation != self.incarnation or state == EXITED:
            how = reason + (f" ({detail})" if reason in ("exit_code", "signal") else "")
            raise ActorExited(f"actor {self.target!r} exited while handling request "
                              f"{message_id}: {how}", actor=self.target, message_id=message_id)


class _Reply:
    """Wraps a decoded reply so that a ``None`` reply is told apart from 'no match'."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def run_actor(boot: ActorBoot, directory: Directory, table: ActorTable, actor_cls: type[Actor],
              endpoints: Endpoints | None = None) -> int:
    """Run one incarnation in this (freshly forked) process; returns its exit code.

    ``endpoints`` are this process's own sockets when a warm spare opened them
    ahead of time (never a context inherited across fork).
    """
    log = logging.getLogger(f"alysd.actor.{boot.spec.name}")
    try:
        return ActorProcess(boot, directory, table, actor_cls).run(endpoints)
    except Exception:
        log.critical("crashed:\n%s", traceback.format_exc().rstrip())
        return ExitCode.CRASH
