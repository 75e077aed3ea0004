"""The system channel between the root and each actor: a unix SOCK_SEQPACKET
connection, not ZeroMQ.

Why not ZeroMQ: every ZeroMQ connection costs the process that holds it ~27 KiB
of pipe buffers; with one connection per actor the root would grow by 27 MiB
per 1000 actors. A kernel socket's buffers are not the root's memory.

Why SEQPACKET: message boundaries are kept (one ``send`` is one message), the
connection is reliable and ordered, and on ``accept`` the kernel tells us the
peer's pid and uid (``SO_PEERCRED``): the root knows which incarnation is
talking without trusting anything it says, and refuses other users.

The messages are the tagged Structs of ``alysd.protocol``.
"""

from __future__ import annotations

import os
import socket
import struct

from alysd.errors import ProtocolError
from alysd.protocol import system_decoder, system_encoder
from alysd.zmq_bus import DECODE_ERRORS

MAX_MESSAGE = 1 << 16
_CREDS = struct.Struct("3i")


def listen(path: str) -> socket.socket:
    """The root's listening socket at ``path`` (a stale file there is replaced)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(path)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Connection:
    """The root's end of one actor's connection, identified by the kernel."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pid, self.uid, self.gid = _CREDS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))
        self.early: list = []   # messages received before the zygote reported this pid

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg) -> None:
        """Send one message; a peer that stopped reading is not waited for."""
        try:
            self.sock.send(system_encoder.encode(msg), socket.MSG_DONTWAIT)
        except OSError:
            pass  # it is dying or gone; its exit arrives from the zygote

    def receive(self) -> list:
        """Every message waiting; ``None`` marks end of file. Raises ``ProtocolError``
        (after returning nothing) for a message that does not decode."""
        out: list = []
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return out
            except OSError:
                data = b""
            if not data:
                out.append(None)
                return out
            try:
                out.append(system_decoder.decode(data))
            except DECODE_ERRORS as exc:
                raise ProtocolError(f"undecodable system message: {exc}") from exc

    def close(self) -> None:
        self.sock.close()


def accept_all(listener: socket.socket) -> list[Connection]:
    """Accept every pending connection."""
    out = []
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return out
        sock.setblocking(False)
        out.append(Connection(sock))


class ActorLink:
    """The actor's end: blocking sends for lifecycle messages, best effort for heartbeats."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)

    def send(self, msg) -> None:
        self.sock.send(system_encoder.encode(msg))

    def send_nowait(self, msg) -> bool:
        """Send unless the root is not keeping up; False when the message was dropped."""
        try:
            self.sock.send(system_encoder.encode(msg), socket.MSG_DONTWAIT)
            return True
        except BlockingIOError:
            return False

    def receive(self, timeout: float):
        """One message within ``timeout`` seconds, else None; ``ConnectionError`` at EOF."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(MAX_MESSAGE)
        except TimeoutError:
            return None
        if not data:
            raise ConnectionError("the root closed the system channel")
        try:
            return system_decoder.decode(data)
        except DECODE_ERRORS as exc:
            raise ProtocolError(f"undecodable system message: {exc}") from exc

    def close(self) -> None:
        self.sock.close()
