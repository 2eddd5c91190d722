"""The chart's OpenTelemetry Collector: its configuration is one the built collector accepts, the services export to
it and it to the trace backend, in every scenario; disabled, the services export to the backend themselves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from lynx.local.stack import find_binary

from .conftest import CHART, render
from .testbed import Cluster

SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "lynx"
COLLECTOR = f"{RELEASE}-collector"
SERVICES = {"gateway", "tokenizer", "retriever", "decoder", "auditor"}


def backend(values: dict) -> str:
    """Where the scenario's spans should end up: its otlp.endpoint, else the chart's Jaeger, else the opt-in Tempo."""
    if values.get("otlp", {}).get("endpoint"):
        return values["otlp"]["endpoint"]
    jaeger = values.get("jaeger", {}).get("enabled", True)
    return f"http://{RELEASE}-jaeger:4318" if jaeger else f"http://{RELEASE}-tempo:4318"


def exporter(config: dict) -> dict:
    """The collector's one otlp_http exporter, whatever config/otelcol.yaml names it."""
    (found,) = [e for name, e in config["exporters"].items() if name.startswith("otlp_http")]
    return found


def service_endpoints(documents: list[dict]) -> dict[str, str]:
    """Each lynx service Deployment's OTEL_EXPORTER_OTLP_ENDPOINT."""
    endpoints = {}
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        component = deployment["metadata"]["labels"].get("app.kubernetes.io/component")
        if component in SERVICES:
            env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
            endpoints[component] = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    return endpoints


def collector_config(documents: list[dict]) -> dict:
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == COLLECTOR]
    return yaml.safe_load(config_map["data"]["config.yaml"])


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_services_export_to_the_collector_and_it_to_the_backend(cluster: Cluster, chart, values: Path):
    documents = render(cluster, values)
    endpoints = service_endpoints(documents)
    assert endpoints and set(endpoints.values()) == {f"http://{COLLECTOR}:4318"}
    config = collector_config(documents)
    assert exporter(config)["endpoint"] == backend(yaml.safe_load(values.read_text()))
    (service,) = [d for d in documents if d["kind"] == "Service" and d["metadata"]["name"] == COLLECTOR]
    assert {p["port"] for p in service["spec"]["ports"]} >= {4317, 4318}


def test_the_rendered_config_is_valid_for_the_built_collector(cluster: Cluster, chart, tmp_path):
    collector = find_binary("otelcol-lynx") or pytest.fail("otelcol-lynx is required (scripts/build_tools.sh otelcol)")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(collector_config(render(cluster, CHART / "ci" / "defaults-values.yaml"))))
    result = subprocess.run([str(collector), "validate", f"--config={config}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_without_the_collector_the_services_export_to_the_backend(cluster: Cluster, chart, tmp_path):
    values = tmp_path / "no-collector.yaml"
    values.write_text(yaml.safe_dump({"collector": {"enabled": False}}))
    documents = render(cluster, values)
    assert not [d for d in documents if d["metadata"]["name"] == COLLECTOR]
    assert set(service_endpoints(documents).values()) == {backend({})}
