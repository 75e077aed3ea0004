"""Tests of alysd.monitoring: the exposition and /health body of a snapshot, the
exchange between the loop and HTTP threads, and a real server on a free port
with a thread standing in for the supervisor's loop."""

from __future__ import annotations

import concurrent.futures
import json
import os
import select
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from alysd import health, monitoring
from alysd.dead_letters import Reason
from alysd.monitoring import (
    ActorSnapshot,
    MonitoringServer,
    SnapshotExchange,
    SystemSnapshot,
    health_response,
    render_metrics,
)
from alysd.testing import wait_until

BUCKETS = (0.001, 0.01, 0.1, 1.0)
STATES = ("starting", "running", "restarting", "stopping", "stopped", "failed")
HEALTHS = (health.HEALTHY, health.DEGRADED, health.UNHEALTHY, health.UNKNOWN)


def actor(name: str = "a", **fields) -> ActorSnapshot:
    values = {"supervisor": "root", "state": "running", "health": health.HEALTHY,
              "health_reason": None, "pid": 100, "incarnation": 1, "restarts": {},
              "messages": 0, "errors": 0, "processing_counts": (0,) * (len(BUCKETS) + 1),
              "processing_sum": 0.0, "mailbox_depth": 0, "rss_bytes": None, "cpu_seconds": 0.0}
    values.update(fields)
    return ActorSnapshot(name=name, **values)


def system(*actors: ActorSnapshot, **fields) -> SystemSnapshot:
    values = {"health": health.aggregate(a.health for a in actors), "uptime_s": 12.5,
              "processing_buckets": BUCKETS, "actors": actors, "dead_letters": {}}
    values.update(fields)
    return SystemSnapshot(**values)


