"""The budget operator on a real API server, with the token of the ServiceAccount the chart creates (never the
admin certificate), against a real Prometheus scraping two real gateway processes.

kopf runs the operator's handlers in this process (KopfRunner); the chart is installed for its CRD, its
ServiceAccount, Role and RoleBinding, its decisions ConfigMap and its lease ledger's ConfigMap. Nothing runs in
kwok's pods, so a thread of the test does the kubelet's part of the gateway's ConfigMap volume: it copies the
ConfigMap's budgets.json to the file the gateways read (LYNX_GATEWAY_BUDGETS_FILE), atomically, when it changes.
The two gateways lease their spend from the operator's lease endpoint, with a token file both read (the chart's
Secret, mounted, in a pod).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import kopf
import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes.client import CoreV1Api

from lynx.local.stopping import stop_processes
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx.contracts.budgets import (
    TIMEZONE_PATTERN, BudgetDecisions, BudgetSpec, TemporaryRaise, UnreachableAllowance,
)
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, free_port, start_service, wait_ready
from lynx.local.stack import load_config, prometheus_config, start_prometheus
from lynx_budget import kube
from lynx_budget.lease_desk import BEFORE_LEASES
from lynx_budget.leases import LeaseLedger, confirmed_eur
from lynx_budget.local import write_atomically
from lynx_budget.policy import PROMETHEUS_REACHABLE, day_window

# The integration suite's way of starting the services.
from ..integration.conftest import (
    MODEL_NAME,
    START_TIMEOUT_SECONDS,
    built_models,
    metric_value,
    required_binary,
    service_environment,
    start_stack,
    wait_for,
)
from ..integration.otlp_sink import OtlpSink
from .conftest import CHART, KUBE_VERSION
from .testbed import Cluster, tool

pytestmark = pytest.mark.integration

NAMESPACE, RELEASE = "budgets", "lynx"
OPERATOR_ACCOUNT, CONFIGMAP, LEDGER = f"{RELEASE}-operator", f"{RELEASE}-budgets", f"{RELEASE}-budget-leases"
HANDLERS = Path(kube.__file__).with_name("handlers.py")
CRD = CHART / "crds" / "tenantbudgets.yaml"
WAIT_SECONDS = 60
POLL_SECONDS = 0.25
# Only what the operator needs from the chart; the gateway stays to show its mount of the decisions.
RELEASE_VALUES = {
    "operator": {"enabled": True, "prometheusUrl": "http://prometheus.monitoring.svc:9090", "intervalSeconds": 1},
    "kube-prometheus-stack": {"enabled": False}, "jaeger": {"enabled": False}, "helmTest": {"enabled": False},
    "dashboards": {"enabled": False}, "grafanaDatasource": {"enabled": False},
    "components": {name: {"enabled": False} for name in ("tokenizer", "retriever", "decoder", "auditor")},
}


def soonest_midnight_zone(now: datetime, at_least_seconds: float) -> str:
    """The zone (UTC or Etc/GMT±N) whose next midnight comes soonest, but at least ``at_least_seconds`` from now:
    its tenant stays in one day until the test moves the operator's clock past that midnight."""
    zones = ["UTC", *(f"Etc/GMT{offset:+d}" for offset in range(-14, 13) if offset)]
    ahead = {zone: (day_window(zone, now)[1] - now).total_seconds() for zone in zones}
    return min((zone for zone in zones if ahead[zone] >= at_least_seconds), key=ahead.__getitem__)


def cost_told(response: httpx.Response) -> float:
    """What the answer says it cost: a completion's, or a refusal's charged after tokenizing (0 when none was)."""
    return ((response.json().get("lynx") or {}).get("cost") or {}).get("total", 0.0)


def budget(name: str, spec: BudgetSpec) -> dict:
    return {"apiVersion": f"{kube.GROUP}/{kube.VERSION}", "kind": kube.KIND,
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": kube.resource_spec(spec)}


@pytest.fixture(scope="module")
def release(cluster: Cluster, chart: Path, tmp_path_factory) -> Iterator[Cluster]:
    values = tmp_path_factory.mktemp("operator-values") / "values.yaml"
    values.write_text(yaml.safe_dump(RELEASE_VALUES))
    cluster.helm("install", RELEASE, str(chart), "--namespace", NAMESPACE, "--create-namespace", "-f", str(values))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{kube.PLURAL}.{kube.GROUP}", "--timeout=60s")
    yield cluster
    cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE)


