"""The monitoring endpoint: ``/metrics`` (Prometheus) and ``/health`` over HTTP,
served by the root process for the whole tree.

The supervisor's loop owns every piece of process state and must never block,
so HTTP lives in threads of its own and the two meet only through a
``SnapshotExchange``:

- an HTTP thread never touches supervisor state: it asks the exchange for a
  ``SystemSnapshot``, an immutable copy the loop builds on request, and renders
  that;
- the loop never blocks on HTTP: it polls the exchange's descriptor like any
  other, and when it is readable ``serve`` drains it without blocking, builds
  one snapshot and hands it to every request waiting at that moment, so a
  burst of scrapes costs one build;
- when the loop does not answer within ``answer_timeout`` the request gets a
  503, never a stale snapshot;
- a client gets ``CLIENT_TIMEOUT`` seconds to send its whole request and as
  long again to take the answer, so a slow or hostile client cannot hold a
  thread for longer; a failing request ends its own thread, never the server.

``render_metrics`` and ``health_response`` are pure functions of a snapshot.
"""

from __future__ import annotations

import http.server
import io
import itertools
import logging
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

import msgspec
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

import alysd
from alysd import health
from alysd.dead_letters import Reason

log = logging.getLogger("alysd.monitoring")

CLIENT_TIMEOUT = 5.0   # seconds a client has to send its request, and again to take the answer
NOT_ANSWERING = "supervisor loop not answering"
HEALTH_STATUSES = (health.HEALTHY, health.DEGRADED, health.UNHEALTHY, health.UNKNOWN)
RUNNING = "running"

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


class ActorSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One actor as the loop saw it when it built the snapshot."""

    name: str
    supervisor: str                 # its direct supervisor
    state: str                      # starting|running|restarting|stopping|stopped|failed
    health: str                     # healthy|degraded|unhealthy|unknown (alysd.health constants)
    health_reason: str | None
    pid: int | None
    incarnation: int
    restarts: dict[str, int]        # last-exit reason -> restarts for that reason since alysd started
    messages: int                   # messages handled since alysd started, all incarnations
    errors: int                     # handler failures since alysd started
    processing_counts: tuple[int, ...]   # per bucket of processing_buckets, then +Inf; not cumulative
    processing_sum: float           # seconds spent in handlers, all incarnations
    mailbox_depth: int
    rss_bytes: int | None           # whole process tree, latest sample; None when not running/sampled
    cpu_seconds: float              # user+system CPU, all incarnations


class SystemSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The tree as the loop saw it. Its dicts must be the loop's copies: the
    snapshot is read in another thread while the loop runs on."""

    health: str                     # aggregate (alysd.health.aggregate)
    uptime_s: float
    processing_buckets: tuple[float, ...]   # histogram upper bounds in seconds, ascending, no +Inf
    actors: tuple[ActorSnapshot, ...]
    dead_letters: dict[str, int]    # reason -> dead letters ever put


class SnapshotExchange:
    """Hands snapshots built by the supervisor loop to HTTP threads (the loop owns the state).

    Requests wait for a generation: the first request of a generation writes
    one wake byte, later ones join it; ``serve`` claims the generation (so a
    request arriving during the build waits for the next one, and never gets a
    snapshot older than itself), builds, and wakes every waiter of it.
    """

    def __init__(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._changed = threading.Condition()
        self._waiting = 0          # requests waiting for generation _next
        self._next = 1             # the generation the next build serves
        self._served = 0           # the generation of _latest
        self._latest: SystemSnapshot | None = None
        self._closed = False

    def fileno(self) -> int:
        """The descriptor the loop polls: readable when a request waits for a snapshot."""
        return self._wake_r.fileno()

    def serve(self, build: Callable[[], SystemSnapshot]) -> None:
        """Answer the waiting requests with one ``build()`` (called by the loop; never blocks)."""
        with self._changed:
            if self._closed:
                return
            self._drain_wakes()
            if not self._waiting:
                return          # a wake left over from a request that was served or gave up
            generation = self._next
            self._next += 1
            self._waiting = 0
        try:
            snapshot = build()
        except Exception:
            # The loop must outlive a broken snapshot; the requests answer 503.
            log.exception("building the monitoring snapshot failed")
            snapshot = None
        with self._changed:
            self._latest, self._served = snapshot, generation
            self._changed.notify_all()

    def request(self, timeout: float) -> SystemSnapshot | None:
        """A snapshot built after this call (from an HTTP thread), or None when
        the loop did not answer within ``timeout`` seconds or the build failed."""
        with self._changed:
            if self._closed:
                return None
            generation = self._next
            if not self._waiting:
                self._wake_loop()
            self._waiting += 1
            answered = self._changed.wait_for(
                lambda: self._served >= generation or self._closed, timeout)
            if answered and not self._closed:
                return self._latest      # ours, or a newer one if the loop served again meanwhile
            if self._next == generation:
                self._waiting -= 1       # unclaimed: spare the loop a build for nobody
            return None

    def close(self) -> None:
        """Stop answering: waiting and later requests get None. Idempotent."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            self._wake_r.close()
            self._wake_w.close()

    def _wake_loop(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            pass    # the buffer is full of wakes: the loop will come anyway

    def _drain_wakes(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass


def render_metrics(snapshot: SystemSnapshot) -> bytes:
    """The Prometheus text exposition of ``snapshot``, plus the root process's
    own process and platform metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)


