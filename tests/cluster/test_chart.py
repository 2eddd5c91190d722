"""The chart against a real API server: lint, every scenario accepted by server-side dry-run, rules
checked by promtool, then the whole umbrella installed, inspected and uninstalled."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lynx.local.stack import find_binary

from ..integration.conftest import wait_for
from .conftest import CHART, KUBE_VERSION, REPO, render
from .testbed import Cluster

SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "lynx", "lynx"
KWOK_VALUES = Path(__file__).with_name("kwok-values.yaml")
LYNX_COMPONENTS = {"gateway", "tokenizer", "retriever", "decoder", "auditor"}
NAMESPACED_KINDS_WE_RENDER = {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "ConfigMap", "Secret",
                              "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Pod"}


def test_scenarios_exist():
    assert {p.name for p in SCENARIOS} >= {"defaults-values.yaml", "stack-off-values.yaml",
                                           "networkpolicy-values.yaml", "custom-endpoint-values.yaml"}


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_helm_lint(cluster: Cluster, chart, values: Path):
    result = cluster.helm("lint", str(chart), "--strict", "-f", str(values), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_every_rendered_object_is_accepted_by_the_api_server(cluster: Cluster, chart, values: Path):
    namespace = f"dry-{values.stem.removesuffix('-values')}"
    cluster.kubectl("create", "namespace", namespace, check=False)
    documents = render(cluster, values, RELEASE, namespace)
    assert any(d["kind"] == "Deployment" for d in documents)
    assert all(d["metadata"].get("namespace") for d in documents if d["kind"] in NAMESPACED_KINDS_WE_RENDER)
    # A dry-run Pod is refused if its ServiceAccount does not exist, and a dry run creates nothing.
    accounts = [d for d in documents if d["kind"] == "ServiceAccount"]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(accounts))
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(documents))
    assert result.stdout.count("(server dry run)") == len(documents)


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda p: p.stem)
def test_every_prometheus_rule_passes_promtool(cluster: Cluster, chart, values: Path, tmp_path):
    promtool = find_binary("promtool") or pytest.fail("promtool is required (scripts/build_tools.sh prometheus)")
    rules = [d for d in render(cluster, values) if d["kind"] == "PrometheusRule"]
    assert rules or "defaults" not in values.stem
    for index, rule in enumerate(rules):
        path = tmp_path / f"rule-{index}.yml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        result = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{rule['metadata']['name']}: {result.stdout}{result.stderr}"


def test_disabled_parts_render_nothing(cluster: Cluster, chart, tmp_path):
    values = tmp_path / "off.yaml"
    values.write_text(yaml.safe_dump({
        "kube-prometheus-stack": {"enabled": False}, "jaeger": {"enabled": False},
        "components": {c: {"enabled": False} for c in LYNX_COMPONENTS},
        "monitoring": {"prometheusRule": {"enabled": False}}, "dashboards": {"enabled": False},
        "helmTest": {"enabled": False}}))
    kinds = {d["kind"] for d in render(cluster, values)}
    assert kinds <= {"Secret"}, kinds


def test_the_lease_channel_joins_the_gateways_to_the_operator_and_no_one_else(cluster: Cluster, chart):
    """Spend leases as the chart wires them: the gateways' URL is the operator Service's lease port, both sides
    mount the one token Secret, and the operator's NetworkPolicy admits only gateway pods to that port."""
    documents = render(cluster, CHART / "ci" / "networkpolicy-values.yaml")
    by_kind_name = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    gateway = by_kind_name["Deployment", f"{RELEASE}-gateway"]["spec"]["template"]
    operator = by_kind_name["Deployment", f"{RELEASE}-operator"]["spec"]["template"]

    def env(template: dict) -> dict[str, str]:
        return {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}

    def mounted_secret(template: dict, path: str) -> str:
        """The Secret whose volume holds ``path``."""
        container = template["spec"]["containers"][0]
        mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        return next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])["secret"]["secretName"]

    url = env(gateway)["LYNX_GATEWAY_BUDGET_CONTROLLER_URL"]
    service = by_kind_name["Service", f"{RELEASE}-operator"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == "leases")
    assert url == f"http://{RELEASE}-operator.{NAMESPACE}.svc:{port['port']}"
    container_port = next(p for p in operator["spec"]["containers"][0]["ports"] if p["name"] == port["targetPort"])
    assert str(container_port["containerPort"]) == env(operator)["LYNX_OPERATOR_PORT"]
    token = {mounted_secret(gateway, env(gateway)["LYNX_GATEWAY_LEASE_TOKEN_FILE"]),
             mounted_secret(operator, env(operator)["LYNX_OPERATOR_LEASE_TOKEN_FILE"])}
    assert len(token) == 1 and ("Secret", token.pop()) in by_kind_name

    policy = by_kind_name["NetworkPolicy", f"{RELEASE}-operator"]["spec"]
    assert selector_matches(policy["podSelector"], operator["metadata"]["labels"])
    lease_rules = [rule for rule in policy["ingress"] if {"port": "leases"} in rule["ports"]]
    assert len(lease_rules) == 1 and len(lease_rules[0]["from"]) == 1
    admitted = lease_rules[0]["from"][0]
    assert "namespaceSelector" not in admitted  # the release's own namespace only
    assert selector_matches(admitted["podSelector"], gateway["metadata"]["labels"])
    for other in ("tokenizer", "retriever", "decoder", "auditor"):
        labels = by_kind_name["Deployment", f"{RELEASE}-{other}"]["spec"]["template"]["metadata"]["labels"]
        assert not selector_matches(admitted["podSelector"], labels), other


