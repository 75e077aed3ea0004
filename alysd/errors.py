"""Typed errors of alysd.

Every error carries the context an operator needs to act on it: the config key
path, the actor, the message id. Errors that cross a process boundary (a handler
that raised, an unknown target) are rebuilt on the requester's side from an
``ErrorReply`` payload, so ``except UnknownActor`` works the same in an actor and
in ``alysctl``.
"""

from __future__ import annotations

from dataclasses import dataclass


class AlysdError(Exception):
    """Base of every error alysd raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration, located by its dotted key path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(AlysdError):
    """The configuration was refused; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue], source: str | None = None):
        self.issues = list(issues)
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in self.issues))


class ActorConfigError(AlysdError):
    """Raised by an actor's ``started()``: it cannot run with its configuration
    (a missing key file, a setting it needs). The incarnation exits with
    ``EX_CONFIG`` and the actor is left ``failed`` rather than restarted into
    the same error."""


class ProtocolError(AlysdError):
    """A frame or envelope that does not follow the wire protocol."""


class RuntimeDirError(AlysdError):
    """The runtime directory cannot be used (missing, unsafe, path too long)."""


class NoDaemon(AlysdError):
    """No alysd answers on the control socket at ``path``."""

    def __init__(self, path: str, why: str = "no daemon is listening"):
        self.path = path
        super().__init__(f"no alysd at {path}: {why}")


class RemoteError(AlysdError):
    """An error reported by the other side of a request.

    ``kind`` names the error class on the remote side (``UnknownActor``,
    ``HandlerError``, ...); ``actor`` and ``message_id`` say where it happened.
    """

    kind = "RemoteError"

    def __init__(self, message: str, *, actor: str | None = None,
                 message_id: int | None = None, detail: str | None = None):
        self.actor = actor
        self.message_id = message_id
        self.detail = detail
        super().__init__(message)


class UnknownActor(RemoteError):
    """The target name is neither a configured actor nor known to the daemon."""

    kind = "UnknownActor"


class HandlerError(RemoteError):
    """The receiver's handler raised; ``detail`` holds its traceback summary."""

    kind = "HandlerError"


class ActorUnavailable(RemoteError):
    """The target exists but is not running (stopped, failed, restarting)."""

    kind = "ActorUnavailable"


class ActorExited(RemoteError):
    """The target's process ended while the request was in its hands."""

    kind = "ActorExited"


class RequestTimeout(RemoteError):
    """No reply arrived within the request's timeout."""

    kind = "RequestTimeout"


class MessageTooLarge(RemoteError):
    """The encoded message exceeds the bus's size limit."""

    kind = "MessageTooLarge"


class MailboxFull(RemoteError):
    """The target's mailbox is at capacity and its backpressure policy refuses more
    (``fail`` at once, ``block`` after the sender waited out its timeout)."""

    kind = "MailboxFull"


class PoisonMessage(RemoteError):
    """The message crashed its receiver's handler ``max_retries`` times and was
    quarantined in the dead-letter queue instead of being redelivered."""

    kind = "PoisonMessage"


class PermissionDenied(RemoteError):
    """Who asked may not do this: an actor's ``permissions`` do not allow the
    message, or an alysctl user may not run the command."""

    kind = "PermissionDenied"


class CommandError(RemoteError):
    """A control command failed (bad arguments, wrong state)."""

    kind = "CommandError"


class Busy(CommandError):
    """A command that changes actors met one still busy with an earlier command
    or a reload; nothing was done, and it may be tried again once that answered."""

    kind = "Busy"


REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    cls.kind: cls
    for cls in (RemoteError, UnknownActor, HandlerError, ActorUnavailable, ActorExited,
                RequestTimeout, MessageTooLarge, MailboxFull, PoisonMessage, PermissionDenied,
                CommandError, Busy)
}


def remote_error(kind: str, message: str, **context) -> RemoteError:
    """Rebuild a typed error from its wire form; unknown kinds become ``RemoteError``."""
    return REMOTE_ERRORS.get(kind, RemoteError)(message, **context)
