"""The actor behaviour: what an actor author writes (gen_server's role in OTP).

An actor is a class; alysd runs each configured actor in its own OS process and
owns everything around the callbacks: sockets, the receive loop, heartbeats,
shutdown. Subclasses override only the hooks they need::

    from alysd import Actor

    class Echo(Actor):
        def handle_message(self, message, ctx):
            return message          # the return value is the reply to a request

Every hook may be a plain function or an ``async def``. Guarantees:

* Messages are handled one at a time, in arrival order, each to completion
  (an async handler is awaited before the next message is taken).
* ``started(ctx)`` runs before any message is handled; the actor counts as
  ready (and its supervisor starts the next sibling) only once it returns.
  If it raises, the incarnation exits as a failed start.
* ``stopped(ctx)`` runs on an orderly stop (SIGTERM), after the message in
  progress has finished. It does not run when the process is killed.
* An exception in ``handle_message`` is logged with the actor and message id and
  becomes an error reply to the requester; the actor keeps running.
* Messages come highest priority first, FIFO within a priority per sender.
* Delivery is at-least-once: when an incarnation dies, what it held is
  redelivered to the next one (``ctx.message.metadata.retry_count`` > 0), so a
  message handled just before a crash may be handled again. A message that
  kept crashing its handler (``max_retries`` times) is quarantined in the
  dead-letter queue instead.

A reload (``alysctl reload``) changes a running actor as little as it can:

* ``config_changed(new, ctx)``: an actor whose class defines it takes a new
  ``config`` table, or new ``ctx.settings`` (the node sections it ``uses``),
  without a restart. It runs between two messages, never during a handler
  (nor during ``started``), with ``ctx.settings`` already the new ones and
  ``ctx.config`` still the old one; once it returns ``ctx.config`` is
  ``new``. If it raises, the old config and settings stay (the error is
  reported to the reload). An actor without it is restarted to take them.
* ``preserve_state()`` and ``restore_state(state)``: an actor restarted by a
  reload may carry its state across. ``preserve_state()`` runs after
  ``stopped()`` on an orderly stop, and only when the supervisor asked for it
  (a reload restart, not a crash or a plain stop); it returns bytes, written
  to a private file. The next incarnation calls ``restore_state(state)`` with
  them after constructing the actor and before ``started()``; if that raises,
  the incarnation exits as a failed start.

Group commit: an actor that defines ``commit(ctx)`` is called before the
runtime acknowledges to their senders the one-way messages it handled since
the last call (receipts go in batches: when the mailbox empties, every 64
messages, 5 ms after the oldest owed) and before the loop waits idle. What
those messages changed is made durable there, once for the batch, not once
per message. If ``commit`` raises, the incarnation ends without
acknowledging them, and their senders deliver them again to the next one.
(A request is answered right after its handler: make it durable there.)

An actor that defines ``handle_batch(messages, ctx)`` (sync or async) and has
a ``[actors.NAME.batch]`` table receives one-way messages as lists of up to
``max_batch``, gathered for at most ``max_wait``; requests still go to
``handle_message``, one at a time, in their turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

if TYPE_CHECKING:
    from alysd.proc_actor import Context


class Health(msgspec.Struct, frozen=True):
    """The answer of ``health_check()``: ``healthy``, ``degraded`` or ``unhealthy``."""

    status: str
    reason: str | None = None


def Healthy() -> Health:
    return Health("healthy")


def Degraded(reason: str) -> Health:
    return Health("degraded", reason)


def Unhealthy(reason: str) -> Health:
    return Health("unhealthy", reason)


class Actor:
    """Base class of every alysd actor. Instantiated with no arguments after fork;
    configuration arrives as ``ctx.config``."""

    #: Type that incoming payloads are decoded into (any msgspec type, e.g. a
    #: Struct or a tagged union of Structs). ``Any`` gives builtins (dict, list, ...).
    message_type: ClassVar[Any] = Any

    def started(self, ctx: "Context") -> None:
        """Called once the process serves its inbox, before any message."""

    def stopped(self, ctx: "Context") -> None:
        """Called on an orderly stop, after the last message."""

    def health_check(self) -> Health:
        """Answers the supervisor's health probe (every ``health_interval``),
        between two messages. ``Degraded``/``Unhealthy`` carry a reason shown by
        ``alysctl status`` and ``/health``; an exception, a wrong return type, or
        no answer within ``health_timeout`` count as unhealthy."""
        return Healthy()

    def handle_message(self, message: Any, ctx: "Context") -> Any:
        """Handle one message; for a request the return value is the reply."""
        raise NotImplementedError(f"{type(self).__name__} does not handle messages")

    # Optional hooks: the runtime calls them only on a class that defines them
    # (see ``overrides``); these bodies document them.

    def config_changed(self, new: dict, ctx: "Context") -> None:
        """Take the new ``config`` table (and the new ``ctx.settings``) without a
        restart; raise to refuse it and keep the old one."""

    def commit(self, ctx: "Context") -> None:
        """Make durable what the messages handled since the last call changed:
        their senders are acknowledged once this returns."""

    def preserve_state(self) -> bytes:
        """The state to hand to the next incarnation, after a reload restart."""
        return b""

    def restore_state(self, state: bytes) -> None:
        """Take the state the previous incarnation preserved, before ``started()``."""


def overrides(actor: Actor, hook: str) -> bool:
    """Whether ``actor``'s class defines ``hook`` itself (or inherits it from a
    class other than ``Actor``)."""
    return getattr(type(actor), hook, None) is not getattr(Actor, hook)