def test_the_console_mounts_its_admin_secret_and_the_tenants_and_renders_nothing_when_off(cluster: Cluster, chart,
                                                                                         tmp_path):
    """The operator serves the console with the admin token Secret and the gateway's tenants file mounted where its
    settings read them; `operator.console.enabled: false` takes the Secret, the mounts and the settings away."""
    documents = render(cluster, CHART / "ci" / "networkpolicy-values.yaml")
    by_kind_name = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    operator = by_kind_name["Deployment", f"{RELEASE}-operator"]["spec"]["template"]["spec"]
    container = operator["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LYNX_CONSOLE_ENABLED"] == "true"
    volumes = {v["name"]: v for v in operator["volumes"]}
    for setting, secret in (("LYNX_CONSOLE_ADMIN_TOKEN_FILE", f"{RELEASE}-console-admin"),
                            ("LYNX_CONSOLE_TENANTS_FILE", f"{RELEASE}-tenants")):
        mount = next(m for m in container["volumeMounts"] if env[setting].startswith(m["mountPath"] + "/"))
        assert volumes[mount["name"]]["secret"]["secretName"] == secret and ("Secret", secret) in by_kind_name
    assert "token" in by_kind_name["Secret", f"{RELEASE}-console-admin"]["data"]
    assert env["LYNX_CONSOLE_TRACE_STORE_URL"].startswith("http://")

    values = tmp_path / "console-off.yaml"
    scenario = yaml.safe_load((CHART / "ci" / "networkpolicy-values.yaml").read_text())
    scenario["operator"] = {**scenario.get("operator", {}), "console": {"enabled": False, "secureCookies": False}}
    values.write_text(yaml.safe_dump(scenario))
    off = render(cluster, values)
    operator = next(d for d in off if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in container["env"]}["LYNX_CONSOLE_ENABLED"] == "false"
    assert [e["name"] for e in container["env"] if e["name"].startswith("LYNX_CONSOLE_")] == ["LYNX_CONSOLE_ENABLED"]
    assert not any(d["metadata"]["name"] == f"{RELEASE}-console-admin" for d in off)


@pytest.fixture(scope="module")
def installed(cluster: Cluster, chart):
    started = time.monotonic()
    cluster.helm("install", RELEASE, str(chart), "--namespace", NAMESPACE, "--create-namespace",
                 "-f", str(KWOK_VALUES), "--wait", "--timeout", "10m")
    print(f"\nhelm install --wait took {time.monotonic() - started:.0f} s")
    return cluster


def unready_workloads(cluster: Cluster) -> list[str]:
    return [f"{kind}/{item['metadata']['name']}" for kind in ("deployments", "statefulsets")
            for item in cluster.get(kind, "--namespace", NAMESPACE)["items"]
            if item["status"].get("readyReplicas", 0) != item["spec"].get("replicas", 1)]


def test_every_workload_is_ready(installed: Cluster):
    # helm's --wait may return a moment before the status of a one-replica Deployment says so
    # (it allows maxUnavailable): poll for every workload's own readiness.
    wait_for(lambda: not unready_workloads(installed), 120, "every Deployment and StatefulSet ready", interval=1,
             explain=lambda: f"not ready: {unready_workloads(installed)}")
    deployments = {d["metadata"]["name"] for d in installed.get("deployments", "--namespace", NAMESPACE)["items"]}
    assert {f"{RELEASE}-{c}" for c in LYNX_COMPONENTS} <= deployments