@pytest.fixture(scope="module")
def operator_kubeconfig(release: Cluster, tmp_path_factory) -> Path:
    """A kubeconfig holding only a token of the operator's ServiceAccount, as the chart made it."""
    admin = yaml.safe_load(release.kubectl("config", "view", "--raw", "--flatten", "--minify").stdout)
    token = release.kubectl("create", "token", OPERATOR_ACCOUNT, "--namespace", NAMESPACE, "--duration", "2h").stdout
    cluster = admin["clusters"][0]
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster], "current-context": OPERATOR_ACCOUNT,
        "users": [{"name": OPERATOR_ACCOUNT, "user": {"token": token.strip()}}],
        "contexts": [{"name": OPERATOR_ACCOUNT,
                      "context": {"cluster": cluster["name"], "user": OPERATOR_ACCOUNT, "namespace": NAMESPACE}}]}))
    return path


def test_the_crd_mirrors_the_budget_spec():
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(spec) == {*kube.SPEC_FIELDS.values(), "raises", kube.ALLOWANCE}
    assert set(BudgetSpec.model_fields) == {*kube.SPEC_FIELDS, "raises", "unreachable_allowance"}
    assert set(spec[kube.ALLOWANCE]["properties"]) == set(kube.ALLOWANCE_FIELDS.values())
    assert set(UnreachableAllowance.model_fields) == set(kube.ALLOWANCE_FIELDS)
    assert set(spec["raises"]["items"]["properties"]) == set(kube.RAISE_FIELDS.values())
    assert set(TemporaryRaise.model_fields) == set(kube.RAISE_FIELDS)
    assert spec["timezone"]["pattern"] == TIMEZONE_PATTERN


@pytest.mark.parametrize("values", [[], ["kube-prometheus-stack.enabled=false", "operator.prometheusUrl=http://p:9090"]],
                         ids=["with-the-stack", "own-prometheus"])
def test_the_chart_lints_with_the_operator(cluster: Cluster, chart: Path, values: list[str]):
    sets = [arg for value in ["operator.enabled=true", *values] for arg in ("--set", value)]
    result = cluster.helm("lint", str(chart), "--strict", *sets, "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in result.stdout


def test_the_api_server_refuses_invalid_budgets(release: Cluster):
    now = datetime.now(UTC)
    valid = BudgetSpec(tenant="valid", daily_cap_eur=1, timezone="Europe/Paris")
    refused = {
        "negative-cap": (valid.model_copy(update={"daily_cap_eur": -1}), "should be greater than or equal to 0"),
        "bad-zone": (valid.model_copy(update={"timezone": "Paris time"}), "spec.timezone in body should match"),
        "long-raise": (valid.model_copy(update={"raises": [TemporaryRaise(
            amount_eur=1, requested_at=now, expires_at=now + timedelta(hours=73), reason="launch", requested_by="ops")]}),
            "a raise may last at most 72 h"),
    }
    for name, (spec, message) in refused.items():
        result = release.kubectl("create", "-f", "-", input=json.dumps(budget(name, spec)), check=False)
        assert result.returncode != 0 and message in result.stderr, (name, result.stderr)
    release.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(budget("valid", valid)))


def test_lynx_budget_kube_sets_and_removes_a_tenant_budget(release: Cluster):
    """`lynx budget ... --kube` (the real command line) on the API server: a budget made, then removed."""
    env = {**release.env, "KUBECONFIG": str(release.kubeconfig)}

    def lynx_budget(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lynx.cli", "budget", *args, "--kube", "--namespace", NAMESPACE],
                              env=env, capture_output=True, text=True, timeout=60)

    def tenants() -> set[str]:
        listed = json.loads(release.kubectl("get", f"{kube.PLURAL}.{kube.GROUP}", "--namespace", NAMESPACE,
                                            "-o", "json").stdout)
        return {item["spec"]["tenant"] for item in listed["items"]}

    assert lynx_budget("set", "Leaving Tenant", "--cap", "2").returncode == 0
    assert "Leaving Tenant" in tenants()
    # The export reads every TenantBudget's status with one LIST (KubeStore.statuses); with no Prometheus to read
    # the tenants without a budget from, it still lists the budgets, and says what it left out.
    exported = lynx_budget("export", "--prometheus", f"http://127.0.0.1:{free_port()}")
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert exported.returncode == 1 and "tenants without a budget are left out" in exported.stderr, exported.stderr
    assert ["Leaving Tenant", "2"] in [[row[0], row[3]] for row in rows[1:]], exported.stdout
    removed = lynx_budget("remove", "Leaving Tenant")
    assert removed.returncode == 0, removed.stderr
    assert "Leaving Tenant" not in tenants()
    again = lynx_budget("remove", "Leaving Tenant")
    assert (again.returncode, again.stderr.strip()) == (1, "lynx budget remove: tenant 'Leaving Tenant' has no budget")


