"""The chart's trace store, rendered by `helm template` (no cluster needed): Jaeger v2 by default (its Deployment,
configuration, Service, claim), the collector exporting to it, the auditor and Grafana reading it, the exemplars
linking to it; and the opt-in Tempo subchart, which nothing here can run, checked by rendering only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from lynx.local.stack import find_binary

from .conftest import KUBE_VERSION
from .testbed import tool

RELEASE, NAMESPACE = "lynx", "lynx"
JAEGER = f"{RELEASE}-jaeger"
VALUES = yaml.safe_load((Path(__file__).resolve().parents[2] / "charts" / "lynx" / "values.yaml").read_text())


def template(chart: Path, tmp_path: Path, values: dict | None = None, *files: Path,
             check: bool = True) -> list[dict] | subprocess.CompletedProcess:
    """The chart's objects as `helm template` renders them with ``files`` then ``values``."""
    extra = tmp_path / "values.yaml"
    extra.write_text(yaml.safe_dump(values or {}))
    args = [arg for f in (*files, extra) for arg in ("-f", str(f))]
    result = subprocess.run([tool("helm"), "template", RELEASE, str(chart), "--namespace", NAMESPACE,
                             "--kube-version", KUBE_VERSION, "--api-versions", "monitoring.coreos.com/v1", *args],
                            capture_output=True, text=True)
    if not check:
        return result
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def named(documents: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def env_of(documents: list[dict], deployment: str) -> dict[str, str]:
    container = named(documents, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def collector_endpoint(documents: list[dict]) -> str:
    config = yaml.safe_load(named(documents, "ConfigMap", f"{RELEASE}-collector")["data"]["config.yaml"])
    (exporter,) = [e for name, e in config["exporters"].items() if name.startswith("otlp_http")]
    return exporter["endpoint"]


def provisioned_datasources(documents: list[dict]) -> list[dict]:
    """Every datasource the Grafana sidecar would provision from the rendered ConfigMaps (its label)."""
    return [source for d in documents
            if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_datasource") == "1"
            for text in d["data"].values() for source in yaml.safe_load(text)["datasources"]]


def exemplar_destinations(documents: list[dict]) -> list[str]:
    """The datasource uids the Prometheus datasource's exemplars link to."""
    (prometheus,) = [s for s in provisioned_datasources(documents) if s["type"] == "prometheus" and s["isDefault"]]
    return [d["datasourceUid"] for d in prometheus["jsonData"]["exemplarTraceIdDestinations"]]


def test_jaeger_is_the_default_trace_store_with_its_deployment_config_and_service(chart, tmp_path):
    documents = template(chart, tmp_path)
    deployment = named(documents, "Deployment", JAEGER)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == VALUES["podSecurityContext"] and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == f"{VALUES['jaeger']['image']['repository']}:{VALUES['jaeger']['image']['tag']}"
    assert container["securityContext"] == VALUES["containerSecurityContext"]
    assert container["resources"] == VALUES["jaeger"]["resources"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/status", "port": "health"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/jaeger"]]  # no claim unless jaeger.persistence.enabled
    assert not [d for d in documents if d["kind"] == "PersistentVolumeClaim"]

    config = yaml.safe_load(named(documents, "ConfigMap", JAEGER)["data"]["config.yaml"])
    (store,) = config["extensions"]["jaeger_storage"]["backends"].values()
    badger = store["badger"]
    assert badger["ephemeral"] is False and badger["ttl"]["spans"] == "336h"  # 14 days
    assert all(path.startswith("/var/lib/jaeger/") for path in badger["directories"].values())
    query = config["extensions"]["jaeger_query"]
    assert query["enable_tracing"] is False and query["http"]["endpoint"] == "0.0.0.0:16686"
    assert config["extensions"]["healthcheckv2"]["http"]["endpoint"] == f"0.0.0.0:{ports['health']}"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == f"0.0.0.0:{ports['otlp-http']}"
    service = named(documents, "Service", JAEGER)
    assert {p["port"] for p in service["spec"]["ports"]} >= {4317, 4318, 16686, 13133}

    assert collector_endpoint(documents) == f"http://{JAEGER}:4318"
    auditor = env_of(documents, f"{RELEASE}-auditor")
    assert auditor["LYNX_AUDITOR_TRACE_STORE_URL"] == f"http://{JAEGER}:16686"
    assert auditor["LYNX_AUDITOR_TRACE_STORE_KIND"] == "jaeger"
    # Tempo is opt-in: nothing of it is rendered.
    assert not [d for d in documents if "tempo" in d["metadata"]["name"]]


def test_grafana_gets_a_jaeger_datasource_with_a_fixed_uid_and_the_exemplars_link_to_it(chart, tmp_path):
    documents = template(chart, tmp_path)
    (jaeger,) = [s for s in provisioned_datasources(documents) if s["type"] == "jaeger"]
    assert jaeger["uid"] == "jaeger" and jaeger["url"] == f"http://{JAEGER}:16686"
    assert jaeger["jsonData"]["tracesToMetrics"]["datasourceUid"] == VALUES["grafanaDatasource"]["prometheusUid"]
    assert exemplar_destinations(documents) == ["jaeger"]
    assert not [s for s in provisioned_datasources(documents) if s["type"] == "tempo"]


def test_jaeger_keeps_its_traces_on_a_claim_when_asked(chart, tmp_path):
    documents = template(chart, tmp_path, {"jaeger": {"persistence": {"enabled": True, "storageClassName": "fast",
                                                                      "size": "20Gi"}}})
    claim = named(documents, "PersistentVolumeClaim", JAEGER)
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    volumes = named(documents, "Deployment", JAEGER)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": JAEGER}} in volumes

    documents = template(chart, tmp_path, {"jaeger": {"persistence": {"enabled": True, "existingClaim": "traces"}}})
    assert not [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    volumes = named(documents, "Deployment", JAEGER)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "traces"}} in volumes