def health_response(snapshot: SystemSnapshot | None) -> tuple[int, bytes]:
    """(HTTP status, JSON body) of ``/health``: 200 while the system serves
    (healthy or degraded), 503 otherwise or when the loop did not answer."""
    if snapshot is None:
        return 503, msgspec.json.encode({"status": health.UNHEALTHY, "reason": NOT_ANSWERING})
    report = {
        "status": snapshot.health,
        "uptime_s": round(snapshot.uptime_s, 3),
        "actors": {a.name: {"state": a.state, "health": a.health, "reason": a.health_reason,
                            "pid": a.pid, "restarts": sum(a.restarts.values())}
                   for a in snapshot.actors},
    }
    return (200 if health.serving(snapshot.health) else 503), msgspec.json.encode(report)


class _SnapshotCollector:
    """A prometheus_client custom collector over one snapshot."""

    def __init__(self, snapshot: SystemSnapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        actors = snapshot.actors
        yield GaugeMetricFamily("alys_active_actors", "Actors in state running.",
                                value=sum(a.state == RUNNING for a in actors))
        yield GaugeMetricFamily("alys_uptime_seconds", "Seconds since alysd started.",
                                value=snapshot.uptime_s)
        system_health = GaugeMetricFamily("alys_health", "1 for the system's health status, else 0.",
                                          labels=["status"])
        for status in HEALTH_STATUSES:
            system_health.add_metric([status], float(snapshot.health == status))
        yield system_health

        yield _per_actor(GaugeMetricFamily("alys_actor_up", "1 while the actor runs, else 0.",
                                           labels=["actor"]),
                         actors, lambda a: float(a.state == RUNNING))
        actor_health = GaugeMetricFamily("alys_actor_health",
                                         "1 for the actor's health status, else 0.",
                                         labels=["actor", "status"])
        for a in actors:
            for status in HEALTH_STATUSES:
                actor_health.add_metric([a.name, status], float(a.health == status))
        yield actor_health
        # CounterMetricFamily appends "_total" itself.
        yield _per_actor(CounterMetricFamily("alys_messages", "Messages handled, all incarnations.",
                                             labels=["actor"]),
                         actors, lambda a: a.messages)
        yield _per_actor(CounterMetricFamily("alys_errors", "Handler failures, all incarnations.",
                                             labels=["actor"]),
                         actors, lambda a: a.errors)
        yield _processing_histogram(snapshot)
        restarts = CounterMetricFamily("alys_actor_restarts",
                                       "Restarts, by the reason the previous incarnation ended.",
                                       labels=["actor", "reason"])
        for a in actors:
            for reason, count in a.restarts.items():
                restarts.add_metric([a.name, reason], count)
        yield restarts
        yield _per_actor(GaugeMetricFamily("alys_mailbox_depth",
                                           "Messages in the actor's mailbox.", labels=["actor"]),
                         actors, lambda a: a.mailbox_depth)
        yield _per_actor(CounterMetricFamily("alys_actor_cpu_seconds",
                                             "User and system CPU seconds, all incarnations.",
                                             labels=["actor"]),
                         actors, lambda a: a.cpu_seconds)
        memory = GaugeMetricFamily("alys_memory_bytes",
                                   "RSS of the process trees of the actors directly under "
                                   "each supervisor.", labels=["supervisor"])
        by_supervisor: dict[str, int] = {}
        for a in actors:
            by_supervisor[a.supervisor] = by_supervisor.get(a.supervisor, 0) + (a.rss_bytes or 0)
        for supervisor, rss in by_supervisor.items():
            memory.add_metric([supervisor], rss)
        yield memory
        dead_letters = CounterMetricFamily("alys_dead_letters", "Dead letters, by reason.",
                                           labels=["reason"])
        # Every known reason is exported from the start, so rate() sees the first letter.
        counts = {reason.value: 0 for reason in Reason} | snapshot.dead_letters
        for reason, count in counts.items():
            dead_letters.add_metric([reason], count)
        yield dead_letters


_Family = GaugeMetricFamily | CounterMetricFamily


def _per_actor(family: _Family, actors: tuple[ActorSnapshot, ...],
               value: Callable[[ActorSnapshot], float]) -> _Family:
    """``family`` with one sample per actor."""
    for a in actors:
        family.add_metric([a.name], value(a))
    return family


def _processing_histogram(snapshot: SystemSnapshot) -> HistogramMetricFamily:
    family = HistogramMetricFamily("alys_message_processing_seconds",
                                   "Seconds spent handling a message.", labels=["actor"])
    bounds = [floatToGoString(bound) for bound in snapshot.processing_buckets] + ["+Inf"]
    for a in snapshot.actors:
        if len(a.processing_counts) != len(bounds):
            raise ValueError(f"actor {a.name}: {len(a.processing_counts)} processing counts "
                             f"for {len(bounds)} buckets")
        # Prometheus buckets are cumulative: each counts everything at or below its bound.
        family.add_metric([a.name], list(zip(bounds, itertools.accumulate(a.processing_counts))),
                          a.processing_sum)
    return family


class _DeadlineReader(io.RawIOBase):
    """A connection's reading side, every read within one deadline: a socket
    timeout alone bounds each read, and a client sending a byte at a time
    would hold its thread for as long as it likes."""

    def __init__(self, connection: socket.socket, deadline: float):
        self.connection = connection
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not sent in time")
        self.connection.settimeout(left)
        return self.connection.recv_into(buffer)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Every read and write sets its own timeout. The stock reader is
        # closed, not dropped: an open file of the socket keeps it from closing.
        self.rfile.close()
        self.rfile = io.BufferedReader(
            _DeadlineReader(self.connection, time.monotonic() + CLIENT_TIMEOUT))

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command in ("GET", "HEAD"):
            return True
        self._send(405, _TEXT, b"only GET and HEAD\n", {"Allow": "GET, HEAD"})
        return False

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def version_string(self) -> str:
        return f"alysd/{alysd.__version__}"

    def log_message(self, format: str, *args) -> None:
        """Silent: a scrape every few seconds is not worth a log line."""

    def _answer(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            status, content_type, body = self._route(path)
        except Exception:
            log.exception("monitoring: answering %s failed", path)
            status, content_type, body = 500, _TEXT, b"internal error\n"
        self._send(status, content_type, body)

    def _route(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            snapshot = self.server.exchange.request(self.server.answer_timeout)
            if snapshot is None:
                return 503, _TEXT, NOT_ANSWERING.encode() + b"\n"
            return 200, CONTENT_TYPE_LATEST, render_metrics(snapshot)
        if path == "/health":
            status, body = health_response(self.server.exchange.request(self.server.answer_timeout))
            return status, _JSON, body
        return 404, _TEXT, b"not found: try /metrics or /health\n"

    def _send(self, status: int, content_type: str, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        # The reads may have left the socket a fraction of a second: the
        # answer gets its own CLIENT_TIMEOUT.
        self.connection.settimeout(CLIENT_TIMEOUT)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(socketserver.ThreadingTCPServer):
    # Not http.server.HTTPServer: its bind looks up the host's FQDN, a DNS
    # query at start that nothing here uses.
    daemon_threads = True           # a request in progress never holds up close()
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops the connections of a burst of
    # scrapes, and a dropped SYN costs its client a second.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], exchange: SnapshotExchange,
                 answer_timeout: float):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.exchange = exchange
        self.answer_timeout = answer_timeout
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # Called inside socketserver's except clause. Mostly clients that went away
        # mid-answer; the thread ends, the server serves on.
        log.debug("monitoring: request from %s failed", client_address, exc_info=sys.exc_info())


class MonitoringServer:
    """``/metrics`` and ``/health`` on ``host:port``, served from a daemon thread."""

    def __init__(self, host: str, port: int, exchange: SnapshotExchange, *,
                 answer_timeout: float = 2.0):
        self.host = host
        self.port = port
        self.exchange = exchange
        self.answer_timeout = answer_timeout
        self.address: tuple[str, int] = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve. Raises OSError (address in use, no such address, ...)
        here, in the caller, so the daemon can say why there is no endpoint."""
        server = _Server((self.host, self.port), self.exchange, self.answer_timeout)
        self.address = server.server_address[:2]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="alysd-monitoring",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving, join the thread and free the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        self._thread.join()
        server.server_close()