def test_the_operator_account_may_do_only_what_the_operator_does(release: Cluster, operator_kubeconfig: Path):
    def may(*request: str) -> bool:
        result = release.run(tool("kubectl"), "--kubeconfig", str(operator_kubeconfig), "auth", "can-i", *request,
                             "--namespace", NAMESPACE, check=False)
        return result.stdout.strip() == "yes"

    allowed = [("watch", "tenantbudgets"), ("patch", "tenantbudgets"), ("patch", "tenantbudgets", "--subresource=status"),
               ("get", f"configmap/{CONFIGMAP}"), ("patch", f"configmap/{CONFIGMAP}"), ("get", f"configmap/{LEDGER}"),
               ("patch", f"configmap/{LEDGER}"), ("create", "events")]
    refused = [("create", "tenantbudgets"), ("delete", "tenantbudgets"), ("list", "configmaps"),
               ("patch", "configmap/kube-root-ca.crt"), ("get", "secrets"), ("list", "pods"),
               ("list", "kopfpeerings.kopf.dev"), ("list", "tenantbudgets", "--all-namespaces")]
    assert [r for r in allowed if not may(*r)] == []
    assert [r for r in refused if may(*r)] == []


def test_the_gateway_mounts_the_decisions_the_chart_starts_empty(release: Cluster):
    gateway = release.get("deployment", f"{RELEASE}-gateway", "--namespace", NAMESPACE)["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    budgets_file = next(e["value"] for e in container["env"] if e["name"] == "LYNX_GATEWAY_BUDGETS_FILE")
    mount = next(m for m in container["volumeMounts"] if budgets_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in gateway["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == CONFIGMAP and "subPath" not in mount  # a subPath mount never refreshes
    published = release.get("configmap", CONFIGMAP, "--namespace", NAMESPACE)["data"][Path(budgets_file).name]
    assert BudgetDecisions.model_validate_json(published).tenants == {}
    operator = release.get("deployment", OPERATOR_ACCOUNT, "--namespace", NAMESPACE)["spec"]
    assert operator["replicas"] == 1 and operator["strategy"]["type"] == "Recreate"
    assert operator["template"]["spec"]["serviceAccountName"] == OPERATOR_ACCOUNT


class ConfigMapFile(threading.Thread):
    """The kubelet's part of a ConfigMap volume: budgets.json copied to the gateways' file when it changes,
    replaced atomically like the kubelet's symlink swap."""

    def __init__(self, kubeconfig: Path, path: Path) -> None:
        super().__init__(daemon=True)
        self.api = CoreV1Api(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
        self.path, self.stopped = path, threading.Event()

    def run(self) -> None:
        copied = None
        while not self.stopped.wait(0.2):
            with contextlib.suppress(Exception):  # an API hiccup: the next round copies it
                text = (self.api.read_namespaced_config_map(CONFIGMAP, NAMESPACE).data or {}).get(kube.DECISIONS_KEY)
                if text and text != copied:
                    write_atomically(self.path, text)
                    copied = text


@dataclass
class Scene:
    cluster: Cluster
    operator_kubeconfig: Path
    gateways: list[ServiceProcess]
    prometheus: ServiceProcess
    prometheus_config: dict
    keys: dict[str, str]
    environment: pytest.MonkeyPatch
    lease_port: int
    lease_token_file: Path
    tenants_file: Path
    runner: KopfRunner | None = None
    metrics_port: int = 0
    outputs: list[str] = field(default_factory=list)

    def start_operator(self, clock_offset_seconds: float = 0.0) -> None:
        """kopf in this process, as the chart's ServiceAccount; a fresh registry, so the handlers file loads anew
        with the settings of this moment."""
        self.environment.setenv("KUBECONFIG", str(self.operator_kubeconfig))
        self.environment.setenv("LYNX_OPERATOR_PROMETHEUS_URL", self.prometheus.url)
        self.environment.setenv("LYNX_OPERATOR_INTERVAL_SECONDS", "1")
        self.environment.setenv("LYNX_OPERATOR_CONFIGMAP_NAME", CONFIGMAP)
        self.environment.setenv("LYNX_OPERATOR_CONFIGMAP_NAMESPACE", NAMESPACE)
        self.metrics_port = free_port()
        self.environment.setenv("LYNX_OPERATOR_METRICS_PORT", str(self.metrics_port))
        self.environment.setenv("LYNX_OPERATOR_CLOCK_OFFSET_SECONDS", str(clock_offset_seconds))
        self.environment.setenv("LYNX_OPERATOR_PORT", str(self.lease_port))  # the gateways renew there
        self.environment.setenv("LYNX_OPERATOR_LEASE_TOKEN_FILE", str(self.lease_token_file))
        self.environment.setenv("LYNX_OPERATOR_LEASES_CONFIGMAP_NAME", LEDGER)
        # The console on the lease port: its admin token (made by the operator, as the chart's Secret would hold it)
        # and the gateways' tenants file.
        self.environment.setenv("LYNX_CONSOLE_ADMIN_TOKEN_FILE", str(self.console_token_file))
        self.environment.setenv("LYNX_CONSOLE_TENANTS_FILE", str(self.tenants_file))
        self.runner = KopfRunner(["run", "--standalone", "--namespace", NAMESPACE, str(HANDLERS)],
                                 registry=kopf.OperatorRegistry(), timeout=60)
        self.runner.__enter__()

    @property
    def console_token_file(self) -> Path:
        return self.lease_token_file.with_name("console-admin-token")

    def stop_operator(self) -> None:
        runner, self.runner = self.runner, None
        runner.__exit__(None, None, None)
        self.outputs.append(runner.output)
        assert runner.exit_code == 0, runner.output[-3000:]
        assert "Forbidden" not in runner.output, runner.output[-3000:]

    def start_prometheus(self) -> None:
        port = int(self.prometheus.url.rsplit(":", 1)[1])
        work = self.prometheus.log.parent
        self.prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"),
                                           self.prometheus_config, work, port=port)
        wait_ready([self.prometheus], START_TIMEOUT_SECONDS)

    def complete(self, tenant: str, gateway: int = 0, cheapest: bool = False) -> httpx.Response:
        """A short chat completion; ``cheapest``: the cheapest request there is (a one-token prompt, one token)."""
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        if cheapest:
            return httpx.post(f"{self.gateways[gateway].url}/v1/completions", timeout=120, headers=headers,
                              json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 1, "prompt": "a"})
        return httpx.post(f"{self.gateways[gateway].url}/v1/chat/completions", timeout=120, headers=headers,
                          json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 8, "retrieval_top_k": 0,
                                "messages": [{"role": "user", "content": "Name three rivers of Europe."}]})

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the operator's /metrics, None when it is not exported."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        try:
            return metric_value(text, name, labels)
        except KeyError:
            return None

    def resource(self, name: str) -> dict:
        return self.cluster.get(f"{kube.PLURAL}.{kube.GROUP}", name, "--namespace", NAMESPACE)

    def status(self, name: str) -> dict:
        return self.resource(name).get("status") or {}

    def wait_status(self, name: str, check: Callable[[dict], bool], what: str) -> dict:
        last: dict = {}

        def matches() -> dict:
            nonlocal last
            last = self.status(name)
            return last if last and check(last) else {}
        return wait_for(matches, WAIT_SECONDS, f"{name}: {what}", POLL_SECONDS,
                        explain=lambda: f"status: {json.dumps(last, indent=1)[:3000]}")

    def prometheus_sum(self, selector: str) -> float:
        with PrometheusClient(self.prometheus.url) as prometheus:
            rows = prometheus.query(f"sum({selector})")
        return float(rows[0]["value"][1]) if rows else 0.0

    def ledger(self) -> LeaseLedger:
        data = self.cluster.get("configmap", LEDGER, "--namespace", NAMESPACE)["data"]
        return LeaseLedger.model_validate_json(data[kube.LEDGER_KEY])

    def gateway_metric(self, gateway: int, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.gateways[gateway].url}/metrics", timeout=10).text
        try:
            return metric_value(text, name, labels)
        except KeyError:
            return 0.0

    def published(self) -> BudgetDecisions:
        data = self.cluster.get("configmap", CONFIGMAP, "--namespace", NAMESPACE)["data"]
        return BudgetDecisions.model_validate_json(data[kube.DECISIONS_KEY])

    def event_reasons(self, name: str) -> set[str]:
        events = self.cluster.get("events", "--namespace", NAMESPACE, "--field-selector",
                                  f"involvedObject.kind={kube.KIND},involvedObject.name={name}")["items"]
        return {e["reason"] for e in events}


@pytest.fixture(scope="module")
def scene(release: Cluster, operator_kubeconfig: Path, tmp_path_factory) -> Iterator[Scene]:
    work = tmp_path_factory.mktemp("operator-scene")
    lease_port, lease_token_file = free_port(), work / "lease-token"
    gateway_env = {"LYNX_GATEWAY_BUDGETS_FILE": str(work / "budgets.json"),
                   "LYNX_GATEWAY_BUDGET_CONTROLLER_URL": f"http://127.0.0.1:{lease_port}",
                   "LYNX_GATEWAY_LEASE_TOKEN_FILE": str(lease_token_file)}
    with OtlpSink() as sink, pytest.MonkeyPatch.context() as environment, contextlib.ExitStack() as later:
        base_env = service_environment(built_models(), sink, work / "tenants.json")
        stack = start_stack(base_env, work, sink, {"gateway": gateway_env})
        # Registered first, so run last: the services and Prometheus (the one running then: the tests restart it).
        processes, scene = stack.processes(), []
        later.callback(lambda: stop_processes([*processes, *(made.prometheus for made in scene)]))
        # A second replica of the gateway: the spend Prometheus reports is the sum over both.
        second = start_service("gateway", {**base_env, **gateway_env, **stack.upstreams_environment()},
                               work / "gateway-2.log")
        processes.append(second)
        wait_ready([second], START_TIMEOUT_SECONDS)
        config = prometheus_config(load_config("prometheus.yml"), {"gateway": stack.gateway.url.removeprefix("http://")})
        config["global"]["scrape_interval"] = "1s"
        config["scrape_configs"][0]["static_configs"][0]["targets"].append(second.url.removeprefix("http://"))
        prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"), config,
                                      work / "prometheus")
        registry = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"]))
        running = Scene(release, operator_kubeconfig, [stack.gateway, second], prometheus, config,
                        {tenant: registry.add(tenant) for tenant in ("capped", "served")}, environment,
                        lease_port, lease_token_file, Path(base_env["LYNX_GATEWAY_TENANTS_FILE"]))
        scene.append(running)
        wait_ready([prometheus], START_TIMEOUT_SECONDS)
        copier = ConfigMapFile(release.kubeconfig, work / "budgets.json")
        copier.start()
        later.callback(copier.stopped.set)
        running.start_operator()
        later.callback(lambda: running.runner and running.stop_operator())
        # While the operator still runs, so that it takes its finalizers off.
        later.callback(release.kubectl, "delete", f"{kube.PLURAL}.{kube.GROUP}", "--all", "--namespace", NAMESPACE,
                       "--timeout=60s")
        yield running