def samples(exposition: bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, by (sample name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(exposition.decode())
            for s in family.samples}


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


# -- render_metrics -----------------------------------------------------------------------

def test_every_metric_of_a_snapshot_reads_back():
    snapshot = system(
        actor("a", messages=40, errors=2, restarts={"signal": 2, "exit_code": 1},
              mailbox_depth=7, rss_bytes=3000, cpu_seconds=1.25),
        actor("b", state="restarting", health=health.UNKNOWN, pid=None, rss_bytes=None),
        dead_letters={"timeout": 3, "unknown_actor": 1}, uptime_s=99.5)
    got = samples(render_metrics(snapshot))
    assert got[("alys_active_actors", labels())] == 1
    assert got[("alys_uptime_seconds", labels())] == 99.5
    assert got[("alys_messages_total", labels(actor="a"))] == 40
    assert got[("alys_errors_total", labels(actor="a"))] == 2
    assert got[("alys_messages_total", labels(actor="b"))] == 0
    assert got[("alys_actor_restarts_total", labels(actor="a", reason="signal"))] == 2
    assert got[("alys_actor_restarts_total", labels(actor="a", reason="exit_code"))] == 1
    assert not any(name == "alys_actor_restarts_total" and ("actor", "b") in pairs
                   for name, pairs in got)
    assert got[("alys_mailbox_depth", labels(actor="a"))] == 7
    assert got[("alys_actor_cpu_seconds_total", labels(actor="a"))] == 1.25
    assert got[("alys_actor_up", labels(actor="a"))] == 1
    assert got[("alys_actor_up", labels(actor="b"))] == 0
    assert got[("alys_dead_letters_total", labels(reason="timeout"))] == 3
    assert got[("alys_dead_letters_total", labels(reason="unknown_actor"))] == 1


def test_metric_types_follow_the_counter_naming_rule():
    families = {f.name: f.type for f in text_string_to_metric_families(
        render_metrics(system(actor("a"))).decode())}
    for counter in ("alys_messages", "alys_errors", "alys_actor_restarts", "alys_dead_letters",
                    "alys_actor_cpu_seconds"):
        assert families[counter] == "counter"
    for gauge in ("alys_active_actors", "alys_uptime_seconds", "alys_memory_bytes",
                  "alys_mailbox_depth", "alys_actor_up", "alys_actor_health", "alys_health"):
        assert families[gauge] == "gauge"
    assert families["alys_message_processing_seconds"] == "histogram"


def test_processing_histogram_is_cumulative_with_inf_equal_to_the_count():
    got = samples(render_metrics(system(
        actor("a", processing_counts=(3, 0, 5, 1, 2), processing_sum=4.75))))
    buckets = {pairs: value for (name, pairs), value in got.items()
               if name == "alys_message_processing_seconds_bucket"}
    assert buckets == {labels(actor="a", le="0.001"): 3, labels(actor="a", le="0.01"): 3,
                       labels(actor="a", le="0.1"): 8, labels(actor="a", le="1.0"): 9,
                       labels(actor="a", le="+Inf"): 11}
    assert got[("alys_message_processing_seconds_count", labels(actor="a"))] == 11
    assert got[("alys_message_processing_seconds_sum", labels(actor="a"))] == 4.75


def test_processing_counts_that_do_not_fit_the_buckets_are_refused():
    with pytest.raises(ValueError, match="actor a: 2 processing counts for 5 buckets"):
        render_metrics(system(actor("a", processing_counts=(1, 2))))


def test_memory_sums_the_actors_directly_under_each_supervisor():
    got = samples(render_metrics(system(
        actor("a", supervisor="chain", rss_bytes=1000),
        actor("b", supervisor="chain", rss_bytes=250),
        actor("c", supervisor="chain", state="stopped", rss_bytes=None),
        actor("d", supervisor="net", rss_bytes=70),
        actor("e", supervisor="idle", state="failed", rss_bytes=None))))
    memory = {dict(pairs)["supervisor"]: value for (name, pairs), value in got.items()
              if name == "alys_memory_bytes"}
    assert memory == {"chain": 1250, "net": 70, "idle": 0}


def test_health_gauges_are_one_for_the_current_status_only():
    got = samples(render_metrics(system(
        actor("a", health=health.DEGRADED), actor("b", health=health.UNKNOWN, state="stopped"))))
    for name, current in (("a", health.DEGRADED), ("b", health.UNKNOWN)):
        assert {status: got[("alys_actor_health", labels(actor=name, status=status))]
                for status in HEALTHS} == {status: float(status == current) for status in HEALTHS}
    assert {status: got[("alys_health", labels(status=status))] for status in HEALTHS} \
        == {status: float(status == health.DEGRADED) for status in HEALTHS}


def test_every_dead_letter_reason_is_exported_from_the_start():
    got = samples(render_metrics(system()))
    assert {reason.value: got[("alys_dead_letters_total", labels(reason=reason.value))]
            for reason in Reason} == {reason.value: 0 for reason in Reason}


def test_the_root_process_exports_its_own_metrics():
    got = samples(render_metrics(system()))
    assert any(name == "python_info" for name, _ in got)
    if os.path.exists("/proc/self/stat"):
        assert got[("process_resident_memory_bytes", labels())] > 0


names = st.from_regex(r"[a-z][a-z0-9_-]{0,47}(\.[0-9]{1,2})?", fullmatch=True)
counts = st.integers(min_value=0, max_value=2**40)
seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False)


