"""System health from the health of each actor (the seed's ``overall_health``).

Pure functions over plain strings, so they are tested without processes and
shared by ``alysctl status``, the ``/health`` endpoint and the systemd status
line. An actor's health is one of ``HEALTHY``, ``DEGRADED``, ``UNHEALTHY``
(what its ``health_check()`` answered) or ``UNKNOWN`` (not running, or not
probed yet).
"""

from __future__ import annotations

from collections.abc import Iterable

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
UNKNOWN = "unknown"

NO_ANSWER = "no answer"          # the reason given when a probe times out


def aggregate(healths: Iterable[str]) -> str:
    """The system's health: ``healthy`` when every actor is healthy, ``unhealthy``
    when any actor is, ``degraded`` otherwise (an actor that is degraded or whose
    health is unknown, e.g. one that is restarting). No actors is healthy."""
    seen = set(healths)
    if UNHEALTHY in seen:
        return UNHEALTHY
    if seen <= {HEALTHY}:
        return HEALTHY
    return DEGRADED


def serving(system_health: str) -> bool:
    """Whether the node serves: ``/health`` answers 200 for these, 503 otherwise."""
    return system_health in (HEALTHY, DEGRADED)