def test_a_tenant_goes_warning_then_blocked_while_another_is_served(scene: Scene):
    served = BudgetSpec(tenant="served", daily_cap_eur=1.0)
    scene.cluster.kubectl("apply", "-f", "-", input=json.dumps(budget("served", served)))
    scene.wait_status("served", lambda s: s["state"] == "Ok", "its first decision")
    warm_up = scene.complete("served")
    assert warm_up.status_code == 200, warm_up.text

    first = scene.complete("capped")  # no budget yet: tenants without one are served
    assert first.status_code == 200, first.text
    costs = [first.json()["lynx"]["cost"]["total"]]
    # Scraped before the budget exists: the operator's first reading has it, and the leases start from it.
    wait_for(lambda: scene.prometheus_sum('lynx_tenant_cost_eur_total{tenant="capped"}') >= costs[0] * (1 - 1e-9),
             WAIT_SECONDS, "the first request's cost in Prometheus", POLL_SECONDS)
    zone = soonest_midnight_zone(datetime.now(UTC), at_least_seconds=30 * 60)
    # Requests cost alike, within a factor of two: each of them stays below the width of the Warning band.
    capped = BudgetSpec(tenant="capped", daily_cap_eur=5 * costs[0], timezone=zone, warning_percent=50)
    scene.cluster.kubectl("apply", "-f", "-", input=json.dumps(budget("capped", capped)))

    # The gateways admit only within their leases: the spend passes the cap by no more than what requests cost
    # beyond the worst case they reserved (a decoder slower than its estimate), and the tenant is Blocked once what is
    # left of the cap (the leases held count) cannot pay for the cheapest request. Once a short answer no longer fits,
    # the cheapest requests spend what is left.
    states, refused, beyond = [], False, 0.0
    for attempt in range(60):
        status = scene.wait_status("capped", lambda s: (s.get("spentEur") or 0) >= sum(costs) * (1 - 1e-9),
                                   f"the spend of {len(costs)} requests read from Prometheus")
        states.append(status["state"])
        if status["state"] == "Blocked":
            break
        response = scene.complete("capped", gateway=attempt % 2, cheapest=refused)
        costs.append(cost_told(response))  # a refusal after tokenizing is charged too
        assert response.status_code in (200, 429), response.text  # 429: no room in this gateway's lease
        refused = refused or response.status_code == 429
        if response.status_code == 200:
            lynx = response.json()["lynx"]
            beyond += max(lynx["cost"]["total"] - lynx["budget"]["reserved_eur"], 0.0)
    assert states[-1] == "Blocked" and "Warning" in states, (states, costs, capped.daily_cap_eur)
    assert sum(costs) <= capped.daily_cap_eur * (1 + 1e-9) + beyond
    assert status["spentEur"] == pytest.approx(sum(costs), rel=1e-9)  # Prometheus' sum over both gateways
    assert status["capEur"] == pytest.approx(capped.daily_cap_eur) and status["remainingEur"] == 0
    assert scene.published().tenants["capped"].state == "Blocked"

    for gateway in (0, 1):  # the gateways enforce what the operator published, not their own counts only
        refused = wait_for(lambda g=gateway: (r := scene.complete("capped", g)).status_code == 429
                           and r.json()["error"]["message"].startswith("Blocked") and r, WAIT_SECONDS, "a Blocked refusal",
                           POLL_SECONDS)
        assert refused.json()["error"]["code"] == "insufficient_quota"
    assert scene.complete("served", gateway=1).status_code == 200
    assert {"StateChanged"} <= scene.event_reasons("capped")
    # Both gateways spent the capped tenant's day through leases: the ledger the operator persisted before each
    # answer holds both, and no more confirmed than the clients were told.
    day = scene.ledger().day("capped", datetime.fromisoformat(status["dayStartedAt"]))
    assert day is not None and len(day.gateways.keys() - {BEFORE_LEASES}) == 2, scene.ledger()
    assert confirmed_eur(scene.ledger(), "capped", day.day_started_at) <= sum(costs) * (1 + 1e-9)
    assert all(scene.gateway_metric(g, "lynx_gateway_lease_renewals_total", outcome="granted") > 0 for g in (0, 1))
    assert scene.metric("lynx_budget_lease_requests_total", outcome="granted") > 0
    kinds = [entry["kind"] for entry in scene.status("capped")["history"]]
    assert kinds.count("state") >= 2, kinds