def test_the_rendered_jaeger_config_is_valid_for_the_built_jaeger(chart, tmp_path):
    jaeger = find_binary("jaeger") or pytest.fail("jaeger is required (scripts/build_tools.sh jaeger)")
    config = tmp_path / "jaeger.yaml"
    config.write_text(named(template(chart, tmp_path), "ConfigMap", JAEGER)["data"]["config.yaml"])
    result = subprocess.run([str(jaeger), "validate", f"--config={config}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_opt_in_tempo_subchart_renders_and_the_collector_auditor_and_grafana_point_at_it(chart, tmp_path):
    """charts/lynx/ci/tempo-values.yaml, the README's Tempo option: the subchart renders, Jaeger does not, the
    collector exports to Tempo's OTLP port, the auditor reads its query API as a Tempo, Grafana's trace datasource
    is a Tempo one and the exemplars link to it."""
    documents = template(chart, tmp_path, None, chart / "ci" / "tempo-values.yaml")
    tempo = [d for d in documents if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "tempo"]
    assert {d["kind"] for d in tempo} >= {"StatefulSet", "Service"}
    assert not [d for d in documents if d["metadata"]["name"].startswith(JAEGER)]
    assert collector_endpoint(documents) == f"http://{RELEASE}-tempo:4318"
    auditor = env_of(documents, f"{RELEASE}-auditor")
    assert auditor["LYNX_AUDITOR_TRACE_STORE_URL"] == f"http://{RELEASE}-tempo:3200"
    assert auditor["LYNX_AUDITOR_TRACE_STORE_KIND"] == "tempo"
    (source,) = [s for s in provisioned_datasources(documents) if s["type"] in ("tempo", "jaeger")]
    assert source["type"] == "tempo" and source["uid"] == "tempo" and source["url"] == f"http://{RELEASE}-tempo:3200"
    assert exemplar_destinations(documents) == ["tempo"]


def test_two_trace_stores_at_once_are_refused_with_a_clear_error(chart, tmp_path):
    result = template(chart, tmp_path, {"tempo": {"enabled": True}}, check=False)
    assert result.returncode != 0 and "choose one trace store" in result.stderr


def test_an_auditor_reading_a_store_of_its_own_gets_its_url_and_kind(chart, tmp_path):
    documents = template(chart, tmp_path, {"jaeger": {"enabled": False}, "otlp": {"endpoint": "http://otel:4318"},
                                           "components": {"auditor": {"traceStoreUrl": "http://tempo.obs:3200",
                                                                      "traceStoreKind": "tempo"}}})
    auditor = env_of(documents, f"{RELEASE}-auditor")
    assert auditor["LYNX_AUDITOR_TRACE_STORE_URL"] == "http://tempo.obs:3200"
    assert auditor["LYNX_AUDITOR_TRACE_STORE_KIND"] == "tempo"
    assert collector_endpoint(documents) == "http://otel:4318"