@st.composite
def snapshots(draw) -> SystemSnapshot:
    buckets = tuple(sorted(draw(st.sets(st.floats(min_value=1e-6, max_value=1e4), max_size=8))))
    actor_names = draw(st.lists(names, unique=True, max_size=8))
    supervisors = draw(st.lists(names, min_size=1, max_size=3))
    actors = tuple(ActorSnapshot(
        name=name, supervisor=draw(st.sampled_from(supervisors)),
        state=draw(st.sampled_from(STATES)), health=draw(st.sampled_from(HEALTHS)),
        health_reason=draw(st.none() | st.text(max_size=30)),
        pid=draw(st.none() | st.integers(1, 2**22)), incarnation=draw(st.integers(0, 10**6)),
        restarts=draw(st.dictionaries(names, counts, max_size=3)), messages=draw(counts),
        errors=draw(counts),
        processing_counts=tuple(draw(st.lists(counts, min_size=len(buckets) + 1,
                                              max_size=len(buckets) + 1))),
        processing_sum=draw(seconds), mailbox_depth=draw(counts),
        rss_bytes=draw(st.none() | counts), cpu_seconds=draw(seconds)) for name in actor_names)
    return SystemSnapshot(
        health=health.aggregate(a.health for a in actors), uptime_s=draw(seconds),
        processing_buckets=buckets, actors=actors,
        dead_letters=draw(st.dictionaries(st.sampled_from([r.value for r in Reason]) | names,
                                          counts, max_size=4)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_any_snapshot_renders_and_reads_back(snapshot):
    got = samples(render_metrics(snapshot))
    assert got[("alys_uptime_seconds", labels())] == snapshot.uptime_s
    for a in snapshot.actors:
        assert got[("alys_messages_total", labels(actor=a.name))] == a.messages
        assert got[("alys_actor_cpu_seconds_total", labels(actor=a.name))] == a.cpu_seconds
        assert got[("alys_message_processing_seconds_count", labels(actor=a.name))] \
            == sum(a.processing_counts)
        assert got[("alys_message_processing_seconds_sum", labels(actor=a.name))] \
            == a.processing_sum
        assert got[("alys_message_processing_seconds_bucket", labels(actor=a.name, le="+Inf"))] \
            == sum(a.processing_counts)
        for reason, count in a.restarts.items():
            assert got[("alys_actor_restarts_total", labels(actor=a.name, reason=reason))] == count
    for reason, count in snapshot.dead_letters.items():
        assert got[("alys_dead_letters_total", labels(reason=reason))] == count
    for supervisor in {a.supervisor for a in snapshot.actors}:
        assert got[("alys_memory_bytes", labels(supervisor=supervisor))] == sum(
            a.rss_bytes or 0 for a in snapshot.actors if a.supervisor == supervisor)
    status, body = health_response(snapshot)
    assert status in (200, 503)
    assert json.loads(body)["actors"].keys() == {a.name for a in snapshot.actors}


# -- health_response ----------------------------------------------------------------------

@pytest.mark.parametrize(("healths", "status", "code"), [
    ((health.HEALTHY, health.HEALTHY), health.HEALTHY, 200),
    ((health.HEALTHY, health.DEGRADED), health.DEGRADED, 200),
    ((health.HEALTHY, health.UNKNOWN), health.DEGRADED, 200),
    ((health.DEGRADED, health.UNHEALTHY), health.UNHEALTHY, 503),
])
def test_health_response_code_follows_the_system_health(healths, status, code):
    snapshot = system(*(actor(f"a{i}", health=h) for i, h in enumerate(healths)))
    assert snapshot.health == status
    got, body = health_response(snapshot)
    assert got == code
    assert json.loads(body)["status"] == status


def test_health_response_body():
    snapshot = system(
        actor("a", health=health.DEGRADED, health_reason="peer count low", pid=41,
              restarts={"signal": 2, "exit_code": 1}),
        actor("b", state="stopped", health=health.UNKNOWN, pid=None), uptime_s=3.14159)
    code, body = health_response(snapshot)
    assert code == 200
    assert json.loads(body) == {
        "status": health.DEGRADED, "uptime_s": 3.142,
        "actors": {"a": {"state": "running", "health": "degraded", "reason": "peer count low",
                         "pid": 41, "restarts": 3},
                   "b": {"state": "stopped", "health": "unknown", "reason": None, "pid": None,
                         "restarts": 0}}}


def test_health_response_without_a_snapshot_is_503():
    code, body = health_response(None)
    assert code == 503
    assert json.loads(body) == {"status": "unhealthy", "reason": "supervisor loop not answering"}


# -- SnapshotExchange ---------------------------------------------------------------------

@pytest.fixture
def exchange():
    ex = SnapshotExchange()
    yield ex
    ex.close()


def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_the_loop_is_not_woken_and_does_not_build_when_nobody_asks(exchange):
    assert not readable(exchange.fileno())
    exchange.serve(lambda: pytest.fail("built for nobody"))


def test_a_request_nobody_answers_is_none_after_its_timeout(exchange):
    started = time.monotonic()
    assert exchange.request(0.1) is None
    assert 0.1 <= time.monotonic() - started < 5
    # It gave up before any build: the loop, woken late, builds for nobody.
    assert readable(exchange.fileno())
    exchange.serve(lambda: pytest.fail("built for nobody"))


def test_requests_waiting_together_share_one_build(exchange):
    waiting = 6
    builds = []
    with concurrent.futures.ThreadPoolExecutor(waiting) as pool:
        answers = [pool.submit(exchange.request, 30) for _ in range(waiting)]
        # The exchange's own count is the only sign that every request is parked.
        wait_until(lambda: exchange._waiting == waiting, interval=0.001,
                   message="every request waiting")
        assert readable(exchange.fileno(), 10)
        exchange.serve(lambda: builds.append(system()) or builds[-1])
        got = [answer.result(timeout=10) for answer in answers]
    assert len(builds) == 1
    assert all(snapshot is builds[0] for snapshot in got)
    assert not readable(exchange.fileno())


def test_a_build_that_raises_answers_none_and_the_next_one_serves(exchange, caplog):
    def broken() -> SystemSnapshot:
        raise RuntimeError("boom")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(exchange.request, 30)
        assert readable(exchange.fileno(), 10)
        exchange.serve(broken)
        assert answer.result(timeout=10) is None
        assert "building the monitoring snapshot failed" in caplog.text
        snapshot = system()
        answer = pool.submit(exchange.request, 30)
        assert readable(exchange.fileno(), 10)
        exchange.serve(lambda: snapshot)
        assert answer.result(timeout=10) is snapshot


def test_close_releases_a_waiting_request_and_refuses_later_ones(exchange):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(exchange.request, 30)
        assert readable(exchange.fileno(), 10)
        started = time.monotonic()
        exchange.close()
        assert answer.result(timeout=10) is None
        assert time.monotonic() - started < 5
    assert exchange.request(30) is None
    exchange.serve(lambda: pytest.fail("built after close"))
    exchange.close()


# -- MonitoringServer ---------------------------------------------------------------------

class StandInLoop:
    """The supervisor loop's part: poll the exchange, serve the current snapshot."""

    def __init__(self, exchange: SnapshotExchange):
        self.exchange = exchange
        self.snapshot: SystemSnapshot | None = system(actor("a"))
        self.builds = 0
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="stand-in-loop", daemon=True)
        self._thread.start()

    def _build(self) -> SystemSnapshot:
        self.builds += 1
        if self.snapshot is None:
            raise RuntimeError("no snapshot")
        return self.snapshot

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.exchange.fileno(), selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._stop_r in ready:
                    return
                self.exchange.serve(self._build)

    def stop(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        self._stop_r.close()
        self._stop_w.close()


class Endpoint:
    def __init__(self, server: MonitoringServer, loop: StandInLoop | None):
        self.server = server
        self.loop = loop

    def url(self, path: str) -> str:
        host, port = self.server.address
        return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"

    def get(self, path: str, method: str = "GET") -> tuple[int, str, bytes]:
        request = urllib.request.Request(self.url(path), method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.headers["Content-Type"], err.read()


@pytest.fixture
def serve():
    """Start an endpoint on a free port, with or without a stand-in loop; all torn down."""
    opened: list[tuple[MonitoringServer, SnapshotExchange, StandInLoop | None]] = []

    def start(*, host: str = "127.0.0.1", port: int = 0, loop: bool = True,
              answer_timeout: float = 5.0):
        exchange = SnapshotExchange()
        server = MonitoringServer(host, port, exchange, answer_timeout=answer_timeout)
        stand_in = StandInLoop(exchange) if loop else None
        opened.append((server, exchange, stand_in))
        server.start()
        return Endpoint(server, stand_in)

    yield start
    for server, exchange, stand_in in opened:
        server.close()
        if stand_in is not None:
            stand_in.stop()
        exchange.close()


def test_metrics_are_served_with_the_prometheus_content_type(serve):
    endpoint = serve()
    endpoint.loop.snapshot = system(actor("a", messages=12))
    code, content_type, body = endpoint.get("/metrics")
    assert (code, content_type) == (200, CONTENT_TYPE_LATEST)
    assert samples(body)[("alys_messages_total", labels(actor="a"))] == 12


def test_health_is_200_while_serving_and_503_when_unhealthy(serve):
    endpoint = serve()
    endpoint.loop.snapshot = system(actor("a", health=health.DEGRADED, health_reason="slow"))
    code, content_type, body = endpoint.get("/health")
    assert (code, content_type) == (200, "application/json")
    assert json.loads(body)["actors"]["a"]["reason"] == "slow"
    endpoint.loop.snapshot = system(actor("a", health=health.UNHEALTHY))
    code, content_type, body = endpoint.get("/health")
    assert (code, content_type) == (503, "application/json")
    assert json.loads(body)["status"] == "unhealthy"


def test_head_answers_the_headers_without_a_body(serve):
    endpoint = serve()
    code, content_type, body = endpoint.get("/metrics", method="HEAD")
    assert (code, content_type, body) == (200, CONTENT_TYPE_LATEST, b"")


def test_other_paths_are_404_and_other_methods_405(serve):
    endpoint = serve()
    assert endpoint.get("/")[0] == 404
    assert endpoint.get("/metrics/extra")[0] == 404
    for method in ("POST", "DELETE", "PUT", "BREW"):
        assert endpoint.get("/metrics", method=method)[0] == 405
    assert endpoint.loop.builds == 0


def test_a_loop_that_does_not_answer_gets_503_within_the_answer_timeout(serve):
    endpoint = serve(loop=False, answer_timeout=0.2)
    started = time.monotonic()
    code, content_type, body = endpoint.get("/health")
    assert time.monotonic() - started < 5
    assert (code, content_type) == (503, "application/json")
    assert json.loads(body) == {"status": "unhealthy", "reason": "supervisor loop not answering"}
    code, content_type, body = endpoint.get("/metrics")
    assert (code, content_type) == (503, "text/plain; charset=utf-8")
    assert b"not answering" in body


def test_a_failing_build_answers_503_and_the_server_serves_on(serve):
    endpoint = serve()
    endpoint.loop.snapshot = None
    assert endpoint.get("/metrics")[0] == 503
    endpoint.loop.snapshot = system(actor("a"))
    assert endpoint.get("/metrics")[0] == 200


def test_a_snapshot_that_cannot_be_rendered_answers_500_and_the_server_serves_on(serve, caplog):
    endpoint = serve()
    endpoint.loop.snapshot = system(actor("a", processing_counts=(1,)))
    code, _, body = endpoint.get("/metrics")
    assert (code, body) == (500, b"internal error\n")
    assert "answering /metrics failed" in caplog.text
    endpoint.loop.snapshot = system(actor("a"))
    assert endpoint.get("/metrics")[0] == 200


def test_concurrent_requests_share_builds(serve):
    endpoint = serve()
    requests = 24
    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        codes = list(pool.map(lambda path: endpoint.get(path)[0], ["/metrics", "/health"] * 12))
    assert codes == [200] * requests
    assert 1 <= endpoint.loop.builds <= requests


def test_a_client_that_sends_its_request_too_slowly_is_cut_off(serve, monkeypatch):
    monkeypatch.setattr(monitoring, "CLIENT_TIMEOUT", 0.3)
    endpoint = serve()
    with socket.create_connection(endpoint.server.address, timeout=10) as slow:
        started = time.monotonic()
        request = iter(b"GET /metrics HTTP/1.0\r\nX-Padding: " + b"x" * 10_000)
        # A byte every 50 ms, never the end of the headers, until the server hangs up.
        while not readable(slow.fileno(), 0.05):
            slow.send(bytes([next(request)]))
            assert time.monotonic() - started < 5, "the trickling client was never cut off"
        try:
            assert slow.recv(100) == b""
        except ConnectionResetError:
            pass
        # Meanwhile the server answered others.
        assert endpoint.get("/health")[0] == 200


def test_start_reports_an_address_in_use(exchange):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MonitoringServer("127.0.0.1", taken.getsockname()[1], exchange)
        with pytest.raises(OSError):
            server.start()
        server.close()


def test_close_is_idempotent_and_frees_the_port(serve):
    endpoint = serve()
    assert endpoint.get("/health")[0] == 200
    port = endpoint.server.address[1]
    endpoint.server.close()
    endpoint.server.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    again = serve(port=port)
    assert again.server.address == ("127.0.0.1", port)
    assert again.get("/health")[0] == 200


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_serves_on_ipv6(serve):
    endpoint = serve(host="::1")
    assert endpoint.server.address[0] == "::1"
    code, _, body = endpoint.get("/health")
    assert code == 200
    assert msgspec.json.decode(body)["status"] == "healthy"