def test_without_prometheus_the_tenant_stays_blocked_and_the_condition_says_why(scene: Scene):
    scene.prometheus.stop()
    status = scene.wait_status("capped", lambda s: any(
        c["type"] == PROMETHEUS_REACHABLE and c["status"] == "False" for c in s["conditions"]), "the condition")
    condition = next(c for c in status["conditions"] if c["type"] == PROMETHEUS_REACHABLE)
    assert condition["reason"] == "Unreachable" and scene.prometheus.url.rsplit(":", 1)[1] in condition["message"]
    time.sleep(3)  # a few reconciliations without Prometheus
    assert scene.status("capped")["state"] == "Blocked" and scene.published().tenants["capped"].state == "Blocked"
    assert scene.complete("capped").status_code == 429
    assert "SpendUnavailable" in scene.event_reasons("capped")

    scene.start_prometheus()
    scene.wait_status("capped", lambda s: any(
        c["type"] == PROMETHEUS_REACHABLE and c["status"] == "True" for c in s["conditions"]), "spend read again")


def test_a_raise_unblocks_the_tenant_with_an_audit_entry_and_an_event(scene: Scene):
    spent = scene.status("capped")["spentEur"]
    cap = scene.resource("capped")["spec"]["dailyCapEUR"]
    amount = spent  # a whole cap of room again: a short answer fits its worst case (about twice its cost)
    result = subprocess.run(
        [sys.executable, "-m", "lynx.cli", "budget", "raise", "capped", "--amount", f"{amount:.10f}", "--hours", "3",
         "--reason", "end of quarter", "--by", "finance", "--kube", "--namespace", NAMESPACE],
        capture_output=True, text=True, env=scene.cluster.env)
    assert result.returncode == 0, result.stderr
    status = scene.wait_status("capped", lambda s: s["state"] != "Blocked", "unblocked by the raise")
    assert status["capEur"] == pytest.approx(cap + amount)
    added = [e for e in status["history"] if e["kind"] == "raise_added"]
    assert added and "finance" in added[-1]["message"] and "end of quarter" in added[-1]["message"]
    assert "RaiseAdded" in scene.event_reasons("capped")
    wait_for(lambda: scene.complete("capped").status_code == 200, WAIT_SECONDS, "the tenant served again", POLL_SECONDS)


def ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def test_the_consoles_pause_on_the_lease_port_is_the_clis_with_its_audit_entry_and_event(scene: Scene):
    """The operator's console (lynx_budget.console on the lease app) pauses a TenantBudget as `lynx budget pause
    --kube` does: the spec changes, the operator audits it, writes the Event, publishes Paused, the gateways refuse."""
    served = BudgetSpec(tenant="served", daily_cap_eur=1.0)  # as the first test made it (alone: made here)
    scene.cluster.kubectl("apply", "-f", "-", input=json.dumps(budget("served", served)))
    scene.wait_status("served", lambda s: s["state"] == "Ok", "its decision")
    with httpx.Client(base_url=f"http://127.0.0.1:{scene.lease_port}", timeout=60) as console:
        wait_for(lambda: ready(console), WAIT_SECONDS, "the operator's lease app (and console) ready", POLL_SECONDS)

        def form_token(path: str) -> str:
            return re.search(r'name="csrf" value="([^"]+)"', console.get(path).text).group(1)

        signed_in = console.post("/console/signin", data={"csrf": form_token("/console/signin"),
                                                          "token": scene.console_token_file.read_text().strip()})
        assert signed_in.status_code == 303, signed_in.text
        paused = console.post("/console/tenants/served/pause", data={"csrf": form_token("/console/tenants/served")})
        assert paused.status_code == 303, paused.text
        assert scene.resource("served")["spec"]["paused"] is True
        status = scene.wait_status("served", lambda s: s["state"] == "Paused", "Paused by the console")
        assert any(e["kind"] == "paused" for e in status["history"])
        assert "Paused" in scene.event_reasons("served")
        wait_for(lambda: scene.complete("served").status_code == 429, WAIT_SECONDS, "the paused tenant refused",
                 POLL_SECONDS)
        page = console.get("/console/tenants/served").text
        assert 'id="state" class="state-Paused">Paused' in page and "Paused by an admin" in page
        resumed = console.post("/console/tenants/served/resume", data={"csrf": form_token("/console/tenants/served")})
        assert resumed.status_code == 303, resumed.text
    scene.wait_status("served", lambda s: s["state"] == "Ok", "resumed by the console")
    wait_for(lambda: scene.complete("served").status_code == 200, WAIT_SECONDS, "the tenant served again", POLL_SECONDS)


