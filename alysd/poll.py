"""One poller for plain file descriptors and ZeroMQ sockets, built on epoll.

The root watches one system connection per actor; ``zmq_poll`` rebuilds its
item array on every call, which is O(actors) per loop pass, so the root polls
with epoll and brings its few ZeroMQ sockets in through their ``ZMQ_FD``.

That descriptor is edge-triggered in spirit: it signals that ``ZMQ_EVENTS``
may have changed, and a send or receive on the socket can consume the signal
without the socket being drained. So before every wait the socket's
``ZMQ_EVENTS`` is read, and a socket with input pending is reported ready
without waiting; a caller must drain every socket it is given.
"""

from __future__ import annotations

import select

import zmq

from alysd.zmq_bus import EVENTS, POLLIN, sockopt_get


class EventPoller:
    """epoll over plain fds and ZeroMQ sockets (level-triggered for both)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._zmq: dict[int, zmq.Socket] = {}

    def add_fd(self, fd: int) -> None:
        self._epoll.register(fd, select.EPOLLIN)

    def remove_fd(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (FileNotFoundError, ValueError):
            pass  # already closed

    def add_zmq(self, sock: zmq.Socket) -> None:
        fd = sock.getsockopt(zmq.FD)
        self._zmq[fd] = sock
        self._epoll.register(fd, select.EPOLLIN)

    def remove_zmq(self, sock: zmq.Socket) -> None:
        fd = sock.getsockopt(zmq.FD)
        self._zmq.pop(fd, None)
        self.remove_fd(fd)

    def poll(self, timeout: float) -> tuple[set[int], list[zmq.Socket]]:
        """Wait up to ``timeout`` seconds; returns (ready plain fds, ready ZeroMQ sockets)."""
        ready = [s for s in self._zmq.values() if sockopt_get(s, EVENTS) & POLLIN]
        events = self._epoll.poll(0 if ready else timeout)
        fds = set()
        for fd, _ in events:
            sock = self._zmq.get(fd)
            if sock is None:
                fds.add(fd)
            elif sock not in ready and sockopt_get(sock, EVENTS) & POLLIN:
                ready.append(sock)
        return fds, ready

    def close(self) -> None:
        self._epoll.close()
