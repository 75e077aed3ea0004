"""Health probes, system health, and the /metrics and /health endpoint of a real daemon."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from alysd.testing import wait_until
from tests.conftest import actor_toml, tree_toml

FAST = 'heartbeat_interval = "100ms"\nhealth_interval = "100ms"\nhealth_timeout = "300ms"'
MONITORED = '[monitoring]\nlisten = "127.0.0.1:0"\n'


def _daemon(start_daemon, *actors: str):
    return start_daemon(MONITORED + tree_toml(*actors, max_retries=10, system=FAST))


def _get(d, path: str) -> tuple[int, str, str]:
    url = d.call("version")["monitoring"] + path
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def _health(d, name: str, status: str) -> dict:
    return wait_until(lambda: (r := d.status()[name])["health"] == status and r,
                      message=f"{name} {status}")


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_health_check_answers_reach_status_and_health_endpoint(start_daemon):
    d = _daemon(start_daemon, actor_toml("a", "tests.actors:Hog"), actor_toml("b", "tests.actors:Hog"))
    code, ctype, body = _get(d, "/health")
    assert code == 200 and ctype.startswith("application/json")
    assert json.loads(body)["status"] == "healthy"

    d.request("a", {"op": "health", "status": "degraded", "reason": "peer count low"})
    row = _health(d, "a", "degraded")
    assert row["health_reason"] == "peer count low"
    code, _, body = _get(d, "/health")
    report = json.loads(body)
    assert code == 200 and report["status"] == "degraded"
    assert report["actors"]["a"]["reason"] == "peer count low"

    d.request("b", {"op": "health", "status": "unhealthy", "reason": "db corrupt"})
    _health(d, "b", "unhealthy")
    code, _, body = _get(d, "/health")
    assert code == 503 and json.loads(body)["status"] == "unhealthy"


def test_a_health_check_that_raises_is_unhealthy(start_daemon):
    d = _daemon(start_daemon, actor_toml("a", "tests.actors:Hog"))
    d.request("a", {"op": "health", "status": "raise", "reason": ""})
    row = _health(d, "a", "unhealthy")
    assert "raised RuntimeError" in row["health_reason"]


def test_a_busy_actor_that_cannot_answer_the_probe_is_unhealthy_until_it_does(start_daemon):
    d = _daemon(start_daemon, actor_toml("a", "tests.actors:Hog"), actor_toml("b", "tests.actors:Probe"))
    # one-way from b: a sleeps in its handler for 2 s (no CPU: not a limit breach)
    d.request("b", {"op": "send", "to": "a", "msg": {"op": "sleep", "seconds": 2}})
    row = _health(d, "a", "unhealthy")
    assert row["health_reason"] == "no answer"
    assert row["state"] == "running"          # not killed: its heartbeat goes on
    _health(d, "a", "healthy")


def test_metrics_after_traffic_restarts_and_dead_letters(start_daemon):
    d = _daemon(start_daemon, actor_toml("a", "tests.actors:Hog", memory_limit="1GiB"),
                actor_toml("b", "tests.actors:Probe"))
    for _ in range(20):
        d.request("a", {"op": "pid"})
    d.request("a", {"op": "spin", "seconds": 0.2})
    before = d.status()["b"]
    os.kill(before["pid"], signal.SIGKILL)
    wait_until(lambda: (r := d.status()["b"])["state"] == "running"
               and r["incarnation"] > before["incarnation"], message="b restarted")
    try:
        d.request("b", {"op": "send", "to": "nobody", "msg": 1})
    except Exception:
        pass   # UnknownActor: dead-lettered as unknown_actor

    def scraped():
        code, ctype, text = _get(d, "/metrics")
        assert code == 200 and ctype.startswith("text/plain")
        samples = _samples(text)
        caught_up = (
            samples.get(("alys_messages_total", frozenset({("actor", "a")})), 0) >= 21
            and samples.get(("alys_dead_letters_total",
                             frozenset({("reason", "unknown_actor")})), 0) >= 1
            # readings of a limited actor come every sample_interval (1 s here)
            and samples.get(("alys_actor_cpu_seconds_total", frozenset({("actor", "a")})), 0) > 0)
        return samples if caught_up else None
    samples = wait_until(scraped, message="metrics caught up")
    assert samples[("alys_active_actors", frozenset())] == 2
    assert samples[("alys_uptime_seconds", frozenset())] > 0
    assert samples[("alys_actor_restarts_total",
                    frozenset({("actor", "b"), ("reason", "signal")}))] == 1
    assert samples[("alys_message_processing_seconds_count", frozenset({("actor", "a")}))] >= 20
    assert samples[("alys_message_processing_seconds_bucket",
                    frozenset({("actor", "a"), ("le", "+Inf")}))] >= 20
    assert samples[("alys_memory_bytes", frozenset({("supervisor", "root")}))] > 10 << 20
    assert ("alys_mailbox_depth", frozenset({("actor", "b")})) in samples
    assert ("alys_errors_total", frozenset({("actor", "a")})) in samples


def test_an_unbindable_monitoring_address_is_reported_and_the_node_runs(start_daemon):
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        d = start_daemon(f'[monitoring]\nlisten = "127.0.0.1:{port}"\n'
                         + tree_toml(actor_toml("a")))
        assert "cannot listen" in d.call("version")["monitoring"]
        assert d.request("a", {"op": "echo", "v": 1}) == 1
    finally:
        taken.close()