def test_the_tenants_midnight_resets_it(scene: Scene):
    # Spend the raise, then move the operator's clock past the tenant's midnight (a restart, as a new day would
    # find it: the last decision comes from the status, not from memory).
    answers: list = []
    for attempt in range(80):
        if scene.status("capped")["state"] == "Blocked":
            break
        response = scene.complete("capped", gateway=attempt % 2, cheapest=429 in answers)
        answers.append(response.status_code)
        time.sleep(0.25)
    blocked = scene.wait_status("capped", lambda s: s["state"] == "Blocked", f"Blocked again after {answers}")
    epoch = scene.ledger().epoch
    scene.stop_operator()
    resets_at = datetime.fromisoformat(blocked["resetsAt"])
    scene.start_operator(clock_offset_seconds=(resets_at - datetime.now(UTC)).total_seconds() + 5)
    status = scene.wait_status("capped", lambda s: s["dayStartedAt"] == blocked["resetsAt"], "the next day")
    assert status["state"] == "Ok" and status["spentEur"] == 0
    assert any(e["kind"] == "day_rollover" for e in status["history"]) and "DayRollover" in scene.event_reasons("capped")
    assert scene.published().tenants["capped"].state == "Ok"
    wait_for(lambda: scene.complete("capped").status_code == 200, WAIT_SECONDS, "the tenant served on its new day",
             POLL_SECONDS)
    assert scene.ledger().epoch == epoch  # the restarted operator continued the ledger it had persisted