def selector_matches(selector: dict, labels: dict) -> bool:
    if selector is None:
        return False
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def test_prometheus_selects_every_lynx_service_monitor_and_rule(installed: Cluster):
    prometheus = installed.get("prometheuses", "--namespace", NAMESPACE)["items"][0]["spec"]
    monitors = [m for m in installed.get("servicemonitors", "--namespace", NAMESPACE)["items"]
                if m["metadata"]["labels"].get("app.kubernetes.io/part-of") == "lynx"]
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == LYNX_COMPONENTS
    services = {s["metadata"]["name"]: s for s in installed.get("services", "--namespace", NAMESPACE)["items"]}
    for monitor in monitors:
        assert selector_matches(prometheus["serviceMonitorSelector"], monitor["metadata"]["labels"]), \
            f"Prometheus does not select {monitor['metadata']['name']}"
        targets = [s for s in services.values() if selector_matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert len(targets) == 1 and any(p["name"] == "http" for p in targets[0]["spec"]["ports"])
    rules = [r for r in installed.get("prometheusrules", "--namespace", NAMESPACE)["items"]
             if r["metadata"]["labels"].get("app.kubernetes.io/part-of") == "lynx"]
    assert rules and all(selector_matches(prometheus["ruleSelector"], r["metadata"]["labels"]) for r in rules)
    assert "exemplar-storage" in prometheus.get("enableFeatures", [])


def test_dashboards_reach_the_grafana_sidecar(installed: Cluster):
    grafana = next(d for d in installed.get("deployments", "--namespace", NAMESPACE)["items"]
                   if d["metadata"]["name"] == f"{RELEASE}-grafana")
    sidecar = next(c for c in grafana["spec"]["template"]["spec"]["containers"] if c["name"] == "grafana-sc-dashboard")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    maps = installed.get("configmaps", "--namespace", NAMESPACE, "-l", f"{env['LABEL']}={env['LABEL_VALUE']}")["items"]
    shipped = {name: data for m in maps for name, data in m["data"].items() if "lynx" in m["metadata"]["name"]}
    for source in (REPO / "dashboards").glob("*.json"):
        assert json.loads(shipped[source.name]) == json.loads(source.read_text())
    datasource_maps = installed.get("configmaps", "--namespace", NAMESPACE, "-l", "grafana_datasource=1")["items"]
    provisioned = [d for m in datasource_maps for text in m["data"].values() for d in yaml.safe_load(text)["datasources"]]
    jaeger = [d for d in provisioned if d["type"] == "jaeger"]
    assert jaeger and jaeger[0]["uid"] == "jaeger" and "tracesToMetrics" in jaeger[0]["jsonData"]
    prometheus = next(d for d in provisioned if d["type"] == "prometheus")
    assert [t["datasourceUid"] for t in prometheus["jsonData"]["exemplarTraceIdDestinations"]] == ["jaeger"]


def test_pods_are_hardened(installed: Cluster):
    for deployment in installed.get("deployments", "--namespace", NAMESPACE, "-l", "app.kubernetes.io/part-of=lynx")["items"]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
            assert security["capabilities"]["drop"] == ["ALL"]
            # Jaeger's healthcheckv2 answers on /status (503 while starting or stopping); the others /readyz, /healthz.
            jaeger = container["name"] == "jaeger"
            assert container["readinessProbe"]["httpGet"]["path"] == ("/status" if jaeger else "/readyz")
            assert container["livenessProbe"]["httpGet"]["path"] == ("/status" if jaeger else "/healthz")
            assert container["resources"]["limits"]["memory"]


def test_uninstall_leaves_nothing_but_the_crds(installed: Cluster):
    crds_before = {c["metadata"]["name"] for c in installed.get("crds")["items"]}
    installed.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m")
    def leftovers() -> list[str]:
        return namespaced_leftovers(installed) + cluster_scoped_leftovers(installed)

    wait_for(lambda: not leftovers(), 120, "every object of the release to be gone", interval=2, explain=leftovers)
    assert {c["metadata"]["name"] for c in installed.get("crds")["items"]} == crds_before


def namespaced_leftovers(cluster: Cluster) -> list[str]:
    kinds = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k.split(".")[0] not in {"events", "leases"}]
    found = json.loads(cluster.kubectl("get", ",".join(kinds), "--namespace", NAMESPACE, "-o", "json",
                                       "--ignore-not-found").stdout or '{"items": []}')["items"]
    defaults = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}
    return [f"{i['kind']}/{i['metadata']['name']}" for i in found
            if (i["kind"], i["metadata"]["name"]) not in defaults]


def cluster_scoped_leftovers(cluster: Cluster) -> list[str]:
    kinds = "clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations"
    found = cluster.get(kinds)["items"]
    return [f"{i['kind']}/{i['metadata']['name']}" for i in found
            if i["metadata"].get("labels", {}).get("release") == RELEASE
            or i["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE
            or i["metadata"]["name"].startswith(f"{RELEASE}-")]
