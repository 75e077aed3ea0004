"""systemd's notification protocol (``sd_notify``), spoken directly: one
datagram of ``KEY=value`` lines to ``$NOTIFY_SOCKET``.

Guarantees:

* Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
* ``Notifier.from_environment`` removes ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``
  and ``WATCHDOG_PID`` from the environment it reads, so no process forked or
  spawned afterwards (the zygote, the actors, whatever they run) inherits them
  and speaks to systemd in alysd's name.
* No call blocks and none raises: a send that fails (systemd's socket gone,
  its buffer full) is dropped and logged at warning once per kind of message,
  because alysd must outlive a hiccup of its supervisor's socket.
* The watchdog applies to this process only: ``watchdog_interval`` is None
  when ``$WATCHDOG_PID`` names another process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("alysd")

_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Tells systemd how alysd is doing; see the module docstring for guarantees."""

    def __init__(self, address: bytes | None = None, watchdog_interval: float | None = None):
        """``address``: a path, or ``b"\\0name"`` for an abstract socket; None: a no-op notifier."""
        self.enabled = address is not None
        self.watchdog_interval = watchdog_interval if self.enabled else None
        self._address = address
        self._socket: socket.socket | None = None
        self._last_status: str | None = None
        self._failed_kinds: set[str] = set()

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        """Reads NOTIFY_SOCKET (path, or '@name' abstract socket), WATCHDOG_USEC and WATCHDOG_PID
        (the watchdog applies only if WATCHDOG_PID is unset or equals os.getpid()), then REMOVES
        NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from `environ` so child processes never inherit them.
        Never raises; a Notifier with no socket is a no-op."""
        notify_socket, watchdog_usec, watchdog_pid = (environ.pop(name, None) for name in _ENV_VARS)
        address = _parse_address(notify_socket)
        interval = None
        if address is not None:
            interval = _watchdog_interval(watchdog_usec, watchdog_pid)
        return cls(address, interval)

    def ready(self, status: str) -> None:
        """The tree is up: ``READY=1`` with ``status`` and our pid as the main pid."""
        status = _one_line(status)
        if self._send("READY", f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}"):
            self._last_status = status

    def status(self, text: str) -> None:
        """``STATUS=text``, only when it differs from the last status systemd received.

        The loop may call this on every pass; only changes reach systemd.
        """
        text = _one_line(text)
        if text != self._last_status and self._send("STATUS", f"STATUS={text}"):
            self._last_status = text

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the main loop is alive."""
        self._send("WATCHDOG", "WATCHDOG=1")

    def stopping(self) -> None:
        """``STOPPING=1``: shutdown has begun."""
        self._send("STOPPING", "STOPPING=1")

    def reloading(self) -> None:
        """``RELOADING=1`` with the CLOCK_MONOTONIC timestamp systemd uses to match
        it to the reload request (``Type=notify-reload``); ``ready`` ends the reload."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING", f"RELOADING=1\nMONOTONIC_USEC={now_usec}")

    def close(self) -> None:
        """Close the socket; later calls are no-ops. Idempotent."""
        self.enabled = False
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, kind: str, message: str) -> bool:
        """Send one datagram; True when the kernel took it. Never blocks or raises."""
        if not self.enabled:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)
            return True
        except OSError as exc:
            # Once per kind: a vanished socket would otherwise log on every
            # watchdog ping and status change for the rest of the daemon's life.
            if kind not in self._failed_kinds:
                self._failed_kinds.add(kind)
                log.warning("sd_notify: could not send %s to systemd (%s); "
                            "further failures of %s are not logged", kind, exc, kind)
            return False


def _parse_address(value: str | None) -> bytes | None:
    """The socket address in ``$NOTIFY_SOCKET``, or None for none we can speak to."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])  # Linux abstract namespace
    if value.startswith("/"):
        return os.fsencode(value)
    # e.g. systemd's vsock: addresses, for services in VMs; not for alysd.
    log.warning("sd_notify: unsupported NOTIFY_SOCKET %r; systemd will not be notified", value)
    return None


def _watchdog_interval(usec: str | None, pid: str | None) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC``, as systemd advises, so one
    late ping is not yet a timeout; None when there is no watchdog for this process."""
    if pid and pid.strip() != str(os.getpid()):
        return None  # armed for another pid: something forked us instead of exec'ing us
    try:
        timeout = int(usec or 0)
    except ValueError:
        log.warning("sd_notify: WATCHDOG_USEC=%r is not a number; watchdog not pinged", usec)
        return None
    return timeout / 2 / 1_000_000 if timeout > 0 else None


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment in the datagram.
    return " ".join(text.splitlines())