def test_kubectl_get_shows_tenant_cap_spent_state_and_age(scene: Scene):
    table = scene.cluster.kubectl("get", kube.PLURAL, "--namespace", NAMESPACE).stdout.splitlines()
    assert table[0].split() == ["NAME", "TENANT", "CAP", "SPENT", "STATE", "AGE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["served"][1] == "served" and rows["served"][4] == "Ok"
    status = scene.status("served")
    assert float(rows["served"][2]) == pytest.approx(status["capEur"])
    assert float(rows["served"][3]) == pytest.approx(status["spentEur"], rel=1e-3)


def test_helm_upgrade_renders_back_the_published_decisions(scene: Scene, chart: Path):
    live = scene.cluster.get("configmap", CONFIGMAP, "--namespace", NAMESPACE)["data"][kube.DECISIONS_KEY]
    assert json.loads(live)["source"] == "operator"
    # What an upgrade would apply, rendered against the live cluster (lookup works in a server-side dry run).
    rendered = scene.cluster.helm("upgrade", RELEASE, str(chart), "--namespace", NAMESPACE, "--reuse-values",
                                  "--dry-run=server").stdout
    manifest = {(d["kind"], d["metadata"]["name"]): d
                for d in yaml.safe_load_all(rendered.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0]) if d}
    kept = json.loads(manifest["ConfigMap", CONFIGMAP]["data"][kube.DECISIONS_KEY])  # not the chart's empty document
    assert kept["source"] == "operator" and kept["tenants"].keys() == json.loads(live)["tenants"].keys()
    # The lease ledger and the gateways' token survive an upgrade as well: the ledger's ConfigMap is rendered without
    # data (the three-way merge leaves the operator's writes alone), the token is rendered back.
    assert "data" not in manifest["ConfigMap", LEDGER] and scene.ledger().issued > 0
    before = scene.ledger()
    scene.cluster.helm("upgrade", RELEASE, str(chart), "--namespace", NAMESPACE, "--reuse-values")
    after = scene.ledger()  # the operator's writes meanwhile only add to it
    assert after.epoch == before.epoch and after.issued >= before.issued
    token = f"{RELEASE}-lease-token"
    assert manifest["Secret", token]["data"] == scene.cluster.get("secret", token, "--namespace", NAMESPACE)["data"]


def test_the_operator_exports_what_it_decided(scene: Scene):
    status = scene.status("capped")
    assert scene.metric("lynx_budget_state", tenant="capped", state=status["state"]) == 1
    assert scene.metric("lynx_budget_state", tenant="capped", state="Blocked") == 0
    assert scene.metric("lynx_budget_cap_eur", tenant="capped") == pytest.approx(status["capEur"])
    assert scene.metric("lynx_budget_spent_eur", tenant="served") is not None
    assert scene.metric("lynx_budget_spend_last_read_timestamp_seconds") > time.time() - 60
    assert scene.metric("lynx_budget_spend_read_failures_total") >= 1  # the reads while Prometheus was stopped


def test_deleting_a_tenant_budget_completes_and_unpublishes_it(scene: Scene):
    scene.cluster.kubectl("delete", f"{kube.PLURAL}.{kube.GROUP}", "capped", "--namespace", NAMESPACE, "--timeout=30s")
    wait_for(lambda: "capped" not in scene.published().tenants, WAIT_SECONDS, "the decision gone from the ConfigMap",
             POLL_SECONDS)
    assert "served" in scene.published().tenants
    assert scene.metric("lynx_budget_cap_eur", tenant="capped") is None
