"""The bundled configurations run the seed's supervision tree."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from alysd.ctl import main
from tests.conftest import REPO

SEED = {
    "chain_supervisor": ("one_for_one", {"chain": "exponential_backoff",
                                         "engine": "circuit_breaker", "auxpow": "one_for_one"}),
    "network_supervisor": ("rest_for_one", {"network": "circuit_breaker",
                                            "sync": "exponential_backoff", "stream": "one_for_one"}),
    "bridge_supervisor": ("one_for_one", {"bridge": "circuit_breaker",
                                          "federation": "exponential_backoff"}),
    "storage_supervisor": ("one_for_one", {"storage": "one_for_one", "metrics": "never"}),
}


def _bundled(name: str) -> str:
    """A bundled config, its monitoring endpoint moved to a free port (tests use no fixed port)."""
    text = (Path(REPO) / "conf" / name).read_text()
    assert 'listen = "127.0.0.1:9615"' in text
    return text.replace('listen = "127.0.0.1:9615"', 'listen = "127.0.0.1:0"')


def test_the_seed_tree_runs_and_alysctl_tree_draws_it(start_daemon):
    d = start_daemon(_bundled("alys.toml"))
    out = CliRunner().invoke(main, ["--runtime-dir", d.rundir.path, "tree", "--json"])
    tree = json.loads(out.output)
    assert (tree["name"], tree["strategy"]) == ("alys", "one_for_all")
    assert [s["name"] for s in tree["children"]] == list(SEED)
    for sup in tree["children"]:
        strategy, actors = SEED[sup["name"]]
        assert sup["strategy"] == strategy
        assert {a["name"]: a["strategy"] for a in sup["children"]} == actors
        assert all(a["state"] == "running" for a in sup["children"])
    drawing = CliRunner().invoke(main, ["--runtime-dir", d.rundir.path, "tree"]).output
    assert "├── chain_supervisor (one_for_one)" in drawing
    assert "    └── metrics [running pid" in drawing and drawing.rstrip().endswith("(never)")
    # placeholders say what they are
    row = d.status()["engine"]
    assert row["health"] == "degraded" and "placeholder" in row["health_reason"]
    assert d.request("engine", "ping")["placeholder"] is True
    # placeholders are degraded: the node serves, and says so
    with urllib.request.urlopen(d.call("version")["monitoring"] + "/health", timeout=10) as resp:
        assert resp.status == 200 and json.load(resp)["status"] == "degraded"


def test_the_dev_tree_adds_the_examples(start_daemon):
    d = start_daemon(_bundled("dev.toml"))
    assert d.request("relay", {"x": 1}) == {"via": "relay", "reply": {"x": 1}}
    assert len(d.status()) == 13
