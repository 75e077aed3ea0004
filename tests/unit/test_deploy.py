"""deploy/kubernetes: the manifests are valid Kubernetes (the official schemas,
strict), and they fit alysd: the configuration they carry is valid in the
environment the Deployment sets, and the probes reach alysd's /health."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from alysd.config import check_imports, parse_config

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


def documents() -> dict[str, dict]:
    return {doc["kind"]: doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_kubernetes(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_configuration_is_valid_where_the_deployment_runs_it():
    docs = documents()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ALYS_ENVIRONMENT"] == "production"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["ALYS_CONFIG_PATH"] == f"{mounts['config']}/alys.toml"
    text = docs["ConfigMap"]["data"]["alys.toml"]
    config = parse_config(f'environment = "{env["ALYS_ENVIRONMENT"]}"\n' + text)
    assert check_imports(config) == []
    # The probes ask alysd's own /health, on the port it listens on.
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["monitoring"]
    assert config.monitoring.listen == ("0.0.0.0", port)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "monitoring"}


def test_the_seeds_shape_replicas_ports_and_resources():
    deployment = documents()["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {8545, 3000, 30303} <= {p["containerPort"] for p in container["ports"]}
    assert set(container["resources"]) == {"requests", "limits"}
