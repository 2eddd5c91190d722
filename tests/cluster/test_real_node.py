"""The umbrella chart on a real Kubernetes node (tests/cluster/realnode.py): real containers from the
images built here, real probes, kube-proxy Services, CoreDNS, `kubectl port-forward`, the Prometheus
operator creating Prometheus, Jaeger (the chart's trace store) receiving the services' spans through the collector,
the budget operator in-cluster.

The tests run in order on one release (module order); each states what it leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from lynx.auditor.tracestore import StoredSpan, TraceStoreClient
from lynx.telemetry.prometheus_api import PrometheusClient

from ..integration.conftest import MODEL_NAME, wait_for
from .conftest import NODE_NAMESPACE, NODE_RELEASE, REPO
from .realnode import DOCKER
from .testbed import Cluster, tool

pytestmark = pytest.mark.integration

# tests/cluster/node-values.yaml gives tenant `node-test` the SHA-256 of this key.
NODE_TEST_KEY = "lynx-node-test-key-0001"
TENANT = "node-test"
LYNX_SERVICES = ("gateway", "tokenizer", "retriever", "decoder")
# Pods of the release: lynx's, the budget operator, the collector and Jaeger, and what kube-prometheus-stack runs.
EXPECTED_PODS = ("gateway", "tokenizer", "retriever", "decoder", "auditor", "operator",
                 "kube-prometheus-stack-operator", "kube-state-metrics", "prometheus-lynx", "alertmanager-lynx",
                 "jaeger", "collector")
# The readiness path of the chart's pods: the lynx services' /readyz (the collector's health_check answers any
# path), Jaeger's healthcheckv2 /status.
READINESS_PATHS = {"jaeger": "/status"}
SETTLE_SECONDS = 300
# The chaos script's scenarios run on the node: the decoder killed, every lynx pod restarted. The others run on the
# local target (tests/integration/test_chaos.py).
CHAOS_SCENARIOS = (1, 2)
# Scenario 2 restarts every pod, the gateways one after the other, while the others serve.
CHAOS_GATEWAYS = 2


@contextlib.contextmanager
def port_forward(cluster: Cluster, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward TARGET :PORT`; yields http://127.0.0.1:<local port>."""
    process = subprocess.Popen(
        [tool("kubectl"), "--kubeconfig", str(cluster.kubeconfig), "--namespace", NODE_NAMESPACE, "port-forward",
         "--address", "127.0.0.1", target, f":{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+) ->", line)
        if not found:
            raise AssertionError(f"port-forward {target} failed: {line}{process.stderr.read()}")
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def pods(cluster: Cluster) -> list[dict]:
    return cluster.get("pods", "--namespace", NODE_NAMESPACE)["items"]


def ready(pod: dict) -> bool:
    conditions = pod["status"].get("conditions", [])
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def component_pods(cluster: Cluster, component: str, label: str = "app.kubernetes.io/component") -> list[dict]:
    """The pods of a component, by the chart's label (the upstream charts name theirs app.kubernetes.io/name)."""
    return [p for p in pods(cluster)
            if p["metadata"].get("labels", {}).get(label) == component and not p["metadata"].get("deletionTimestamp")]


def release_state(cluster: Cluster, node) -> str:
    """What a failure message needs: the node's conditions and taints, the pods, the endpoints, the gateway's,
    the decoder's and kube-proxy's last logs."""
    parts = [node.log_tail("kube-proxy", 2000),
             cluster.kubectl("get", "nodes", "-o", "custom-columns=NAME:.metadata.name,TAINTS:.spec.taints,"
                             "CONDITIONS:.status.conditions[*].type,STATUS:.status.conditions[*].status",
                             check=False).stdout,
             cluster.kubectl("get", "pods,endpointslices", "--namespace", NODE_NAMESPACE, "-o", "wide",
                             check=False).stdout]
    for component in ("gateway", "decoder"):
        parts.append(cluster.kubectl("logs", "--namespace", NODE_NAMESPACE, "--tail", "15",
                                     f"deployment/{NODE_RELEASE}-{component}", check=False).stdout)
    return "\n".join(parts)


def prometheus_query(url: str, query: str) -> list[dict]:
    with PrometheusClient(url) as prometheus:
        return prometheus.query(query)


def complete(base_url: str, max_tokens: int = 8) -> tuple[dict, str]:
    """One completion with the OpenAI client: (the JSON body, the trace id header)."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=NODE_TEST_KEY, timeout=120, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL_NAME, max_tokens=max_tokens, temperature=0,
        messages=[{"role": "user", "content": "What is a Python list comprehension?"}])
    completion = raw.parse()
    assert completion.choices[0].message.content and completion.usage.completion_tokens > 0
    return raw.http_response.json(), raw.headers["x-lynx-trace-id"]


def orphans(spans: list[StoredSpan]) -> list[StoredSpan]:
    """Spans naming a parent that is not in their trace, counted here apart from the auditor's own code."""
    present = {s.span_id for s in spans}
    return [s for s in spans if s.parent_span_id and s.parent_span_id not in present]


def whole_trace(store: TraceStoreClient, trace_id: str) -> list[StoredSpan] | None:
    """The trace's spans once it is whole (spans reach Jaeger in batches): every lynx service has spans in it and
    every parent named has arrived; None until then."""
    spans = store.trace(trace_id)
    whole = {f"lynx-{s}" for s in LYNX_SERVICES} <= {s.service for s in spans} and not orphans(spans)
    return spans if whole else None


def test_every_pod_runs_ready_through_its_probes_without_restarts(release_on_node: Cluster):
    """helm --wait covered the chart's own workloads; Prometheus and Alertmanager are created by the
    Prometheus operator afterwards, so they are polled for."""
    def all_ready() -> list[dict] | None:
        current = pods(release_on_node)
        names = [p["metadata"]["name"] for p in current]
        missing = [e for e in EXPECTED_PODS if not any(e in n for n in names)]
        return current if not missing and all(ready(p) for p in current) else None

    current = wait_for(all_ready, SETTLE_SECONDS, "every pod of the release Running and Ready", interval=2)
    restarts = {p["metadata"]["name"]: s["restartCount"] for p in current for s in p["status"]["containerStatuses"]
                if s["restartCount"]}
    assert not restarts, restarts
    for pod in current:
        labels = pod["metadata"]["labels"]
        if labels.get("app.kubernetes.io/name") == "lynx":
            container = pod["spec"]["containers"][0]
            expected = READINESS_PATHS.get(labels["app.kubernetes.io/component"], "/readyz")
            assert container["readinessProbe"]["httpGet"]["path"] == expected, pod["metadata"]["name"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Ready means /readyz answered 200: the tokenizer, retriever and decoder answer it only with their
    # models loaded from the image's /models (the completion below uses them).


def test_prometheus_from_the_operator_scrapes_every_lynx_service_monitor(release_on_node: Cluster):
    monitors = [m["metadata"]["name"] for m in release_on_node.get(
        "servicemonitors.monitoring.coreos.com", "--namespace", NODE_NAMESPACE,
        "-l", "app.kubernetes.io/name=lynx")["items"]]
    assert {f"{NODE_RELEASE}-{s}" for s in LYNX_SERVICES} <= set(monitors), monitors
    with port_forward(release_on_node, "svc/prometheus-operated", 9090) as prometheus:
        def all_up() -> dict | None:
            with PrometheusClient(prometheus) as client:
                targets = client.active_targets()
            health = {}
            for target in targets:
                pool = target["scrapePool"]
                for monitor in monitors:
                    if pool == f"serviceMonitor/{NODE_NAMESPACE}/{monitor}/0":
                        health[monitor] = target["health"]
            return health if set(health) == set(monitors) and set(health.values()) == {"up"} else None

        wait_for(all_up, SETTLE_SECONDS, f"the targets of {monitors} up in Prometheus", interval=2)
        with PrometheusClient(prometheus) as client:
            version = client.status("buildinfo")["version"]
        assert version == "3.14.0"


def test_completion_through_port_forward_is_traced_in_jaeger_and_costed_in_prometheus(release_on_node: Cluster):
    """A completion through `kubectl port-forward`; its trace read back whole from the in-cluster Jaeger's query API
    (spans of the four services, one root, no orphan, the request span's cost the answer's), then again from a new
    Jaeger pod on the same claim: the traces outlive the pod."""
    with port_forward(release_on_node, f"svc/{NODE_RELEASE}-gateway", 8080) as gateway:
        body, trace_id = complete(gateway)
    cost = body["lynx"]["cost"]["total"]
    assert cost > 0

    def read_whole(description: str) -> list[StoredSpan]:
        with port_forward(release_on_node, f"svc/{NODE_RELEASE}-jaeger", 16686) as jaeger_url:
            store = TraceStoreClient(jaeger_url, kind="jaeger")
            try:
                return wait_for(lambda: whole_trace(store, trace_id), 120, description, interval=2)
            finally:
                store.close()

    spans = read_whole(f"trace {trace_id} whole in Jaeger: every service, no orphan")
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    charged = [s.attributes["lynx.cost.eur"] for s in spans if "lynx.cost.eur" in s.attributes]
    assert charged and charged[0] == pytest.approx(cost, rel=1e-9)

    (old,) = component_pods(release_on_node, "jaeger")
    deployment = release_on_node.get("deployment", f"{NODE_RELEASE}-jaeger", "--namespace", NODE_NAMESPACE)
    assert deployment["spec"]["strategy"]["type"] == "Recreate" and deployment["spec"]["replicas"] == 1
    release_on_node.kubectl("delete", "pod", "--namespace", NODE_NAMESPACE, old["metadata"]["name"])
    wait_for(lambda: [p for p in component_pods(release_on_node, "jaeger")
                      if p["metadata"]["uid"] != old["metadata"]["uid"] and ready(p)],
             SETTLE_SECONDS, "a new Jaeger pod Ready", interval=1)
    again = read_whole(f"trace {trace_id} in the new Jaeger pod")
    assert sorted(s.span_id for s in again) == sorted(s.span_id for s in spans)

    with port_forward(release_on_node, "svc/prometheus-operated", 9090) as prometheus:
        query = f'sum(lynx_tenant_cost_eur_total{{tenant="{TENANT}"}})'
        series = wait_for(lambda: prometheus_query(prometheus, query), 120, f"{query} in Prometheus", interval=2)
        # This is the tenant's only request so far: the counter is its cost.
        assert float(series[0]["value"][1]) == pytest.approx(cost, rel=1e-9)


def test_helm_test_passes(release_on_node: Cluster):
    result = release_on_node.helm("test", NODE_RELEASE, "--namespace", NODE_NAMESPACE, "--timeout", "5m",
                                  check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Phase:          Succeeded" in result.stdout


def test_budget_operator_runs_in_cluster_with_the_charts_service_account(release_on_node: Cluster):
    operator = wait_for(lambda: [p for p in component_pods(release_on_node, "operator") if ready(p)], 120,
                        "the budget operator Ready")[0]
    assert operator["spec"]["serviceAccountName"] == f"{NODE_RELEASE}-operator"
    budget = {"apiVersion": "budgets.lynx.dev/v1", "kind": "TenantBudget",
              "metadata": {"name": TENANT, "namespace": NODE_NAMESPACE},
              "spec": {"tenant": TENANT, "dailyCapEUR": 100.0}}
    release_on_node.kubectl("apply", "-f", "-", input=json.dumps(budget))

    def reported() -> dict | None:
        status = release_on_node.get("tenantbudgets.budgets.lynx.dev", TENANT,
                                     "--namespace", NODE_NAMESPACE).get("status", {})
        return status if status.get("state") == "Ok" and status.get("spentEur", 0) > 0 else None

    # The spend the operator read from the in-cluster Prometheus includes the earlier completion.
    status = wait_for(reported, 120, "the operator's status with the tenant's spend", interval=2)
    assert status["capEur"] == pytest.approx(100.0)
    decisions = release_on_node.get("configmap", f"{NODE_RELEASE}-budgets", "--namespace", NODE_NAMESPACE)
    assert TENANT in json.dumps(decisions["data"])


def test_a_service_without_endpoints_refuses_pods_instead_of_leaving_the_node(release_on_node: Cluster):
    """A Service with no ready endpoint refuses a pod's connection at once (the decoder's Service is one
    while its pod is replaced): the packet is not routed off the node to whatever answers there."""
    manifest = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lynx-no-endpoints"},
                "spec": {"ports": [{"port": 8083}], "selector": {"app.kubernetes.io/component": "nothing"}}}
    release_on_node.kubectl("apply", "--namespace", NODE_NAMESPACE, "-f", "-", input=json.dumps(manifest))
    try:
        address = release_on_node.get("service", "lynx-no-endpoints", "--namespace", NODE_NAMESPACE)["spec"]["clusterIP"]
        probe = ("import socket\n"
                 "try:\n"
                 f"    socket.create_connection(('{address}', 8083), timeout=10); print('connected')\n"
                 "except OSError as error:\n"
                 "    print(type(error).__name__)\n")
        result = release_on_node.kubectl("exec", "--namespace", NODE_NAMESPACE, f"deployment/{NODE_RELEASE}-gateway",
                                          "--", "python", "-c", probe)
        assert result.stdout.strip() == "ConnectionRefusedError", result.stdout + result.stderr
    finally:
        release_on_node.kubectl("delete", "service", "lynx-no-endpoints", "--namespace", NODE_NAMESPACE, check=False)


def test_deleted_decoder_pod_is_replaced_and_the_gateway_recovers(release_on_node: Cluster, real_node):
    old = component_pods(release_on_node, "decoder")[0]
    release_on_node.kubectl("delete", "pod", "--namespace", NODE_NAMESPACE, old["metadata"]["name"], "--wait=false")
    replacement = wait_for(
        lambda: [p for p in component_pods(release_on_node, "decoder")
                 if p["metadata"]["uid"] != old["metadata"]["uid"] and ready(p)],
        SETTLE_SECONDS, "a new decoder pod Ready", interval=1)[0]
    assert replacement["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    with port_forward(release_on_node, f"svc/{NODE_RELEASE}-gateway", 8080) as gateway:
        wait_for(lambda: httpx.get(f"{gateway}/readyz", timeout=5).status_code == 200, SETTLE_SECONDS,
                 "the gateway ready again", interval=1, explain=lambda: release_state(release_on_node, real_node))
        body, _ = complete(gateway)
    assert body["lynx"]["cost"]["total"] > 0


def test_rolling_restart_of_the_gateway_loses_no_completed_request(release_on_node: Cluster, real_node):
    """Requests go to the gateway's ClusterIP through kube-proxy (a port-forward would be bound to one
    pod) while `kubectl rollout restart` replaces the pod: every request gets its completion."""
    service = release_on_node.get("service", f"{NODE_RELEASE}-gateway", "--namespace", NODE_NAMESPACE)
    base = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    before = {p["metadata"]["name"] for p in component_pods(release_on_node, "gateway")}
    outcomes: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                complete(base, max_tokens=4)
                outcomes.append("ok")
            except Exception as error:  # every failure is recorded and fails the test below
                outcomes.append(f"{type(error).__name__}: {error}")

    workers = [threading.Thread(target=client) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: outcomes.count("ok") >= 2, 120, "completions through the Service before the restart")
        release_on_node.kubectl("rollout", "restart", "--namespace", NODE_NAMESPACE,
                                f"deployment/{NODE_RELEASE}-gateway")
        release_on_node.kubectl("rollout", "status", "--namespace", NODE_NAMESPACE,
                                f"deployment/{NODE_RELEASE}-gateway", "--timeout=5m")
        # Until the old pod is gone, not only unready: its preStop sleep and drain are part of the test.
        wait_for(lambda: not before & {p["metadata"]["name"] for p in pods(release_on_node)}, SETTLE_SECONDS,
                 "the old gateway pod gone", interval=1)
        served_after = outcomes.count("ok")
        wait_for(lambda: outcomes.count("ok") >= served_after + 2, 120, "completions served by the new pod")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=180)
    failures = [o for o in outcomes if o != "ok"]
    assert not failures, f"{failures}\n{release_state(release_on_node, real_node)}"
    assert len(outcomes) >= 6


def test_skaffold_run_builds_every_image_and_deploys_them_on_the_node(release_on_node: Cluster, real_node,
                                                                     tmp_path: Path):
    """`skaffold run -p dev,testbed`: skaffold builds the seven images with the local Docker (its
    inputDigest tags), loads them into the node, and upgrades the release to them. Last in the module:
    the release runs skaffold's images afterwards."""
    shims = tmp_path / "bin"
    shims.mkdir()
    # skaffold's useBuildkit runs `docker build … --load`. Debian's docker client builds with BuildKit
    # without the buildx plugin, but lacks --load, which only means "into the daemon's images", where
    # its builds go anyway: the shim drops it.
    (shims / "docker").write_text(
        f'#!/bin/sh\nfor a; do shift; [ "$a" = --load ] || set -- "$@" "$a"; done\nexec {DOCKER} "$@"\n')
    (shims / "docker").chmod(0o755)
    # skaffold runs `helm` from PATH: the one the chart tests use.
    path = os.pathsep.join([str(shims), str(Path(tool("helm")).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "KUBECONFIG": str(release_on_node.kubeconfig),
           "LYNX_NODE_CONTAINERD": str(real_node.socket), "SKAFFOLD_UPDATE_CHECK": "false",
           "SKAFFOLD_INTERACTIVE": "false"}
    # Without skaffold's artifact cache: an image it finds built is not built again, and its post-build
    # hook (loading it into the node) would not run for a fresh node.
    result = subprocess.run([tool("skaffold"), "run", "--profile", "dev,testbed", "--status-check=true",
                             "--cache-artifacts=false"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    # " - lynx-gateway -> lynx-gateway:<tag>": what skaffold built (inputDigest tags; the three images
    # built FROM the models image fall back to `latest`: skaffold cannot read it to digest it).
    built = dict(re.findall(r"^ - (lynx-[a-z]+) -> (lynx-[a-z]+:\S+)$", result.stdout, re.M))
    assert set(built) == {f"lynx-{c}" for c in (*LYNX_SERVICES, "auditor", "operator", "models")}, result.stdout

    def on_skaffold_images() -> dict[str, str] | None:
        running = {}
        for component in (*LYNX_SERVICES, "auditor", "operator"):
            for pod in component_pods(release_on_node, component):
                image = pod["spec"]["containers"][0]["image"]
                if not ready(pod) or image != built[f"lynx-{component}"]:
                    return None
                running[component] = image
        return running

    wait_for(on_skaffold_images, SETTLE_SECONDS, "every lynx pod Ready on the images skaffold built", interval=2)
    history = json.loads(release_on_node.helm("history", NODE_RELEASE, "--namespace", NODE_NAMESPACE,
                                              "--output", "json").stdout)
    assert history[-1]["status"] == "deployed" and len(history) >= 2


def test_chaos_script_kills_and_restarts_pods_and_every_check_holds(release_on_node: Cluster, real_node,
                                                                    tmp_path: Path):
    """The chaos script's Kubernetes target on the real node, with two gateways: scenario 1 deletes the decoder's
    pod with grace 0 mid-load, scenario 2 deletes every lynx pod in turn (gracefully, streams open). The pods are
    really replaced (checked here, apart from the script), and the script's checks hold: every request answered,
    every trace in the chart's Jaeger without orphans, the costs returned = the cost counter's increase (a stopped
    gateway's last charges included: they reach Prometheus in its final scrape), no identity violation. Leaves the
    gateway at two replicas."""

    def cluster_url(service: str, port: int) -> str:
        """A Service's ClusterIP, which kube-proxy serves on the node: it outlives the pods behind it."""
        address = release_on_node.get("service", service, "--namespace", NODE_NAMESPACE)["spec"]["clusterIP"]
        return f"http://{address}:{port}"

    # A pod being deleted stays a scrape target only with EndpointSlice discovery (the chart's values): with
    # Endpoints (the Prometheus operator's default) it leaves the targets at once, and what the gateway charged
    # while it drained is never scraped.
    prometheus_url = cluster_url(f"{NODE_RELEASE}-kube-prometheus-stack-prometheus", 9090)
    prometheus = release_on_node.get("prometheus", f"{NODE_RELEASE}-kube-prometheus-stack-prometheus",
                                     "--namespace", NODE_NAMESPACE)
    assert prometheus["spec"].get("serviceDiscoveryRole") == "EndpointSlice"
    # And a CPU request: a BestEffort Prometheus on this busy node missed the last scrapes of stopping gateways.
    assert prometheus["spec"]["resources"]["requests"]["cpu"]
    release_on_node.kubectl("scale", "deployment", f"{NODE_RELEASE}-gateway", "--replicas", str(CHAOS_GATEWAYS),
                            "--namespace", NODE_NAMESPACE)
    wait_for(lambda: len([p for p in component_pods(release_on_node, "gateway") if ready(p)]) == CHAOS_GATEWAYS,
             SETTLE_SECONDS, f"{CHAOS_GATEWAYS} gateways ready", interval=2)

    def discovers_endpointslices() -> bool:
        with PrometheusClient(prometheus_url) as client:
            config = client.status("config")["yaml"]
            targets = client.active_targets()
        gateway = [t for t in targets if t["labels"].get("service") == f"{NODE_RELEASE}-gateway"]
        return ("role: endpointslice" in config and len(gateway) == CHAOS_GATEWAYS
                and all(t["health"] == "up" for t in gateway))

    wait_for(discovers_endpointslices, SETTLE_SECONDS, "Prometheus discovering its targets from EndpointSlices",
             interval=2)
    decoders_before = {p["metadata"]["uid"] for p in component_pods(release_on_node, "decoder")}
    records = tmp_path / "records.jsonl"
    result = subprocess.run([
        sys.executable, str(REPO / "scripts" / "chaos.py"), "--target", "kubernetes",
        "--kubeconfig", str(release_on_node.kubeconfig), "--namespace", NODE_NAMESPACE, "--release", NODE_RELEASE,
        "--gateway-url", cluster_url(f"{NODE_RELEASE}-gateway", 8080),
        "--trace-store-url", cluster_url(f"{NODE_RELEASE}-jaeger", 16686),
        "--prometheus-url", prometheus_url,
        "--key", NODE_TEST_KEY, *(arg for number in CHAOS_SCENARIOS for arg in ("--scenario", str(number))),
        "--lead", "10", "--tail", "10",
        "--concurrency", "2", "--max-tokens", "16", "--records", str(records)],
        capture_output=True, text=True, timeout=2400)
    print(result.stdout, result.stderr[-3000:], sep="\n")
    assert result.returncode == 0, (f"{result.stdout[-8000:]}\n{result.stderr[-3000:]}\n"
                                    f"{release_state(release_on_node, real_node)}")
    for number in CHAOS_SCENARIOS:
        assert f"Scenario {number}:" in result.stdout and "FAILED" not in result.stdout
    # Scenario 1 deleted the decoder: a new pod, Ready.
    decoders_now = component_pods(release_on_node, "decoder")
    assert decoders_now and all(ready(p) and p["metadata"]["uid"] not in decoders_before for p in decoders_now)
    # Read apart from the script: scenario 2's longest stream, open while every lynx pod was restarted, is whole in
    # Jaeger with spans of every service. Not one of scenario 1's: a SIGKILLed decoder loses the spans it had not yet
    # exported, so a trace it served may lack them without having an orphan.
    sent = [json.loads(line) for line in records.read_text().splitlines()]
    streams = [r for r in sent if r["scenario"] == 2 and r["stream"] and r["outcome"] == "ok" and r["trace_id"]]
    store = TraceStoreClient(cluster_url(f"{NODE_RELEASE}-jaeger", 16686), kind="jaeger")
    try:
        assert whole_trace(store, max(streams, key=lambda r: r["latency_s"])["trace_id"])
    finally:
        store.close()
